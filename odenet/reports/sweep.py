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
                 "steps_accepted", "steps_rejected", "ode_error", "time_ms", "time_ms_min", "time_ms_max",
                 "time_noisy", "images_per_s", "act_mem_mb", "peak_mem_mb", "flops", "images")
SWEEP_NOTES = (
    "`nfe_forward`: mean (min–max) function evaluations per test batch, including the 2 evaluations adaptive "
    "solvers spend choosing the first step. `ode_error`: relative L2 error of each ODE block's output against "
    "a reference solve of the same input ({ref}), the largest over blocks, averaged over batches. "
    "`flops/image`: fvcore count of stem and head once plus NFE × one field evaluation per ODE block "
    "(fvcore counts one multiply-add as one flop; element-wise ops are not counted). `act_mem_mb`: tensors a "
    "training step at this setting would save for backward (one batch). `peak_mem_mb`: CUDA only. "
    "`time_ms`: forward time per test batch; \u26a0 noisy: its spread is too large to read a trend.")
ODE_DROP_POINTS = 1.0  # accuracy drop (percentage points) at 100× tighter tolerance that flags a run


def tighter(tol: float) -> float:
    """tol / 100 without binary noise (1e-5 / 100 is 1.0000000000000001e-07)."""
    return float(f"{tol / 100:.6g}")


NUM_CLASSES = {"mnist": 10, "fashion-mnist": 10, "mnist-5k": 10, "cifar10": 10, "cifar100": 100}
# No verdict without evidence. Above chance by VERDICT_MARGIN: a model within 25 points of guessing has
# barely left its initialisation, so a drop (or none) at a tighter tolerance says nothing about what it
# learned. At least VERDICT_IMAGES images: then the 1-point threshold is >= 5 images changing their answer,
# not one or two (at 250 images, 3 images decide it).
VERDICT_MARGIN = 0.25
VERDICT_IMAGES = 500


def chance(dataset: str | None) -> float | None:
    """Accuracy of guessing, 1 / number of classes; None for a dataset this table does not know."""
    return 1 / NUM_CLASSES[dataset] if dataset in NUM_CLASSES else None


def still_an_ode(rows: list[dict], train_tol: float | None, solver: str | None, dataset: str | None = None,
                 images: int | None = None) -> dict | None:
    """Ott et al. (ICLR 2021): does accuracy survive a 100× tighter tolerance than training used?

    The verdict is withheld (``flagged`` None, ``text`` says why) unless the model is
    :data:`VERDICT_MARGIN` above chance on ``dataset`` and the accuracies come from at least
    :data:`VERDICT_IMAGES` images (``images``, else the rows' own ``images``).

    Returns:
        The accuracies at both tolerances, the drop in points, ``flagged`` (True, False or None) and a
        sentence (``text``); None when the sweep lacks the training solver at either tolerance.
    """
    if train_tol is None:
        return None
    by_tol = {(r["solver"], r["tol"]): r for r in rows if r.get("tol")}
    tight_tol = tighter(train_tol)
    at_train = by_tol.get((solver, train_tol))
    at_tight = by_tol.get((solver, tight_tol))
    if not at_train or not at_tight:
        return None
    return judge({"train_tol": train_tol, "tight_tol": tight_tol, "acc_train_tol": at_train["acc"],
                  "acc_tight_tol": at_tight["acc"]}, dataset, images or at_train.get("images"))


def judge(accs: dict, dataset: str | None, images: int | None) -> dict:
    """The verdict on ``accs`` (train_tol, tight_tol, acc_train_tol, acc_tight_tol), withheld without evidence.

    Also rebuilds a verdict saved in an older sweep.json under the current rule.
    """
    drop = 100 * (accs["acc_train_tol"] - accs["acc_tight_tol"])
    text = (f"accuracy at the training tolerance {accs['train_tol']:g}: {100 * accs['acc_train_tol']:.2f}%; at "
            f"{accs['tight_tol']:g}: {100 * accs['acc_tight_tol']:.2f}% (drop {drop:.2f} points"
            f"{f', {images:,} test images' if images else ''}). ")
    withheld = _no_evidence(accs["acc_train_tol"], dataset, images)
    bad = None if withheld else drop > ODE_DROP_POINTS
    text += (f"**No verdict**: {withheld}" if withheld else
             "**The network learned the discretisation, not an ODE.**" if bad else
             "Accuracy holds: the trained model behaves as an ODE at this tolerance.")
    keys = ("train_tol", "tight_tol", "acc_train_tol", "acc_tight_tol")
    return {**{k: accs[k] for k in keys}, "drop_points": drop, "flagged": bad, "images": images, "text": text}


