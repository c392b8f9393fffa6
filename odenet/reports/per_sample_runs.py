"""Per-image NFE across runs: the combined report's comparison of runs evaluated with ``eval.py --per-sample``.

A run directory holding ``per_sample.csv`` (written beside its sweep by ``eval.py --per-sample``)
gets one row per test-time setting: the quantiles of its per-image NFE, the batching tax, the
correlation of NFE with confidence and the accuracy of its most expensive tenth of images — so an
unregularised and a regularised ODE-Net read side by side (does regularisation cut the expensive
tail, or shift everything?). The figure draws each run's distribution (empirical CDF) per tolerance.
Each run's own report (``eval.py``'s, in its directory) has the full section with galleries.
Torch-free.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from odenet.reports.per_sample import by_setting, nfe_bins, read_per_sample_csv, spearman
from odenet.reports.render import finish_figure, fmt, md_table, new_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from odenet.reports.runs import Run

FILE = "per_sample.csv"


def per_sample_runs(runs: list[Run]) -> list[tuple[Run, list[dict[str, Any]]]]:
    """The runs that have a per_sample.csv, with its rows."""
    return [(run, read_per_sample_csv(run.path / FILE)) for run in runs if (run.path / FILE).is_file()]


def comparison_rows(runs: list[Run]) -> list[dict[str, Any]]:
    """One dict per run × setting: images, batch, NFE quantiles, batching tax, Spearman ρ with confidence,
    and the accuracy of the most expensive NFE bin (a tenth of the images from 100 images, else a quarter)
    against the rest."""
    out = []
    for run, rows in per_sample_runs(runs):
        for (solver, tol), group in by_setting(rows).items():
            nfe = np.asarray([r["nfe_forward"] for r in group], dtype=np.float64)
            batched = float(np.mean([r["nfe_forward_batched"] for r in group]))
            bins = nfe_bins(group)
            top = bins[-1]
            rest = [r for r in group if r not in _top_rows(group, top["images"])]
            out.append({"run": run.label, "solver": solver, "tol": tol, "images": len(group),
                        "batch_size": max(r["batch_size"] for r in group),
                        **{f"p{q}": float(np.quantile(nfe, q / 100)) for q in (10, 50, 90, 99)},
                        "max": float(nfe.max()), "mean": float(nfe.mean()), "batched": batched,
                        "tax": 1 - float(nfe.mean()) / batched,
                        "spearman_confidence": spearman(list(nfe), [r["confidence"] for r in group]),
                        "top_bin": f"{top['bin']}/{top['of']}", "acc_top": top["acc"],
                        "acc_rest": sum(r["correct"] for r in rest) / len(rest) if rest else None})
    return out


def _top_rows(group: list[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """The ``k`` most expensive rows, ranked as :func:`nfe_bins` ranks them (NFE, then image index)."""
    return sorted(group, key=lambda r: (r["nfe_forward"], r["index"]))[len(group) - k:]


def comparison_table(rows: list[dict[str, Any]]) -> str:
    header = ["run", "setting", "images", "batch", "p10", "median", "p90", "p99", "max", "mean alone",
              "batched per image", "tax", "Spearman ρ (NFE, confidence)", "acc: costliest bin", "acc: others"]
    body = [[r["run"], f"{r['solver']} tol {r['tol']:g}", f"{r['images']:,}", str(r["batch_size"]),
             *(fmt(r[k], ".1f") for k in ("p10", "p50", "p90", "p99", "max")), fmt(r["mean"], ".2f"),
             fmt(r["batched"], ".2f"), f"{100 * r['tax']:.1f}%", fmt(r["spearman_confidence"], ".3f"),
             f"{fmt(r['acc_top'], '.3f')} ({r['top_bin']})", fmt(r["acc_rest"], ".3f")] for r in rows]
    return md_table(header, body)


def comparison_figure(runs: list[Run]) -> Figure:
    """Empirical CDF of per-image NFE, one panel per tolerance (up to 4, loosest first), one line per run."""
    import matplotlib.pyplot as plt

    data = per_sample_runs(runs)
    tols = sorted({key[1] for _, rows in data for key in by_setting(rows)}, reverse=True)[:4]
    if not tols:
        fig, ax = new_figure("per-image nfe_forward across runs", "nfe_forward", "share of images")
        return finish_figure(fig, ax, "no run has a per-sample evaluation:\nrun eval.py --per-sample")
    fig, axes = plt.subplots(1, len(tols), figsize=(4.2 * len(tols), 3.6), squeeze=False)
    for ax, tol in zip(axes[0], tols):
        for run, rows in data:
            for (solver, t), group in by_setting(rows).items():
                if t != tol:
                    continue
                nfe = np.sort([r["nfe_forward"] for r in group])
                ax.step(nfe, np.arange(1, len(nfe) + 1) / len(nfe), where="post",
                        label=f"{run.label} ({len(nfe):,} images, batch {max(r['batch_size'] for r in group)})")
        ax.set_title(f"tol {tol:g}: per-image nfe_forward (ECDF)", fontsize=9)
        ax.set_xlabel("nfe_forward (image solved alone)")
        ax.set_ylabel("share of images at or below")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def comparison_text(runs: list[Run]) -> str | None:
    """The section's Markdown, or None when no run has a per-sample evaluation."""
    rows = comparison_rows(runs)
    if not rows:
        return None
    return ("Each image solved alone with its own step control (`eval.py --per-sample`), per run and test-time "
            "setting: quantiles of its `nfe_forward`, the batched solve's NFE per image of the same images, the "
            "batching tax (1 − mean alone / batched), Spearman's ρ between an image's NFE and its confidence "
            "(max softmax), and the accuracy of the costliest NFE bin (a tenth of the images from 100 images) "
            "against the other images. The full per-run sections (galleries, per-class boxes) are in each run's "
            "own report.\n\n" + comparison_table(rows))
