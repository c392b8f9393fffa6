"""Figures of the heartbeat experiment, from numpy arrays alone (no torch): what ``plot_data.npz`` holds.

Conventions: true beats grey, observed points black, the model inside the observed window blue, its
extrapolation red and dashed. Axes are set by the true beats; a prediction that leaves them is cut and
its largest |x̂| written in the panel, so a blow-up cannot hide the data (or pass unnoticed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from odenet.dynamics.plots import pyplot

VARIANT_COLORS = {"latent-ode": "tab:red", "latent-ode-kinetic": "tab:orange", "latent-ode-stable": "tab:green",
                  "latent-gru": "tab:blue", "mean-beat": "black"}


def segmentation_figure(views: Mapping[str, Mapping[str, np.ndarray]], labels: Mapping[str, str]):
    """Per recording: a stretch of the band-passed signal with its peaks (×) and beat starts (|), and the
    phase portraits (x, dx/dφ) of some of its kept beats (standardised)."""
    plt = pyplot()
    names = list(views)
    fig, axes = plt.subplots(2, len(names), figsize=(3.4 * len(names), 5.6), squeeze=False)
    for k, name in enumerate(names):
        v, top, bottom = views[name], axes[0][k], axes[1][k]
        top.plot(v["t"], v["x"], color="tab:gray", lw=0.8)
        top.plot(v["peaks"], np.interp(v["peaks"], v["t"], v["x"]), "x", color="tab:red", ms=4, label="peak")
        for start in v["starts"]:
            top.axvline(start, color="tab:blue", lw=0.6, alpha=0.7)
        top.set(title=f"{name}: {labels.get(name, '')}", xlabel="time (s)", ylabel="band-passed signal")
        top.title.set_fontsize(8)
        for beat in v["beats"]:
            bottom.plot(beat[:, 0], beat[:, 1], lw=0.6, alpha=0.6)
        bottom.set(title=f"first beats of {len(v['beats'])} of its segments", xlabel="x (standardised)",
                   ylabel="dx/dφ (standardised)")
        bottom.title.set_fontsize(8)
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.suptitle("beats cut at peaks (blue lines: beat starts); below: phase portraits", fontsize=9)
    fig.tight_layout()
    plt.close(fig)
    return fig


def portraits_figure(d: Mapping[str, np.ndarray], runs: Sequence[str], titles: Sequence[str],
                     rows: Sequence[tuple[str, int]], window: int, title: str):
    """Columns: runs; rows: (set, index) of held-out windows. Each panel: the true segment, the observed
    points, the reconstruction over the window and the extrapolation after it, as phase portraits."""
    plt = pyplot()
    fig, axes = plt.subplots(len(rows), len(runs), figsize=(2.3 * len(runs), 2.1 * len(rows)), squeeze=False)
    for i, (name, k) in enumerate(rows):
        true, obs, mask = d[f"data/{name}/true"][k], d[f"data/{name}/obs"][k], d[f"data/{name}/mask"][k]
        for j, run in enumerate(runs):
            ax = axes[i][j]
            ax.plot(true[:, 0], true[:, 1], "-", color="tab:gray", lw=0.8, label="true")
            ax.plot(obs[mask, 0], obs[mask, 1], ".", color="k", ms=3, label="observed")
            pred = d.get(f"{run}/{name}/pred")
            if pred is not None:
                _prediction(ax, pred[k], window, true)
            ax.set_title(f"{titles[j]}\n{name} #{k}", fontsize=7)
            ax.tick_params(labelsize=6)
            if i == len(rows) - 1:
                ax.set_xlabel("x", fontsize=7)
            if j == 0:
                ax.set_ylabel("dx/dφ", fontsize=7)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    plt.close(fig)
    return fig


def _prediction(ax, pred: np.ndarray, window: int, true: np.ndarray) -> None:
    lo, hi = true.min(0), true.max(0)
    pad = 0.25 * (hi - lo)
    ax.plot(pred[:window, 0], pred[:window, 1], "-", color="tab:blue", lw=1.4, label="reconstruction")
    ax.plot(pred[window - 1 :, 0], pred[window - 1 :, 1], "--", color="tab:red", lw=1.0, label="extrapolation")
    ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
    ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
    peak = np.abs(pred).max()
    if peak > 1.5 * np.abs(true).max():
        ax.text(0.03, 0.97, f"leaves the plot:\nmax |x̂| = {peak:.3g}", transform=ax.transAxes, fontsize=6,
                va="top", color="tab:red")


def horizon_figure(curves: Mapping[str, Mapping[str, list[np.ndarray]]],
                   latent: Mapping[str, Mapping[str, list[np.ndarray]]], t: np.ndarray, window_t: float,
                   title: str):
    """Top: MSE against the time since the window's start (beats), mean over seeds (line) and their range
    (band), one panel per kind of training windows. Bottom: the held-out beats' median ‖z(t)‖ in units of
    the training region's radius R."""
    plt = pyplot()
    fig, axes = plt.subplots(2, len(curves), figsize=(5.2 * len(curves), 6.4), squeeze=False, sharex=True)
    for j, (where, per_variant) in enumerate(curves.items()):
        _bands(axes[0][j], per_variant, t)
        axes[0][j].set(yscale="log", title=f"training windows: {where}", ylabel="MSE per time point")
        _bands(axes[1][j], latent.get(where, {}), t)
        axes[1][j].axhline(1.0, color="k", lw=0.8, ls=":", label="R (training region)")
        axes[1][j].set(yscale="log", xlabel="time since the window's start (beats)", ylabel="median ‖z(t)‖ / R")
        for ax in (axes[0][j], axes[1][j]):
            ax.axvspan(0, window_t, color="tab:gray", alpha=0.15, lw=0)
            for beat in range(1, int(t[-1]) + 1):
                ax.axvline(beat, color="tab:gray", lw=0.5)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6, loc="upper left")
            ax.title.set_fontsize(9)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    plt.close(fig)
    return fig


