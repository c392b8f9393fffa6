"""The combined report over many training runs: the runs table, Table 1 of Chen et al. 2018 with
the paper's numbers beside ours, the four panels of its Figure 3, accuracy / memory against NFE
and tolerance, and what the runs measured, stated as numbers."""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import TYPE_CHECKING

from odenet.reports.render import Report, Section, finish_figure, fmt, md_table, new_figure
from odenet.reports.runs import Run
from odenet.reports.sweep import by_solver, still_an_ode, tol_line

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# Chen et al. 2018, Table 1 (MNIST). Memory and time are the paper's asymptotic claims:
# L = number of layers, L~ = number of function evaluations.
PAPER_TABLE1 = {
    "mlp": {"error": "1.60%", "params": "0.24 M", "memory": "-", "time": "-"},
    "resnet": {"error": "0.41%", "params": "0.60 M", "memory": "O(L)", "time": "O(L)"},
    "rknet": {"error": "0.47%", "params": "0.22 M", "memory": "O(L~)", "time": "O(L~)"},
    "odenet": {"error": "0.42%", "params": "0.22 M", "memory": "O(1)", "time": "O(L~)"},
}
TABLE1_ORDER = ("mlp", "resnet", "rknet", "odenet")


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float] | None:
    """Least-squares slope and intercept; None when x does not vary."""
    if len(xs) < 2 or len(set(xs)) < 2:
        return None
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    return slope, my - slope * mx


def runs_table(runs: list[Run]) -> str:
    """One row per run: final test accuracy and the last epoch's mean measurements."""
    header = ["run", "epochs", "test acc", "best acc", "nfe_forward", "nfe_backward", "act_mem_mb", "peak_mem_mb",
              "time_step_ms", "params", "status"]
    rows = []
    for run in runs:
        means, test = run.last_epoch_means(), run.final_test()
        s = run.summary or {}
        rows.append([f"`{run.name}`", fmt(test.get("epoch"), "d"), fmt(test.get("acc")), fmt(s.get("best_acc")),
                     fmt(means.get("nfe_forward"), ".1f"), fmt(means.get("nfe_backward"), ".1f"),
                     fmt(means.get("act_mem_mb"), ".1f"), fmt(means.get("peak_mem_mb"), ".1f"),
                     fmt(means.get("time_step_ms"), ".0f"), fmt(s.get("params"), ","),
                     "complete" if run.summary else "incomplete"])
    return md_table(header, rows)


def table1(runs: list[Run]) -> str:
    """Chen et al. 2018 Table 1 with our measured figures beside the paper's."""
    header = ["method", "test error", "paper", "params", "paper", "act_mem_mb", "peak_mem_mb", "paper memory",
              "time_step_ms", "nfe_forward", "paper time"]
    rows = []
    by_backbone = defaultdict(list)
    for run in runs:
        by_backbone[run.config["backbone"]].append(run)
    for backbone in TABLE1_ORDER + tuple(b for b in sorted(by_backbone) if b not in TABLE1_ORDER):
        paper = PAPER_TABLE1.get(backbone, {"error": "—", "params": "—", "memory": "—", "time": "—"})
        for run in by_backbone.get(backbone) or [None]:
            if run is None:
                rows.append([backbone + " (not run)", "—", paper["error"], "—", paper["params"], "—", "—",
                             paper["memory"], "—", "—", paper["time"]])
                continue
            means, test = run.last_epoch_means(), run.final_test()
            params = (run.summary or {}).get("params")
            rows.append([run.label, fmt(100 * (1 - test["acc"]), ".2f") + "%" if test else "—", paper["error"],
                         fmt(params / 1e6, ".3f") + " M" if params else "—", paper["params"],
                         fmt(means.get("act_mem_mb"), ".1f"), fmt(means.get("peak_mem_mb"), ".1f"), paper["memory"],
                         fmt(means.get("time_step_ms"), ".0f"), fmt(means.get("nfe_forward"), ".1f"),
                         paper["time"]])
    return md_table(header, rows)


