"""Figures of fitted dynamics and latent-ODE spirals, from numpy arrays alone (no torch).

The arrays are what a run saves in ``plot_data.npz``, so every figure can be redrawn from a run
directory (as :mod:`odenet.dynamics.report` does) on a machine without torch.
Conventions of the write-up: true trajectories solid, learned ones dotted.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

COLORS = ("tab:green", "tab:blue")  # y1, y2 (ode_demo's colours)


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def fit_title(config: Mapping, summary: Mapping) -> str:
    """One line naming the system, the field and the measured MSE before → after."""
    c = config
    inputs = c["features"] + (" and t" if c["time_input"] else "")
    dropped = f", {c['irregular']:.0%} of times dropped" if c["irregular"] else ""
    return (f"{c['system']}: field {c['field']} on {inputs}{dropped} — whole-trajectory mse "
            f"{summary['mse_initial']:.3g} → {summary['mse_final']:.3g} after {c['iters']} iterations")


def fit_figure(d: Mapping[str, np.ndarray], title: str):
    """Time series | phase portrait | vector field, for one fitted system.

    ``d`` holds ``t`` (N,), ``y_true`` and ``y_pred`` (N, 2), ``observed`` (M,) grid indices,
    ``grid_x``/``grid_y`` (G, G), ``field_true``/``field_pred`` (G, G, 2), ``field_time`` and
    ``time_dependent`` (scalars).
    """
    plt = pyplot()
    fig, (ax_t, ax_p, ax_f) = plt.subplots(1, 3, figsize=(15, 4.2))
    fig.suptitle(title, fontsize=10)
    _time_series(ax_t, d)
    _phase_portrait(ax_p, d)
    _vector_field(ax_f, d)
    fig.tight_layout()
    plt.close(fig)
    return fig


def _time_series(ax, d: Mapping[str, np.ndarray]) -> None:
    t, true, pred, observed = d["t"], d["y_true"], d["y_pred"], d["observed"]
    for i, color in enumerate(COLORS):
        ax.plot(t, true[:, i], "-", color=color, lw=1.2, label=f"y{i + 1} true")
        ax.plot(t, pred[:, i], ":", color=color, lw=2, label=f"y{i + 1} learned")
    if len(observed) < len(t):  # irregular: show which times the fit saw
        ax.plot(t[observed], true[observed, 0], ".", color="k", ms=2, label="observed")
    ax.set(title="time series", xlabel="t", ylabel="y")
    ax.legend(fontsize=7, loc="upper right")


def _phase_portrait(ax, d: Mapping[str, np.ndarray]) -> None:
    true, pred = d["y_true"], d["y_pred"]
    ax.plot(true[:, 0], true[:, 1], "-", color="tab:gray", lw=1.2, label="true")
    ax.plot(pred[:, 0], pred[:, 1], ":", color="tab:red", lw=2, label="learned")
    ax.plot(true[0, 0], true[0, 1], "ko", ms=4, label="y0")
    ax.set(title="phase portrait", xlabel="y1", ylabel="y2")
    ax.legend(fontsize=7, loc="upper right")


def _vector_field(ax, d: Mapping[str, np.ndarray]) -> None:
    """Learned field as streamlines coloured by speed; the true field's directions as arrows."""
    gx, gy, learned, actual = d["grid_x"], d["grid_y"], d["field_pred"], d["field_true"]
    speed = np.hypot(learned[..., 0], learned[..., 1])
    stream = ax.streamplot(gx, gy, learned[..., 0], learned[..., 1], color=speed, cmap="viridis", density=1.0,
                           linewidth=0.8, arrowsize=0.8)
    ax.figure.colorbar(stream.lines, ax=ax, label="learned speed |f(y)|", shrink=0.85)
    ax.quiver(gx[::2, ::2], gy[::2, ::2], *_unit(actual[::2, ::2]), color="tab:red", alpha=0.6, scale=30,
              width=0.004)
    ax.plot(d["y_true"][:, 0], d["y_true"][:, 1], "-", color="tab:gray", lw=0.8)
    when = f" at t = {float(d['field_time']):g}" if bool(d["time_dependent"]) else ""
    ax.set(title=f"learned field (stream, coloured by speed), true directions{when}", xlabel="y1", ylabel="y2",
           xlim=(gx.min(), gx.max()), ylim=(gy.min(), gy.max()))
    ax.title.set_fontsize(9)


def _unit(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Directions only: the true fields' speeds span orders of magnitude (y³ near 0 vs at 2)."""
    norm = np.hypot(v[..., 0], v[..., 1])
    norm = np.where(norm > 0, norm, 1)
    return v[..., 0] / norm, v[..., 1] / norm


def mse_curves_figure(curves: Mapping[str, tuple[np.ndarray, np.ndarray]]):
    """Whole-trajectory MSE against training iteration, one line per system (log scale)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, (steps, mse) in curves.items():
        ax.plot(steps, mse, "o-", ms=3, label=name)
    ax.set(title="trajectory MSE during training", xlabel="iteration", ylabel="mse (whole trajectory)",
           yscale="log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    plt.close(fig)
    return fig


def latent_figure(d: Mapping[str, np.ndarray], title: str, count: int = 4):
    """Test spirals: noisy observations, true trajectory, reconstruction and extrapolation.

    ``d`` holds ``true`` (S, W + E, 2), ``pred`` (S, W + E, 2), ``obs`` (S, W, 2), ``mask`` (S, W)
    and ``window`` () = W, the number of grid points of the observed window.
    """
    plt = pyplot()
    count = min(count, len(d["true"]))
    fig, axes = plt.subplots(1, count, figsize=(4 * count, 4), squeeze=False)
    fig.suptitle(title, fontsize=10)
    w = int(d["window"])
    for k, ax in enumerate(axes[0]):
        true, pred, mask = d["true"][k], d["pred"][k], d["mask"][k].astype(bool)
        ax.plot(true[:, 0], true[:, 1], "-", color="tab:gray", lw=1.2, label="true")
        ax.plot(pred[:w, 0], pred[:w, 1], ":", color="tab:blue", lw=2, label="reconstruction")
        ax.plot(pred[w - 1:, 0], pred[w - 1:, 1], ":", color="tab:red", lw=2, label="extrapolation")
        ax.scatter(d["obs"][k][mask, 0], d["obs"][k][mask, 1], s=8, color="k", label="observed (noisy)")
        ax.plot(true[0, 0], true[0, 1], "o", color="tab:green", ms=4, label="window start")
        ax.set(title=f"test spiral {k}", xlabel="x1", ylabel="x2")
        ax.set_aspect("equal", adjustable="datalim")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    plt.close(fig)
    return fig
