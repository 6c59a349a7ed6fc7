"""Per-column drift verdicts on the full data, with Evidently's own statistical tests.

Evidently's DataDriftPreset picks a test per column (reference > 1000 rows: normed Wasserstein
distance for numeric columns, Jensen-Shannon distance for categorical ones and numeric columns
with <= 5 values; smaller references: KS, chi-squared or Z tests) and then computes each column
several times together with histograms and correlation matrices for its widgets. Here the same
test is chosen by Evidently's `get_stattest` and run once per column on all rows it is given
(NaN and inf dropped first, as Evidently does), so the verdicts are the preset's verdicts on
those rows at a fraction of the cost. For captured traffic those rows are a seeded random
sample of the capture lines (`monitor.decode_rows`): the distances (normed Wasserstein,
Jensen-Shannon) on ~100k rows are within a few thousandths of their full-data values, so the
verdicts equal the full-data ones unless a score sits that close to its threshold
(`bench/bench_monitor.py` checks this against the preset on all rows). The visual report is
built on a smaller sample (see `report.py`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

PREDICTION_COLUMN = "prediction"


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    kind: str  # "num" or "cat"
    method: str
    score: float
    threshold: float
    drifted: bool


@dataclass(frozen=True)
class DriftSummary:
    columns: tuple[ColumnDrift, ...]
    prediction: ColumnDrift | None

    @property
    def drifted_columns(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted]

    @property
    def share(self) -> float:
        return len(self.drifted_columns) / len(self.columns) if self.columns else 0.0

    def scores(self) -> dict[str, float]:
        return {c.column: c.score for c in self.columns}


def _clean(series: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(series):
        return series.replace([-np.inf, np.inf], np.nan).dropna()
    return series.dropna()


def warm_up() -> None:
    """Import Evidently's stattests (most of the cost of the first test, about 6-10 s here)."""
    from evidently.legacy.calculations.stattests.registry import get_stattest  # noqa: F401


def column_drift(reference: pd.Series, current: pd.Series, kind: str,
                 name: str | None = None) -> ColumnDrift:  # fmt: skip
    """Evidently's default test for this column type and size, computed once on all rows."""
    from evidently.legacy.calculations.stattests.registry import get_stattest
    from evidently.legacy.core import ColumnType

    column_type = ColumnType.Numerical if kind == "num" else ColumnType.Categorical
    ref, cur = _clean(reference), _clean(current)
    name = name or str(reference.name)
    if ref.empty or cur.empty:
        side = "reference" if ref.empty else "current"
        raise ValueError(f"column '{name}' has no values in the {side} data")
    if kind == "cat":
        ref, cur = ref.astype(str), cur.astype(str)
    test = get_stattest(ref, cur, column_type, None)
    result = test(ref, cur, column_type, None)
    return ColumnDrift(name, kind, test.name, float(result.drift_score),
                       float(result.actual_threshold), bool(result.drifted))  # fmt: skip


def effect_size(reference: np.ndarray, current: np.ndarray, kind: str, threshold: float,
                name: str = PREDICTION_COLUMN, seed: int = 0) -> ColumnDrift:  # fmt: skip
    """How far a distribution moved, as an effect size that does not grow with the row count
    (a p-value flags 5% of calm windows by construction, more with many rows).

    Numbers: Wasserstein distance divided by the reference's standard deviation (0.1 = the
    mass moved a tenth of a spread on average). Categories: Jensen-Shannon distance (base 2,
    in [0, 1]) between the category frequencies. It counts as moved above `threshold` and
    above the noise floor: the 99th percentile of the same distance between two samples of
    the reference of these sizes (a reference of 60 rows moves by 0.2 on its own).
    """
    ref, cur = _clean(pd.Series(reference)), _clean(pd.Series(current))
    if ref.empty or cur.empty:
        raise ValueError(f"'{name}' has no values in the {'reference' if ref.empty else 'current'}"
                         " data")
    if kind == "num":
        values = ref.to_numpy(float)
        spread = float(values.std()) or 1.0
        score = _wasserstein(values, cur.to_numpy(float)) / spread
        method = "wasserstein_normed"
        rng = np.random.default_rng(seed)
        noise = [_wasserstein(rng.choice(values, len(values)),
                              rng.choice(values, min(len(cur), 20_000))) / spread
                 for _ in range(NOISE_DRAWS)]  # fmt: skip
    else:
        codes, ref_codes = np.unique(ref.astype(str).to_numpy(), return_inverse=True)
        cur_codes = pd.Categorical(cur.astype(str), categories=codes).codes
        unseen = int((cur_codes < 0).sum())
        p = np.bincount(ref_codes, minlength=len(codes)).astype(float)
        q = np.r_[np.bincount(cur_codes[cur_codes >= 0], minlength=len(codes)), unseen]
        score = _js(np.r_[p, 0.0], q.astype(float))
        method = "jensenshannon"
        rng = np.random.default_rng(seed)
        share = p / p.sum()
        noise = [_js(np.r_[rng.multinomial(len(ref_codes), share), 0.0],
                     np.r_[rng.multinomial(len(cur_codes), share), 0.0])
                 for _ in range(NOISE_DRAWS)]  # fmt: skip
    floor = max(threshold, float(np.quantile(noise, 0.99)))
    return ColumnDrift(name, kind, method, score, round(floor, 4), score > floor)


NOISE_DRAWS = 100


def _wasserstein(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import wasserstein_distance

    return float(wasserstein_distance(a, b))


def _js(p: np.ndarray, q: np.ndarray) -> float:
    from scipy.spatial.distance import jensenshannon

    return float(jensenshannon(p / p.sum(), q / q.sum(), base=2))


def dataset_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: Sequence[str],
    categorical: Iterable[str],
) -> tuple[ColumnDrift, ...]:
    """One verdict per feature column, in the model's column order."""
    cats = set(categorical)
    return tuple(column_drift(reference[c], current[c], "cat" if c in cats else "num", c)
                 for c in columns)  # fmt: skip