def _no_evidence(acc: float, dataset: str | None, images: int | None) -> str | None:
    """Why the accuracies cannot carry a verdict, or None when they can."""
    guess = chance(dataset)
    if guess is None:
        return f"chance accuracy of dataset {dataset!r} is unknown, so it cannot be told from a trained model."
    if acc < guess + VERDICT_MARGIN:
        return (f"accuracy {100 * acc:.1f}% is within {100 * VERDICT_MARGIN:.0f} points of chance "
                f"({100 * guess:.0f}% on {dataset}): the model has not learned enough for a tolerance to matter.")
    if not images or images < VERDICT_IMAGES:
        return (f"{images or 'an unknown number of'} test images; a verdict needs at least {VERDICT_IMAGES} "
                f"(one point must be at least {VERDICT_IMAGES // 100} images changing their answer).")
    return None


def evidence(meta: dict[str, Any]) -> str:
    """Where a sweep's numbers come from: images, batch sizes, repeats; old sweep.json files lack some keys."""
    images = meta.get("images")
    parts = [f"{images:,} test images" if isinstance(images, int) else "test images: not recorded"]
    if meta.get("limited"):
        full = meta.get("train_test_images")
        parts[0] += (f" (**limited**: training's evaluation used {full:,})" if full else " (**limited**)")
    parts.append(f"batch {meta['batch_size']}" if meta.get("batch_size") else "batch size not recorded")
    if meta.get("act_mem_batch_size"):
        parts.append(f"`act_mem_mb` at batch {meta['act_mem_batch_size']}")
    timing = meta.get("timing") or {}
    if timing.get("repeats"):
        parts.append(f"`time_ms`: median (min–max) of {timing['repeats']} repeats after "
                     f"{timing.get('warmup', 0)} warm-up")
    return "; ".join(parts) + "."


def legend_note(meta: dict[str, Any]) -> str:
    """The images behind a sweep's curves, for legends: "250 images, limited"."""
    images = meta.get("images")
    note = f"{images:,} images" if isinstance(images, int) else "images not recorded"
    return note + (", limited" if meta.get("limited") else "")


def time_cell(r: dict) -> str:
    """Median time with its min–max, flagged where the spread is too large to read a trend."""
    cell = fmt(r.get("time_ms"), ".1f")
    if r.get("time_ms_min") is not None and r.get("time_ms_max") is not None:
        cell += f" ({r['time_ms_min']:.1f}–{r['time_ms_max']:.1f})"
    return cell + (" ⚠ noisy" if r.get("time_noisy") else "")


def sweep_table(rows: list[dict]) -> str:
    """The sweep as a Markdown table, one row per solver setting."""
    header = ["solver", "tol / steps", "acc", "loss", "nfe_forward (min–max)", "accepted", "rejected", "ode_error",
              "time_ms (min–max)", "images/s", "act_mem_mb", "peak_mem_mb", "flops/image", "images"]
    body = []
    for r in rows:
        setting = fmt(r["tol"], "g") if r.get("tol") else (f"{r['steps']} steps" if r.get("steps") else "—")
        if r.get("tol") and r.get("atol") not in (None, r["tol"]):
            setting += f" (atol {r['atol']:g})"
        nfe = (f"{r['nfe_forward']:.1f} ({r['nfe_forward_min']}–{r['nfe_forward_max']})"
               if r.get("nfe_forward") is not None else "—")
        body.append([r.get("solver") or "—", setting, fmt(r["acc"]), fmt(r["loss"]), nfe,
                     fmt(r.get("steps_accepted"), ".1f"), fmt(r.get("steps_rejected"), ".1f"),
                     fmt(r.get("ode_error"), ".2e"), time_cell(r), fmt(r.get("images_per_s"), ".0f"),
                     fmt(r.get("act_mem_mb"), ".1f"), fmt(r.get("peak_mem_mb"), ".1f"), fmt(r.get("flops"), ".3g"),
                     fmt(r.get("images"), ",")])
    return md_table(header, body)


def by_solver(rows: list[dict]) -> dict[str, list[dict]]:
    """Sweep rows grouped by solver, in order of first appearance; rows without a solver left out."""
    groups = defaultdict(list)
    for r in rows:
        if r.get("solver"):
            groups[r["solver"]].append(r)
    return groups


