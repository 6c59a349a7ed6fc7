"""Is the champion doing worse than it should? Its metrics on the window against their
expected level, with the labels (realised) or without them (estimated, `estimate.py`).

The expected level of a metric is the champion's value on its own holdout: the most recent,
untouched rows of its training window, so a season inside that window is part of what is
expected. A *drop* is signed so that positive is worse whatever the metric's direction, and
is absolute for bounded metrics (roc_auc, accuracy, recall...) and relative to the expected
level for error metrics (rmse, mae, mape, log_loss), so one tolerance reads the same on
every table. With labels, a drop is harm when even its one-sided lower confidence bound
exceeds the tolerance: window and holdout are both resampled (each is a finite sample), so a
drop must outweigh the noise of both before it counts. How many rows that takes follows from
the tolerance: at roc_auc 0.03, a day of ~1,000 flights is as noisy as the tolerance itself,
a week of ~5,000 is not (bench/bench_decisions.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ctloop.tasks import Task, TaskError

# Metrics whose tolerance is a fraction of the expected level (their scale is the target's).
RELATIVE_METRICS = frozenset({"rmse", "mae", "mape", "log_loss"})

# Default tolerance per metric (see the module docstring for units).
DEFAULT_TOLERANCES: Mapping[str, float] = {
    "roc_auc": 0.03, "pr_auc": 0.05, "accuracy": 0.03, "f1_macro": 0.05, "f1": 0.10,
    "precision": 0.15, "recall": 0.15, "brier": 0.02, "r2": 0.05,
    "log_loss": 0.10, "rmse": 0.10, "mae": 0.10, "mape": 0.15,
}  # fmt: skip

# Metrics watched beside the primary one: binary labels at the champion's chosen threshold
# can collapse (recall from usable to ~0) while the ranking (roc_auc) barely moves.
MONITOR_GUARDS: Mapping[str, tuple[str, ...]] = {
    "binary": ("recall",), "multiclass": ("accuracy",), "regression": (),
}

RESAMPLES = 400
CHUNK = 50


@dataclass(frozen=True)
class MetricCheck:
    """One metric on the window against its expected level."""

    metric: str
    source: str  # "labels" (realised) or "estimate" (CBPE)
    expected: float
    observed: float
    drop: float  # positive = worse; absolute, or relative for RELATIVE_METRICS
    lower: float | None  # one-sided lower confidence bound of the drop (labels only)
    tolerance: float
    harmful: bool

    def describe(self) -> str:
        unit = "%" if self.metric in RELATIVE_METRICS else ""
        scale = 100.0 if unit else 1.0
        text = (f"{self.metric} {self.observed:.4f} vs expected {self.expected:.4f} "
                f"({'realised' if self.source == 'labels' else 'estimated'}): drop "
                f"{scale * self.drop:+.{1 if unit else 4}f}{unit}")
        if self.lower is not None:
            text += f", lower bound {scale * self.lower:+.{1 if unit else 4}f}{unit}"
        text += f" {'>' if self.harmful else '<='} tolerance {scale * self.tolerance:g}{unit}"
        if self.unconfirmed:
            text += (" (unconfirmed: the drop itself is beyond the tolerance, its lower bound "
                     "is not; watch the next window)")
        if self.too_noisy:
            text += (f" (too few rows to resolve the tolerance: the drop is known to within "
                     f"{scale * (self.drop - self.lower):.{1 if unit else 4}f}{unit}; a larger "
                     "window would tell)")
        return text

    @property
    def unconfirmed(self) -> bool:
        """With labels, the realised drop is beyond the tolerance but not with the configured
        confidence: worth a flag in the summary, not a retrain (a calm window crosses the
        tolerance by chance now and then, most often on heavy-tailed errors)."""
        return self.lower is not None and not self.harmful and self.drop > self.tolerance

    @property
    def too_noisy(self) -> bool:
        """The window and holdout noise alone spans more than the tolerance, and the drop
        might still be beyond it (its mirrored upper bound reaches the tolerance): harm can be
        neither confirmed nor ruled out on these rows."""
        if self.lower is None or self.harmful:
            return False
        spread = self.drop - self.lower
        return spread > self.tolerance and self.drop + spread > self.tolerance

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tolerances(task: Task, primary: str,
               configured: Mapping[str, float] | None) -> dict[str, float]:  # fmt: skip
    """The metrics that decide and their tolerances; TaskError names a metric the task lacks."""
    if configured is not None:
        for metric in configured:
            task.check_metric(metric, "monitor.thresholds.tolerance")
        return dict(configured)
    metrics = [primary, *(m for m in MONITOR_GUARDS.get(task.kind, ()) if m != primary)]
    return {m: DEFAULT_TOLERANCES.get(m, 0.05) for m in metrics}


def drop(metric: str, expected: float | np.ndarray, observed: float | np.ndarray,
         lower_is_better: bool) -> float | np.ndarray:  # fmt: skip
    """Signed so that positive is worse; relative to `expected` for RELATIVE_METRICS."""
    worse = observed - expected if lower_is_better else expected - observed
    if metric in RELATIVE_METRICS:
        return worse / max(abs(float(np.mean(expected))), 1e-12)
    return worse


def _sampler(task: Task, metric: str, y: np.ndarray, scores: np.ndarray):
    """The task's fast bootstrap statistic, else the metric on resampled rows (slower)."""
    try:
        return task.sampler(metric, y, scores)
    except TaskError:
        def by_rows(counts: np.ndarray) -> np.ndarray:
            out = []
            for row in counts:
                index = np.repeat(np.arange(len(y)), row.astype(np.int64))
                out.append(task.metrics(y[index], scores[index]).get(metric, np.nan))
            return np.asarray(out, dtype=np.float64)

        return by_rows