def _bands(ax, per_variant: Mapping[str, list[np.ndarray]], t: np.ndarray) -> None:
    for variant, arrays in per_variant.items():
        if not arrays:
            continue
        stack = np.stack(arrays)
        color = VARIANT_COLORS.get(variant)
        runs = "no training" if variant == "mean-beat" else f"{len(arrays)} seed{'s' * (len(arrays) > 1)}"
        ax.plot(t, stack.mean(0), color=color, lw=1.2, label=f"{variant} ({runs})")
        if len(arrays) > 1:
            ax.fill_between(t, stack.min(0), stack.max(0), color=color, alpha=0.2, lw=0)


def convergence_figure(losses: Mapping[str, Mapping[str, list[np.ndarray]]], title: str, smooth: int = 20):
    """Training loss (−ELBO, + the kinetic penalty where used) against iteration, a running mean over
    ``smooth`` steps, one line per seed, one panel per kind of training windows."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(losses), figsize=(5.2 * len(losses), 3.8), squeeze=False)
    for j, (where, per_variant) in enumerate(losses.items()):
        ax, tops = axes[0][j], []
        for variant, arrays in per_variant.items():
            for n, loss in enumerate(arrays):
                if len(loss) < smooth:
                    continue
                curve = np.convolve(loss, np.ones(smooth) / smooth, mode="valid")
                ax.plot(np.arange(smooth, len(loss) + 1), curve, color=VARIANT_COLORS.get(variant), lw=0.8,
                        label=f"{variant} ({len(arrays)} seeds)" if n == 0 else None)
                tops.append(np.percentile(curve, 90))
        if tops:
            bottom = ax.dataLim.intervaly[0]
            ax.set_ylim(bottom - 0.05 * abs(bottom), max(tops))
        ax.set(title=f"training windows: {where}", xlabel="iteration", ylabel=f"loss (running mean of {smooth})")
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    plt.close(fig)
    return fig