def tol_line(ax: Axes, rows: list[dict], xkey: str, ykey: str, label: str, color: str | None = None,
             linestyle: str = "-") -> None:
    """Points of one checkpoint and solver joined from loose to tight setting, each labelled with its tolerance
    (or steps); time against NFE with min–max error bars where the sweep measured them."""
    rows = sorted(rows, key=lambda r: (-(r.get("tol") or 0), r.get("steps") or 0))
    if not rows:
        return
    xs, ys = [r[xkey] for r in rows], [r[ykey] for r in rows]
    line = ax.plot(xs, ys, marker="o", ls=linestyle, color=color, label=label)[0]
    if ykey == "time_ms" and all(r.get("time_ms_min") is not None and r.get("time_ms_max") is not None
                                 for r in rows):  # min–max over repeats, one bar per point
        ax.vlines(xs, [r["time_ms_min"] for r in rows], [r["time_ms_max"] for r in rows], color=line.get_color(),
                  lw=1.2, alpha=0.7)
    for k, r in enumerate(rows):  # above and below in turn, so neighbouring labels do not overlap
        text = f"{r['tol']:g}" if r.get("tol") else f"{r.get('steps')} st"
        ax.annotate(text, (r[xkey], r[ykey]), textcoords="offset points", xytext=(4, 5 if k % 2 == 0 else -11),
                    fontsize=7, color=line.get_color())


def sweep_figures(rows: list[dict], note: str = "") -> dict[str, Figure]:
    """Accuracy, NFE and flops against tolerance (adaptive solvers), and Fig. 3a/3b: one line per solver.

    ``note`` (the images behind every number: one checkpoint, one test set) goes under each title.
    """
    figures = {}
    groups = by_solver(rows)
    sub = f"\n{note}" if note else ""
    adaptive = {s: sorted((r for r in g if r.get("tol")), key=lambda r: -r["tol"]) for s, g in groups.items()}
    adaptive = {s: g for s, g in adaptive.items() if g}
    if adaptive:
        for name, key, ylabel, logy in (("acc_vs_tol", "acc", "test acc", False),
                                        ("nfe_vs_tol", "nfe_forward", "nfe_forward per batch", False),
                                        ("flops_vs_tol", "flops", "flops per image", True)):
            fig, ax = new_figure(f"{ylabel} vs tolerance{sub}", "tolerance", ylabel, logx=True, logy=logy)
            for solver, g in adaptive.items():
                ax.plot([r["tol"] for r in g], [r[key] for r in g], "o-", label=solver)
            figures[name] = finish_figure(fig, ax)
    if groups:
        fig, ax = new_figure(f"Fig. 3a: NFE vs numerical error{sub}", "nfe_forward per batch", "ODE block error",
                             logy=True)
        for solver, g in groups.items():
            tol_line(ax, [r for r in g if r.get("ode_error")], "nfe_forward", "ode_error", solver)
        figures["fig3a_nfe_vs_error"] = finish_figure(fig, ax)
        fig, ax = new_figure(f"Fig. 3b: NFE vs forward time{sub}", "nfe_forward per batch",
                             "time_ms per batch (median, min–max)")
        for solver, g in groups.items():
            tol_line(ax, g, "nfe_forward", "time_ms", solver)
        figures["fig3b_nfe_vs_time"] = finish_figure(fig, ax)
    return figures


def sweep_report(meta: dict[str, Any], rows: list[dict]) -> Report:
    """Report of one checkpoint's test-time sweep (what eval.py writes).

    The saved ODE verdict is checked again against the evidence rule (accuracy above chance, enough
    images), so a sweep.json written before that rule reads as it should now.
    """
    figures = sweep_figures(rows, legend_note(meta))
    saved = meta.get("still_an_ode")
    verdict = judge(saved, meta.get("dataset"), meta.get("images") or saved.get("images")) if saved else None
    ode_text = verdict["text"] if verdict else (
        "Not applicable (no ODE block)." if not by_solver(rows) else
        "Not evaluated: the sweep needs the training solver at the training tolerance and at 100× tighter.")
    notes = "".join(f"\n\n**Note:** {n}" for n in meta.get("notes") or [])
    sections = [
        Section("Checkpoint", f"`{meta['checkpoint']}` — {meta['backbone']} on {meta['dataset']}, trained with "
                              f"{meta.get('train_setting') or 'no ODE solver'}; device {meta['device']}. "
                              f"Every number below comes from {evidence(meta)}{notes}"),
        Section("Sweep", sweep_table(rows) + "\n\n" + SWEEP_NOTES.format(ref=meta.get("reference"))),
        Section("Is it still an ODE? (Ott et al., ICLR 2021)", ode_text),
    ]
    if figures:
        sections.append(Section("Plots", f"Every curve: {legend_note(meta)}.", list(figures)))
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