def bootstrap(task: Task, metric: str, y: np.ndarray, scores: np.ndarray,
              resamples: int, seed: int) -> np.ndarray:  # fmt: skip
    """`metric` under `resamples` bootstrap resamples of the rows (chunked: bounded memory)."""
    sample = _sampler(task, metric, y, scores)
    rng = np.random.default_rng(seed)
    n = len(y)
    values = []
    for start in range(0, resamples, CHUNK):
        size = min(CHUNK, resamples - start)
        rows = rng.integers(0, n, size=(size, n)) + np.arange(size)[:, None] * n
        counts = np.bincount(rows.ravel(), minlength=size * n).reshape(size, n)
        values.append(sample(counts.astype(np.float64)))
    return np.concatenate(values)


def labelled_checks(task: Task, tols: Mapping[str, float], y_ref: np.ndarray,
                    s_ref: np.ndarray, y_cur: np.ndarray, s_cur: np.ndarray,
                    confidence: float, seed: int = 0,
                    resamples: int = RESAMPLES) -> list[MetricCheck]:  # fmt: skip
    """Realised metrics on the labelled window rows against the holdout's, with intervals.

    Harm: the one-sided lower bound of the drop at `confidence` exceeds the tolerance.
    Metrics undefined on either side (one class only) are left out.
    """
    expected_all, observed_all = task.metrics(y_ref, s_ref), task.metrics(y_cur, s_cur)
    checks = []
    for i, (metric, tol) in enumerate(tols.items()):
        expected, observed = expected_all.get(metric), observed_all.get(metric)
        if expected is None or observed is None or not (np.isfinite(expected)
                                                          and np.isfinite(observed)):
            continue
        lib = metric in task.lower_is_better
        ref_b = bootstrap(task, metric, y_ref, s_ref, resamples, seed + 2 * i)
        cur_b = bootstrap(task, metric, y_cur, s_cur, resamples, seed + 2 * i + 1)
        drops = np.asarray(drop(metric, ref_b, cur_b, lib))
        lower = float(np.nanquantile(drops, 1.0 - confidence))
        point = float(drop(metric, expected, observed, lib))
        checks.append(MetricCheck(metric, "labels", float(expected), float(observed), point,
                                  lower, tol, lower > tol))  # fmt: skip
    return checks


def estimated_checks(tols: Mapping[str, float], expected: Mapping[str, float],
                     estimated: Mapping[str, float],
                     lower_is_better: frozenset[str]) -> list[MetricCheck]:  # fmt: skip
    """Estimated metrics on the window against the same estimate on the holdout.

    Both sides come from one calibrator, so its own bias cancels in the difference; the
    estimate averages over the unknown labels, so its noise is the rows' only.
    """
    checks = []
    for metric, tol in tols.items():
        if metric not in expected or metric not in estimated:
            continue
        point = float(drop(metric, expected[metric], estimated[metric],
                           metric in lower_is_better))  # fmt: skip
        checks.append(MetricCheck(metric, "estimate", float(expected[metric]),
                                  float(estimated[metric]), point, None, tol, point > tol))
    return checks
