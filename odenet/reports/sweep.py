"""One checkpoint's test-time tolerance sweep (what eval.py measures): its files, its report, and
the "is it still an ODE?" verdict of Ott et al. (ICLR 2021)."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from odenet.reports.render import Report, Section, finish_figure, fmt, md_table, new_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

SWEEP_COLUMNS = ("solver", "tol", "atol", "steps", "acc", "loss", "nfe_forward", "nfe_forward_min", "nfe_forward_max",
                 "steps_accepted", "steps_rejected", "ode_error", "time_ms", "images_per_s", "act_mem_mb",
                 "peak_mem_mb", "flops", "images")
SWEEP_NOTES = (
    "`nfe_forward`: mean (min–max) function evaluations per test batch, including the 2 evaluations adaptive "
    "solvers spend choosing the first step. `ode_error`: relative L2 error of each ODE block's output against "
    "a reference solve of the same input ({ref}), the largest over blocks, averaged over batches. "
    "`flops/image`: fvcore count of stem and head once plus NFE × one field evaluation per ODE block "
    "(fvcore counts one multiply-add as one flop; element-wise ops are not counted). `act_mem_mb`: tensors a "
    "training step at this setting would save for backward (one batch). `peak_mem_mb`: CUDA only.")
ODE_DROP_POINTS = 1.0  # accuracy drop (percentage points) at 100× tighter tolerance that flags a run


def tighter(tol: float) -> float:
    """tol / 100 without binary noise (1e-5 / 100 is 1.0000000000000001e-07)."""
    return float(f"{tol / 100:.6g}")


def still_an_ode(rows: list[dict], train_tol: float | None, solver: str | None) -> dict | None:
    """Ott et al. (ICLR 2021): does accuracy survive a 100× tighter tolerance than training used?

    Returns:
        The accuracies at both tolerances, the drop in points, ``flagged`` and a sentence (``text``);
        None when the sweep lacks the training solver at either tolerance.
    """
    if train_tol is None:
        return None
    by_tol = {(r["solver"], r["tol"]): r for r in rows if r.get("tol")}
    tight_tol = tighter(train_tol)
    at_train = by_tol.get((solver, train_tol))
    at_tight = by_tol.get((solver, tight_tol))
    if not at_train or not at_tight:
        return None
    drop = 100 * (at_train["acc"] - at_tight["acc"])
    bad = drop > ODE_DROP_POINTS
    text = (f"accuracy at the training tolerance {train_tol:g}: {100 * at_train['acc']:.2f}%; at {tight_tol:g}: "
            f"{100 * at_tight['acc']:.2f}% (drop {drop:.2f} points). "
            + ("**The network learned the discretisation, not an ODE.**" if bad else
               "Accuracy holds: the trained model behaves as an ODE at this tolerance."))
    return {"train_tol": train_tol, "tight_tol": tight_tol, "acc_train_tol": at_train["acc"],
            "acc_tight_tol": at_tight["acc"], "drop_points": drop, "flagged": bad, "text": text}


def sweep_table(rows: list[dict]) -> str:
    """The sweep as a Markdown table, one row per solver setting."""
    header = ["solver", "tol / steps", "acc", "loss", "nfe_forward (min–max)", "accepted", "rejected", "ode_error",
              "time_ms", "images/s", "act_mem_mb", "peak_mem_mb", "flops/image"]
    body = []
    for r in rows:
        setting = fmt(r["tol"], "g") if r.get("tol") else (f"{r['steps']} steps" if r.get("steps") else "—")
        if r.get("tol") and r.get("atol") not in (None, r["tol"]):
            setting += f" (atol {r['atol']:g})"
        nfe = (f"{r['nfe_forward']:.1f} ({r['nfe_forward_min']}–{r['nfe_forward_max']})"
               if r.get("nfe_forward") is not None else "—")
        body.append([r.get("solver") or "—", setting, fmt(r["acc"]), fmt(r["loss"]), nfe,
                     fmt(r.get("steps_accepted"), ".1f"), fmt(r.get("steps_rejected"), ".1f"),
                     fmt(r.get("ode_error"), ".2e"), fmt(r.get("time_ms"), ".1f"), fmt(r.get("images_per_s"), ".0f"),
                     fmt(r.get("act_mem_mb"), ".1f"), fmt(r.get("peak_mem_mb"), ".1f"), fmt(r.get("flops"), ".3g")])
    return md_table(header, body)


def by_solver(rows: list[dict]) -> dict[str, list[dict]]:
    """Sweep rows grouped by solver, in order of first appearance; rows without a solver left out."""
    groups = defaultdict(list)
    for r in rows:
        if r.get("solver"):
            groups[r["solver"]].append(r)
    return groups


def tol_line(ax: Axes, rows: list[dict], xkey: str, ykey: str, label: str) -> None:
    """Points joined from loose to tight setting, each labelled with its tolerance (or steps)."""
    rows = sorted(rows, key=lambda r: (-(r.get("tol") or 0), r.get("steps") or 0))
    if not rows:
        return
    ax.plot([r[xkey] for r in rows], [r[ykey] for r in rows], "o-", label=label)
    for r in rows:
        text = f"{r['tol']:g}" if r.get("tol") else f"{r.get('steps')} st"
        ax.annotate(text, (r[xkey], r[ykey]), textcoords="offset points", xytext=(4, 4), fontsize=7)


def sweep_figures(rows: list[dict]) -> dict[str, Figure]:
    """Accuracy, NFE and flops against tolerance (adaptive solvers), and Fig. 3a/3b: one line per solver."""
    figures = {}
    groups = by_solver(rows)
    adaptive = {s: sorted((r for r in g if r.get("tol")), key=lambda r: -r["tol"]) for s, g in groups.items()}
    adaptive = {s: g for s, g in adaptive.items() if g}
    if adaptive:
        for name, key, ylabel, logy in (("acc_vs_tol", "acc", "test acc", False),
                                        ("nfe_vs_tol", "nfe_forward", "nfe_forward per batch", False),
                                        ("flops_vs_tol", "flops", "flops per image", True)):
            fig, ax = new_figure(f"{ylabel} vs tolerance", "tolerance", ylabel, logx=True, logy=logy)
            for solver, g in adaptive.items():
                ax.plot([r["tol"] for r in g], [r[key] for r in g], "o-", label=solver)
            figures[name] = finish_figure(fig, ax)
    if groups:
        fig, ax = new_figure("Fig. 3a: NFE vs numerical error", "nfe_forward per batch", "ODE block error", logy=True)
        for solver, g in groups.items():
            tol_line(ax, [r for r in g if r.get("ode_error")], "nfe_forward", "ode_error", solver)
        figures["fig3a_nfe_vs_error"] = finish_figure(fig, ax)
        fig, ax = new_figure("Fig. 3b: NFE vs forward time", "nfe_forward per batch", "time_ms per batch")
        for solver, g in groups.items():
            tol_line(ax, g, "nfe_forward", "time_ms", solver)
        figures["fig3b_nfe_vs_time"] = finish_figure(fig, ax)
    return figures


def sweep_report(meta: dict[str, Any], rows: list[dict]) -> Report:
    """Report of one checkpoint's test-time sweep (what eval.py writes)."""
    figures = sweep_figures(rows)
    verdict = meta.get("still_an_ode")
    ode_text = verdict["text"] if verdict else (
        "Not applicable (no ODE block)." if not by_solver(rows) else
        "Not evaluated: the sweep needs the training solver at the training tolerance and at 100× tighter.")
    sections = [
        Section("Checkpoint", f"`{meta['checkpoint']}` — {meta['backbone']} on {meta['dataset']}, trained with "
                              f"{meta.get('train_setting') or 'no ODE solver'}; {meta['images']} test images"
                              f"{' (limited)' if meta.get('limited') else ''}, device {meta['device']}."),
        Section("Sweep", sweep_table(rows) + "\n\n" + SWEEP_NOTES.format(ref=meta.get("reference"))),
        Section("Is it still an ODE? (Ott et al., ICLR 2021)", ode_text),
    ]
    if figures:
        sections.append(Section("Plots", "", list(figures)))
    return Report(f"Test-time sweep: {Path(meta['checkpoint']).parent.name}", sections, figures)


def write_sweep_files(meta: dict[str, Any], rows: list[dict], out_dir: Path) -> None:
    """sweep.csv and sweep.json, the sources every report and plot is rebuilt from."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "sweep.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(SWEEP_COLUMNS), extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: r.get(k) for k in SWEEP_COLUMNS})
    (out_dir / "sweep.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
