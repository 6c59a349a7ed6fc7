"""Tasks: what differs between binary, multiclass and regression, behind one interface.

`resolve_task` decides the task of a training table (declared in `data.task`, or inferred
from the target column, with the reason said out loud); `from_json` rebuilds the task a
logged model was trained for.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ctloop.tasks.base import Task, TaskError, jsonable, shown
from ctloop.tasks.binary import BinaryTask
from ctloop.tasks.multiclass import MulticlassTask
from ctloop.tasks.regression import RegressionTask

__all__ = ["BY_KIND", "KINDS", "BinaryTask", "MulticlassTask", "RegressionTask", "Task",
           "TaskError", "from_json", "resolve_task"]

KINDS = ("binary", "multiclass", "regression")
BY_KIND: dict[str, type[Task]] = {"binary": BinaryTask, "multiclass": MulticlassTask,
                                  "regression": RegressionTask}
MAX_INTEGER_CLASSES = 20  # an integer target with more distinct values is a quantity
MAX_TEXT_CLASSES = 100
_TRUE = {"true", "yes", "1"}


def from_json(payload: dict[str, Any]) -> Task:
    kind = payload.get("kind")
    if kind == "binary":
        return BinaryTask(payload["positive_label"], payload["negative_label"],
                          float(payload.get("threshold", 0.5)))
    if kind == "multiclass":
        return MulticlassTask(tuple(payload["classes"]))
    if kind == "regression":
        return RegressionTask()
    raise TaskError(f"unknown task kind {kind!r}")


def _sorted(values: list[Any]) -> list[Any]:
    try:
        return sorted(values)
    except TypeError:
        return sorted(values, key=str)


def _numeric(values: pd.Series) -> pd.Series | None:
    """The values as numbers if every one of them is numeric (text like "3.5" counts)."""
    if pd.api.types.is_bool_dtype(values):
        return None
    if pd.api.types.is_numeric_dtype(values):
        return values.astype("float64")
    converted = pd.to_numeric(values, errors="coerce")
    return converted if converted.notna().all() else None


def _infer(values: pd.Series) -> tuple[str, str]:
    distinct = values.nunique()
    if distinct == 2:
        labels = ", ".join(map(shown, _sorted(list(pd.unique(values)))))
        return "binary", f"2 distinct values ({labels})"
    numbers = _numeric(values)
    if numbers is not None:
        integral = bool(np.all(np.mod(numbers, 1) == 0))
        if not integral:
            return "regression", "numeric with fractional values"
        if distinct <= MAX_INTEGER_CLASSES and distinct <= max(3, 0.05 * len(values)):
            return "multiclass", f"{distinct} distinct integer values"
        return "regression", f"{distinct} distinct integer values (more than a class list)"
    if distinct <= min(MAX_TEXT_CLASSES, max(3, len(values) // 2)):
        return "multiclass", f"{distinct} distinct text values"
    raise TaskError(f"{distinct} distinct text values in {len(values)} rows is too many classes; "
                    "set data.task (or clean the target)")


def _positive(values: list[Any], declared: Any) -> Any:
    if declared is not None:
        for value in values:
            if value == declared or str(value) == str(declared):
                return value
        raise TaskError(f"positive_label {declared!r} does not occur in the target "
                        f"(values: {', '.join(map(shown, values))})")
    if all(isinstance(v, bool | np.bool_) for v in values):
        return next(v for v in values if bool(v))
    if all(isinstance(v, int | float | np.integer | np.floating) for v in values) and \
            {float(v) for v in values} == {0.0, 1.0}:
        return next(v for v in values if float(v) == 1.0)
    text = {str(v).strip().lower(): v for v in values}
    if set(text) == {"true", "false"}:
        return text["true"]
    raise TaskError("binary target with labels "
                    f"{', '.join(map(shown, values))}: set data.positive_label to the positive "
                    "one (only 0/1 and true/false labels are understood without it)")


def resolve_task(values: pd.Series, declared: str | None,
                 positive_label: Any = None) -> tuple[Task, str]:
    """The task for a (non-empty, missing-free) target column and why it was chosen.

    Raises TaskError with a message a user can act on (which setting to add or change).
    """
    if declared is None:
        kind, why = _infer(values)
        reason = f"inferred from the target: {why}; set data.task to override"
    else:
        kind, reason = declared, "declared in data.task"
    distinct = _sorted(list(pd.unique(values)))
    if kind == "binary":
        if len(distinct) != 2:
            raise TaskError(f"data.task is binary but the target has {len(distinct)} distinct "
                            "values (use multiclass or regression)")
        positive = _positive(distinct, positive_label)
        negative = next(v for v in distinct if v is not positive and v != positive)
        return BinaryTask(jsonable(positive), jsonable(negative)), reason
    if positive_label is not None:
        raise TaskError(f"data.positive_label is only for binary targets; this one is {kind} "
                        f"({reason})")
    if kind == "multiclass":
        return MulticlassTask(tuple(jsonable(v) for v in distinct)), reason
    if _numeric(values) is None:
        raise TaskError("data.task is regression but the target is not numeric "
                        f"(e.g. {values.iloc[0]!r})")
    return RegressionTask(), reason
