"""The study's methods side by side: what each NFE-reduction lever bought and cost (torch-free).

One row per training run: its method (the dynamics levers it used, :func:`odenet.naming.method_label`),
final test accuracy and test ``nfe_forward`` at the training tolerance, training NFE per step, training
time per epoch, ``act_mem_mb`` and parameters; and an accuracy-against-NFE plot over methods and
test-time tolerances, whose upper-left frontier (Pareto) is what a cheaper ODE-Net must beat.
"""

from __future__ import annotations

import csv
import io

from matplotlib.figure import Figure

from odenet.naming import method_label
from odenet.reports.render import finish_figure, fmt, md_table, new_figure
from odenet.reports.runs import Run

METHOD_COLUMNS = ("run", "backbone", "dataset", "method", "status", "acc", "nfe_forward", "train_nfe_forward",
                  "train_nfe_backward", "time_epoch_s", "act_mem_mb", "params", "test_images", "batch_size")


def method_row(run: Run) -> dict:
    """The run's figures as :data:`METHOD_COLUMNS` (None where not measured)."""
    test, means, train = run.final_test(), run.last_epoch_means(), run.train_rows
    last = [r for r in train if r["epoch"] == train[-1]["epoch"]] if train else []
    step_ms = [r["time_step_ms"] for r in last if "time_step_ms" in r]
    return {"run": run.folder or run.name, "backbone": run.config.get("backbone"), "dataset": run.dataset,
            "method": method_label(run.config) if run.is_ode else "—", "status": run.status,
            "acc": test.get("acc"), "nfe_forward": test.get("nfe_forward"),
            "train_nfe_forward": means.get("nfe_forward"), "train_nfe_backward": means.get("nfe_backward"),
            "time_epoch_s": sum(step_ms) / 1e3 if step_ms else None, "act_mem_mb": means.get("act_mem_mb"),
            "params": (run.summary or {}).get("params"), "test_images": test.get("images"),
            "batch_size": run.config.get("batch_size")}


def methods_table(runs: list[Run]) -> str:
    header = ["run", "method", "status", "test acc", "test nfe_forward", "train nfe_forward", "train nfe_backward",
              "time/epoch s", "act_mem_mb", "params", "test images", "batch"]
    body = []
    for run in runs:
        r = method_row(run)
        body.append([run.label, r["method"], r["status"], fmt(r["acc"]), fmt(r["nfe_forward"], ".1f"),
                     fmt(r["train_nfe_forward"], ".1f"), fmt(r["train_nfe_backward"], ".1f"),
                     fmt(r["time_epoch_s"], ".1f"), fmt(r["act_mem_mb"], ".1f"), fmt(r["params"], ","),
                     fmt(r["test_images"], ","), fmt(r["batch_size"], "d")])
    return md_table(header, body)


def methods_csv(runs: list[Run]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(METHOD_COLUMNS))
    writer.writeheader()
    for run in runs:
        writer.writerow(method_row(run))
    return out.getvalue()


def pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both axes (fewer NFE and higher accuracy), by NFE."""
    front, best = [], float("-inf")
    for nfe, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if acc > best:
            front.append((nfe, acc))
            best = acc
    return front


def fig_pareto(runs: list[Run]) -> Figure:
    """Test accuracy against test NFE of every ODE run, at its training tolerance (large markers) and at
    the tolerances of its test-time sweep (small; their own images), with the frontier over the final
    test evaluations (one image set, so one frontier)."""
    fig, ax = new_figure("Accuracy vs NFE across methods and tolerances", "test nfe_forward per batch", "test acc")
    points = []
    for run in runs:
        test = run.final_test()
        if not run.is_ode or "nfe_forward" not in test:
            continue
        marker = ax.scatter([test["nfe_forward"]], [test["acc"]], s=40, color=getattr(run, "colour", None),
                            label=f"{run.label} ({test.get('images', '?')} images)")
        points.append((test["nfe_forward"], test["acc"]))
        sweep = [r for r in run.sweep if r.get("tol") and r.get("nfe_forward") is not None]
        if sweep:  # other images than the final test's: labelled with theirs, and kept off the frontier
            images = (run.sweep_meta or {}).get("images", "?")
            limited = ", limited" if (run.sweep_meta or {}).get("limited") else ""
            ax.scatter([r["nfe_forward"] for r in sweep], [r["acc"] for r in sweep], s=12, alpha=0.6,
                       color=marker.get_facecolor()[0], label=f"{run.label} sweep ({images} images{limited})")
    if points:
        front = pareto(points)
        ax.plot([p[0] for p in front], [p[1] for p in front], "kx--", lw=0.8,
                label="Pareto frontier (final test evaluations)")
    return finish_figure(fig, ax, None if points else "no ODE runs with a test NFE")
