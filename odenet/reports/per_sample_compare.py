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

from odenet.reports.per_sample_report import by_setting, costliest, read_per_sample_csv, spearman
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
    and the accuracy of the costliest images (:func:`~odenet.reports.per_sample_report.costliest`) against the rest."""
    out = []
    for run, rows in per_sample_runs(runs):
        for (solver, tol), group in by_setting(rows).items():
            nfe = np.asarray([r["nfe_forward"] for r in group], dtype=np.float64)
            batched = float(np.mean([r["nfe_forward_batched"] for r in group]))
            top = costliest(group)
            top_ids = {id(r) for r in top or []}
            rest = [r for r in group if top is not None and id(r) not in top_ids]
            out.append({"run": run.label, "solver": solver, "tol": tol, "images": len(group),
                        "batch_size": max(r["batch_size"] for r in group),
                        **{f"p{q}": float(np.quantile(nfe, q / 100)) for q in (10, 50, 90, 99)},
                        "max": float(nfe.max()), "mean": float(nfe.mean()), "batched": batched,
                        "tax": 1 - float(nfe.mean()) / batched,
                        "spearman_confidence": spearman(list(nfe), [r["confidence"] for r in group]),
                        "top_images": len(top) if top else 0,
                        "top_nfe": min(r["nfe_forward"] for r in top) if top else None,
                        "acc_top": sum(r["correct"] for r in top) / len(top) if top else None,
                        "acc_rest": sum(r["correct"] for r in rest) / len(rest) if rest else None})
    return out


def comparison_table(rows: list[dict[str, Any]]) -> str:
    header = ["run", "setting", "images", "batch", "p10", "median", "p90", "p99", "max", "mean alone",
              "batched per image", "tax", "Spearman ρ (NFE, confidence)", "costliest images", "acc: costliest",
              "acc: others"]
    body = [[r["run"], f"{r['solver']} tol {r['tol']:g}", f"{r['images']:,}", str(r["batch_size"]),
             *(fmt(r[k], ".1f") for k in ("p10", "p50", "p90", "p99", "max")), fmt(r["mean"], ".2f"),
             fmt(r["batched"], ".2f"), f"{100 * r['tax']:.1f}%", fmt(r["spearman_confidence"], ".3f"),
             f"{r['top_images']:,} (NFE ≥ {r['top_nfe']:g})" if r["top_images"] else "— (all equal)",
             fmt(r["acc_top"], ".3f"), fmt(r["acc_rest"], ".3f")] for r in rows]
    return md_table(header, body)


def comparison_figure(runs: list[Run]) -> Figure:
    """Empirical CDF of per-image NFE, one panel per tolerance (up to 6, loosest first, 3 a row), one line per
    run; one legend for all panels under them."""
    import matplotlib.pyplot as plt

    data = per_sample_runs(runs)
    tols = sorted({key[1] for _, rows in data for key in by_setting(rows)}, reverse=True)[:6]
    if not tols:
        fig, ax = new_figure("per-image nfe_forward across runs", "nfe_forward", "share of images")
        return finish_figure(fig, ax, "no run has a per-sample evaluation:\nrun eval.py --per-sample")
    cols = min(3, len(tols))
    rows_n = -(-len(tols) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.6 * cols, 3.4 * rows_n + 0.4 + 0.25 * len(data)),
                             squeeze=False)
    legend = {}
    for ax, tol in zip(axes.flat, tols):
        for run, rows in data:
            for (solver, t), group in by_setting(rows).items():
                if t != tol:
                    continue
                nfe = np.sort([r["nfe_forward"] for r in group])
                (line,) = ax.step(nfe, np.arange(1, len(nfe) + 1) / len(nfe), where="post",
                                  label=f"{run.label} ({len(nfe):,} images, batch "
                                        f"{max(r['batch_size'] for r in group)})")
                legend.setdefault(line.get_label(), line)
        ax.set_title(f"tol {tol:g}: per-image nfe_forward (ECDF)", fontsize=9)
        ax.set_xlabel("nfe_forward (image solved alone)")
        ax.set_ylabel("share of images at or below")
        ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(tols):]:
        ax.set_visible(False)
    fig.legend(list(legend.values()), list(legend), loc="lower center", fontsize=7, ncol=1, frameon=False)
    fig.tight_layout(rect=(0, 0.06 + 0.04 * len(data), 1, 1))
    return fig


def comparison_text(runs: list[Run]) -> str | None:
    """The section's Markdown, or None when no run has a per-sample evaluation."""
    rows = comparison_rows(runs)
    if not rows:
        return None
    return ("Each image solved alone with its own step control (`eval.py --per-sample`), per run and test-time "
            "setting: quantiles of its `nfe_forward`, the batched solve's NFE per image of the same images, the "
            "batching tax (1 − mean alone / batched), Spearman's ρ between an image's NFE and its confidence "
            "(max softmax), and the accuracy of the costliest images — the highest NFE levels, taken whole until "
            "they hold at least a tenth of the images, never the cheapest level — against the others. The full "
            "per-run sections (galleries, per-class boxes) are in each run's own report.\n\n" + comparison_table(rows))
