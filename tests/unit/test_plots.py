"""The plots on a logged trial: every label must be inside the picture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ctloop import plots


def _outside(fig) -> list[str]:
    """Titles of the axes whose drawn labels (ticks, axis labels, title, legend) reach
    past the picture's edges."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    width, height = fig.canvas.get_width_height()
    outside = []
    for ax in fig.axes:
        box = ax.get_tightbbox(renderer)
        if box.x0 < -1 or box.y0 < -1 or box.x1 > width + 1 or box.y1 > height + 1:
            outside.append(ax.get_title())
    return outside


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_every_label_of_every_plot_is_inside_the_picture(task, tmp_path: Path, monkeypatch):
    import matplotlib.pyplot as plt

    saved = []
    real_close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig: saved.append(fig))
    rng = np.random.default_rng(0)
    names = ["scheduled_departure_hour_of_day", "origin", "wind_speed"]
    importance = np.array([0.5, 0.3, 0.2])
    if task == "binary":
        y = (rng.random(2000) < 0.3).astype(int)
        plots.binary_plots(tmp_path, y, np.clip(rng.random(2000) * 0.6 + 0.4 * y, 0, 1), 0.42,
                           names, importance)
    elif task == "multiclass":
        y = rng.integers(0, 3, 2000)
        plots.multiclass_plots(tmp_path, y, rng.dirichlet(np.ones(3), 2000),
                               ["Adelie", "Chinstrap", "Gentoo penguins"], names, importance)
    else:
        y = rng.normal(1e6, 2e5, 2000)
        plots.regression_plots(tmp_path, y, y + rng.normal(0, 5e4, 2000), names, importance)
    assert saved and len(list(tmp_path.glob("*.png"))) == len(saved)
    try:
        for fig in saved:
            assert _outside(fig) == []
    finally:
        for fig in saved:
            real_close(fig)
