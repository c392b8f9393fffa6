"""The dynamics figures from numpy arrays alone: what each axis plots, read back from the figure."""

from __future__ import annotations

import numpy as np

from odenet.dynamics.plots import fit_figure


def plot_data() -> dict[str, np.ndarray]:
    t = np.linspace(0, 1, 20)
    y = np.stack([np.cos(t), np.sin(t)], axis=1)
    gx, gy = np.meshgrid(np.linspace(-2, 2, 6), np.linspace(-2, 2, 6))
    field = np.stack([-gy, 2 * gx], axis=-1)  # speed varies over the grid
    return {"t": t, "y_true": y, "y_pred": y * 1.01, "observed": np.arange(20), "grid_x": gx, "grid_y": gy,
            "field_true": field, "field_pred": field, "field_time": np.array(0.0), "time_dependent": np.array(False)}


def test_vector_field_colouring_has_a_colour_bar_with_the_speed_range():
    d = plot_data()
    fig = fit_figure(d, "spiral")
    ax_field, bar = fig.axes[2], fig.axes[3]  # time series, phase portrait, field, its colour bar
    assert bar.get_ylabel() == "learned speed |f(y)|"
    speed = np.hypot(d["field_pred"][..., 0], d["field_pred"][..., 1])
    lo, hi = bar.get_ylim()
    assert np.isclose(lo, speed.min()) and np.isclose(hi, speed.max())
    assert ax_field.get_title().startswith("learned field (stream, coloured by speed)")
