"""The study's figures, per method over seeds, one colour per method in every figure. Torch-free.

* :func:`fig_headline` — test accuracy against test NFE at the training tolerance, 95% intervals on both;
  the methods without an ODE block as horizontal bands;
* :func:`fig_matched` — accuracy and solve error against NFE across the test-time sweep (dopri5 solid,
  fixed-step rk4 dashed, Euler dotted), each point the mean over seeds of one setting (the error's
  geometric mean and the interval of its logarithm: errors span decades);
* :func:`fig_nfe_training` — mean NFE per training step, epoch by epoch, mean over seeds with its interval.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from typing import TYPE_CHECKING

from odenet.reports.render import finish_figure, new_figure
from odenet.reports.seeds import Method, estimate

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

PALETTE = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive",
           "tab:cyan", "navy", "darkgoldenrod", "teal")
FIXED_DEPTH = ("black", "dimgray", "silver")
LINESTYLES = {"dopri5": "-", "rk4": "--", "euler": ":"}


def colours(methods: list[Method]) -> dict[str, str]:
    """One colour per method, the same in every figure: ODE methods from the palette, the others greys."""
    ode = [m for m in methods if m.is_ode]
    out = {m.name: PALETTE[k % len(PALETTE)] for k, m in enumerate(ode)}
    out.update({m.name: FIXED_DEPTH[k % len(FIXED_DEPTH)] for k, m in enumerate(m for m in methods if not m.is_ode)})
    return out


def fig_headline(methods: list[Method], caption: str) -> Figure:
    fig, ax = new_figure(f"Test accuracy against test NFE ({caption})", "test nfe_forward per batch (training "
                         "tolerance)", "test acc")
    colour = colours(methods)
    spans: list[float] = []
    for m in methods:
        acc = m.over_seeds(lambda r: r.final_test().get("acc"))
        if acc is None:
            continue
        if not m.is_ode:
            ax.axhspan(acc.low, acc.high, color=colour[m.name], alpha=0.15)
            ax.axhline(acc.mean, color=colour[m.name], lw=1, ls="--", label=f"{m.name} (no ODE block)")
            continue
        nfe = m.over_seeds(lambda r: r.final_test().get("nfe_forward"))
        if nfe is None:
            continue
        fewest = min(r.final_test()["nfe_forward"] for r in m.runs if r.final_test().get("nfe_forward") is not None)
        # A t-interval of a few seeds can reach below any count a seed took (or below 0): cut it there, and the
        # accuracy's at 0 and 1.
        xerr = [[min(nfe.half or 0, nfe.mean - fewest)], [nfe.half or 0]]
        yerr = [[min(acc.half or 0, acc.mean)], [min(acc.half or 0, 1 - acc.mean)]]
        ax.errorbar([nfe.mean], [acc.mean], xerr=xerr, yerr=yerr, fmt="o", color=colour[m.name], capsize=3,
                    label=m.name)
        spans.append(nfe.mean)
    if spans and min(spans) > 0 and max(spans) / min(spans) > 4:  # one method far out: a log axis keeps the rest apart
        from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))  # 10, 20, 50, 100: plain numbers, not 3×10¹
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    return finish_figure(fig, ax)


def _setting_means(method: Method, solver: str, key: str, log: bool = False) -> list[tuple[float, ...]]:
    """(mean NFE, NFE half-width, ``key``'s mean, its distance below, above) per sweep setting of ``solver``, over
    seeds; with ``log`` the geometric mean and the interval of log10 ``key`` (errors span decades)."""
    by_setting = defaultdict(list)
    for run in method.runs:
        for r in run.sweep:
            if r.get("solver") == solver and r.get(key) is not None and r.get("nfe_forward") is not None:
                by_setting[r.get("tol") or r.get("steps")].append((r["nfe_forward"], r[key]))
    points = []
    for values in by_setting.values():
        nfe = estimate(v[0] for v in values)
        if log:
            y = estimate(math.log10(v[1]) for v in values if v[1] > 0)
            if y is None:
                continue
            mid = 10 ** y.mean
            points.append((nfe.mean, nfe.half or 0.0, mid, mid - 10 ** y.low, 10 ** y.high - mid))
        else:
            y = estimate(v[1] for v in values)
            points.append((nfe.mean, nfe.half or 0.0, y.mean, y.half or 0.0, y.half or 0.0))
    return sorted(points)


def _curves(ax: Axes, methods: list[Method], key: str, colour: dict[str, str], log: bool = False) -> None:
    for m in methods:
        if not m.is_ode:
            continue
        for solver, style in LINESTYLES.items():
            points = _setting_means(m, solver, key, log)
            if not points:
                continue
            xs, xh, ys, below, above = zip(*points)
            ax.errorbar(xs, ys, xerr=xh, yerr=[below, above], ls=style, marker="o", ms=3, capsize=2,
                        color=colour[m.name], label=f"{m.name}, {solver}")


def fig_matched(methods: list[Method], caption: str) -> Figure:
    """Two panels: accuracy against NFE and solve error against NFE, across the test-time sweep."""
    import matplotlib.pyplot as plt

    colour = colours(methods)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label in ((left, "acc", "test acc"), (right, "ode_error", "ODE block error (vs float64 reference)")):
        _curves(ax, methods, key, colour, log=key == "ode_error")
        ax.set_xscale("log")
        ax.set_xlabel("test nfe_forward per batch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    right.set_yscale("log")
    for m in (m for m in methods if not m.is_ode):
        acc = m.over_seeds(lambda r: r.final_test().get("acc"))
        if acc is not None:
            left.axhline(acc.mean, color=colour[m.name], lw=1, ls="--", label=f"{m.name} (no ODE block)")
    left.set_title("accuracy against NFE", fontsize=10)
    right.set_title("solve error against NFE", fontsize=10)
    fig.suptitle(f"Test-time sweep: dopri5 at each tolerance (solid), rk4 (dashed) and Euler (dotted) at 1-8 steps; "
                 f"{caption}", fontsize=9)
    handles, labels = left.get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, fontsize=7, frameon=False)
    fig.tight_layout()
    plt.close(fig)
    return fig


def fig_nfe_training(methods: list[Method], caption: str) -> Figure:
    """Mean forward (and, for the adjoint, backward) NFE per step in each epoch, mean and band over seeds."""
    from matplotlib.ticker import MaxNLocator

    fig, ax = new_figure(f"NFE over training ({caption})", "epoch", "mean nfe per training step")
    colour = colours(methods)
    for m in (m for m in methods if m.is_ode):
        for key, style in (("nfe_forward", "-"), ("nfe_backward", "--")):
            per_epoch = defaultdict(list)
            for run in m.runs:
                epochs = defaultdict(list)
                for r in run.train_rows:
                    if key in r:
                        epochs[r["epoch"]].append(r[key])
                for e, values in epochs.items():
                    per_epoch[e].append(statistics.fmean(values))
            if not per_epoch or not any(v for vs in per_epoch.values() for v in vs):
                continue
            xs = sorted(per_epoch)
            ests = [estimate(per_epoch[e]) for e in xs]
            ys = [e.mean for e in ests]
            ax.plot(xs, ys, style, color=colour[m.name], label=f"{m.name}{' backward' if key == 'nfe_backward' else ''}")
            ax.fill_between(xs, [e.low for e in ests], [e.high for e in ests], color=colour[m.name], alpha=0.15)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return finish_figure(fig, ax, None if any(m.is_ode for m in methods) else "no ODE runs")