def _epoch_means(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    """Epochs in order and the mean of ``key`` over each epoch's rows that have it."""
    per_epoch = defaultdict(list)
    for r in rows:
        if key in r:
            per_epoch[r["epoch"]].append(r[key])
    epochs = sorted(per_epoch)
    return epochs, [statistics.fmean(per_epoch[e]) for e in epochs]


def _sweep_lines(ax: Axes, run: Run, rows: list[dict], xkey: str, ykey: str) -> None:
    """One line per solver of a run's sweep: a sweep over several solvers is several curves."""
    for solver, group in by_solver(rows).items():
        label = run.label if solver == run.config.get("solver") else f"{run.label}, evaluated with {solver}"
        tol_line(ax, group, xkey, ykey, label)


def fig3a(runs: list[Run]) -> Figure:
    """ODE-block error against forward NFE across each run's test-time sweep, one line per solver."""
    fig, ax = new_figure("Fig. 3a: NFE vs numerical error (test-time sweep)", "nfe_forward", "ODE block error",
                         logy=True)
    for run in runs:
        _sweep_lines(ax, run, [r for r in run.sweep if r.get("ode_error")], "nfe_forward", "ode_error")
    has = any(r.get("ode_error") for run in runs for r in run.sweep)
    return finish_figure(fig, ax, None if has else
                         "no test-time sweep in these runs:\nrun eval.py --checkpoint RUN/last.pt")


def fig3b(runs: list[Run]) -> Figure:
    """Forward time against NFE: test-time sweeps span the NFE range (one line per run); without
    them, the training steps (whose NFE varies little at a fixed tolerance)."""
    swept = [r for r in runs if r.sweep and any(row.get("nfe_forward") for row in r.sweep)]
    if swept:
        fig, ax = new_figure("Fig. 3b: NFE vs forward time (test-time sweep)", "nfe_forward per batch",
                             "forward time per test batch (ms)")
        for run in swept:
            _sweep_lines(ax, run, [row for row in run.sweep if row.get("nfe_forward")], "nfe_forward", "time_ms")
        return finish_figure(fig, ax)
    fig, ax = new_figure("Fig. 3b: NFE vs forward time (training steps)", "nfe_forward", "time_forward_ms")
    for run in runs:
        rows = [r for r in run.train_rows if "nfe_forward" in r]
        if rows:
            ax.scatter([r["nfe_forward"] for r in rows], [r["time_forward_ms"] for r in rows], s=6, alpha=0.5,
                       label=run.label)
    return finish_figure(fig, ax, None if any(r.is_ode for r in runs) else "no ODE runs")


def fig3c(runs: list[Run]) -> Figure:
    """Backward against forward NFE of the adjoint runs' training steps, with the y = x and y = x / 2 lines."""
    fig, ax = new_figure("Fig. 3c: NFE forward vs backward (adjoint runs)", "nfe_forward", "nfe_backward")
    adjoint = [r for r in runs if r.is_ode and r.adjoint]
    top = 1
    for run in adjoint:
        xs = [r["nfe_forward"] for r in run.train_rows]
        ys = [r["nfe_backward"] for r in run.train_rows]
        top = max([top, *xs, *ys])
        ax.scatter(xs, ys, s=6, alpha=0.5, label=run.label)
    if adjoint:
        ax.plot([0, top], [0, top], "k--", lw=0.8, label="backward = forward")
        ax.plot([0, top], [0, top / 2], "k:", lw=0.8, label="backward = forward / 2 (paper)")
    return finish_figure(fig, ax, None if adjoint else "no adjoint runs: backward NFE is 0 with direct backprop;\n"
                                                        "add --adjoint runs to the grid")


def fig3d(runs: list[Run]) -> Figure:
    """Mean forward NFE per epoch of each ODE run (and backward NFE of adjoint runs)."""
    fig, ax = new_figure("Fig. 3d: NFE over training", "epoch", "mean NFE per step")
    for run in runs:
        if not run.is_ode:
            continue
        epochs, values = _epoch_means(run.train_rows, "nfe_forward")
        line = ax.plot(epochs, values, "o-", label=f"{run.label} forward")[0]
        if run.adjoint:
            epochs, values = _epoch_means(run.train_rows, "nfe_backward")
            ax.plot(epochs, values, "s--", color=line.get_color(), label=f"{run.label} backward")
    return finish_figure(fig, ax, None if any(r.is_ode for r in runs) else "no ODE runs")


def fig_acc_vs_nfe(runs: list[Run]) -> Figure:
    """Final test accuracy against test NFE; runs without an ODE block as horizontal lines."""
    fig, ax = new_figure("Test accuracy vs NFE", "test nfe_forward per batch", "test acc")
    for run in runs:
        test = run.final_test()
        if test and "nfe_forward" in test:
            ax.scatter([test["nfe_forward"]], [test["acc"]], label=run.label)
        elif test:
            ax.axhline(test["acc"], ls="--", lw=0.8, color="gray", label=f"{run.label} (no ODE)")
    return finish_figure(fig, ax)


def fig_acc_vs_tol(runs: list[Run]) -> Figure:
    """Final test accuracy against the training tolerance (one line per kind of run) and against the
    test-time tolerances of each run's sweep (one line per solver)."""
    fig, ax = new_figure("Test accuracy vs tolerance", "tolerance", "test acc", logx=True)
    trained = defaultdict(list)  # one line per kind of run: backbone, solver, direct or adjoint
    for r in runs:
        if r.config.get("rtol") and r.final_test():
            kind = f"{r.config['backbone']} {r.config['solver']} {'adjoint' if r.adjoint else 'direct'}"
            trained[kind].append((r.config["rtol"], r.final_test()["acc"]))
    for kind, points in trained.items():
        ax.plot(*zip(*sorted(points)), "o-", label=f"{kind}, trained at this tolerance")
    for run in runs:
        for solver, group in by_solver([r for r in run.sweep if r.get("tol")]).items():
            points = sorted((r["tol"], r["acc"]) for r in group)
            with_solver = "" if solver == run.config.get("solver") else f" with {solver}"
            ax.plot(*zip(*points), "x--", label=f"{run.label}: evaluated{with_solver} at other tolerances")
    return finish_figure(fig, ax, None if trained or any(r.sweep for r in runs) else "no adaptive-solver runs")


def fig_memory_vs_nfe(runs: list[Run]) -> Figure:
    """act_mem_mb against NFE of each ODE run's training steps; fixed-depth runs as horizontal lines."""
    fig, ax = new_figure("Activation memory vs NFE (training steps)", "nfe_forward", "act_mem_mb")
    for run in runs:
        rows = [r for r in run.train_rows if "act_mem_mb" in r]
        if not rows:
            continue
        if run.is_ode:
            ax.scatter([r["nfe_forward"] for r in rows], [r["act_mem_mb"] for r in rows], s=8, alpha=0.5,
                       marker="s" if run.adjoint else "o", label=run.label)
        else:
            ax.axhline(statistics.fmean(r["act_mem_mb"] for r in rows), ls="--", lw=0.8, color="gray",
                       label=f"{run.label} (fixed depth)")
    return finish_figure(fig, ax)


def measured_findings(runs: list[Run]) -> str:
    """What the runs show, stated as measured numbers (no claims carried over from the paper)."""
    lines = []
    for run in runs:
        if not run.is_ode:
            continue
        rows = run.train_rows
        if run.adjoint and rows:
            ratios = [r["nfe_backward"] / r["nfe_forward"] for r in rows if r.get("nfe_forward")]
            lines.append(f"- `{run.name}`: backward/forward NFE ratio median {statistics.median(ratios):.2f} "
                         f"(range {min(ratios):.2f}–{max(ratios):.2f}) over {len(ratios)} steps. The paper reports "
                         f"backward ≈ half of forward; this is what torchdiffeq's adjoint measured here.")
        fit = linear_fit([r["nfe_forward"] for r in rows], [r["act_mem_mb"] for r in rows])
        if fit:
            per_nfe = fit[0]
            lines.append(f"- `{run.name}`: act_mem_mb grows by {per_nfe:.3f} MiB per extra forward NFE "
                         f"({'adjoint: flat expected' if run.adjoint else 'direct backprop: linear expected'}).")
        else:
            lines.append(f"- `{run.name}`: NFE did not vary across steps, so memory against NFE has no slope to fit "
                         f"(act_mem_mb {statistics.fmean(r['act_mem_mb'] for r in rows):.1f} at every step).")
        per_nfe = [r["time_forward_ms"] / r["nfe_forward"] for r in rows[1:] if r.get("nfe_forward")]
        if per_nfe:
            lines.append(f"- `{run.name}`: forward pass {statistics.median(per_nfe):.2f} ms per NFE (median over "
                         f"{len(per_nfe)} steps of time_forward_ms / nfe_forward, stem and head included, first "
                         f"step left out as warm-up).")
        by_tol = {r["tol"]: r for r in run.sweep if r.get("tol")}
        if by_tol:
            verdict = still_an_ode(run.sweep, run.config.get("rtol"), run.config.get("solver"))
            if verdict:
                lines.append(f"- `{run.name}`: {verdict['text']}")
    return "\n".join(lines) if lines else "No ODE runs among these runs."


def combined_report(runs: list[Run], title: str = "odenet: training-run comparison") -> Report:
    """The report over ``runs``: runs table, Table 1, Figure 3 a–d, accuracy and memory plots, findings."""
    figures = {"fig3a_nfe_vs_error": fig3a(runs), "fig3b_nfe_vs_time": fig3b(runs),
               "fig3c_nfe_forward_vs_backward": fig3c(runs), "fig3d_nfe_over_training": fig3d(runs),
               "acc_vs_nfe": fig_acc_vs_nfe(runs), "acc_vs_tol": fig_acc_vs_tol(runs),
               "memory_vs_nfe": fig_memory_vs_nfe(runs)}
    dataset = ", ".join(sorted({r.config["dataset"] for r in runs}))
    sections = [
        Section("Runs", f"Dataset: {dataset}. Test accuracy is the final model's; other columns are means over the "
                        f"last epoch's training steps.\n\n{runs_table(runs)}"),
        Section("Table 1 (Chen et al. 2018) with our measurements",
                "Test error of the final model; `act_mem_mb` = MiB of tensors saved for backward per step "
                "(measured, not an O() claim), `peak_mem_mb` = CUDA peak (— on CPU); `time_step_ms` = forward + "
                "backward + optimizer per batch. The paper's columns are its MNIST numbers (160 epochs on 60,000 "
                "images), so they compare with ours only for runs with that recipe.\n\n" + table1(runs)),
        Section("Figure 3", "(a) ODE-block output error against a much tighter reference solve, per test-time "
                            "tolerance; (b) forward time against NFE (test-time sweep where there is one, else the "
                            "training steps); (c) backward against forward NFE of the adjoint runs' training "
                            "steps; (d) mean NFE per epoch.",
                ["fig3a_nfe_vs_error", "fig3b_nfe_vs_time", "fig3c_nfe_forward_vs_backward",
                 "fig3d_nfe_over_training"]),
        Section("Accuracy, tolerance and memory", "", ["acc_vs_nfe", "acc_vs_tol", "memory_vs_nfe"]),
        Section("What these runs measured", measured_findings(runs)),
    ]
    return Report(title, sections, figures)
