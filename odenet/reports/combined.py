"""The combined report over many training runs: the runs table, Table 1 of Chen et al. 2018 with
the paper's numbers beside ours, the four panels of its Figure 3, accuracy / memory against NFE
and tolerance, and what the runs measured, stated as numbers."""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import TYPE_CHECKING

from odenet.reports.methods import fig_pareto, methods_csv, methods_table
from odenet.reports.per_sample_compare import comparison_figure, comparison_text
from odenet.reports.render import Report, Section, finish_figure, new_figure, pad_x
from odenet.reports.runs import Run, label_runs
from odenet.reports.seeds import group_methods, has_seeds
from odenet.reports.study import study_sections
from odenet.reports.study_figures import PALETTE
from odenet.reports.sweep import by_solver, legend_note, still_an_ode, tol_line
from odenet.reports.tables import PAPER_DATASET, runs_table, sweep_points_csv, table1

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float] | None:
    """Least-squares slope and intercept; None when x does not vary."""
    if len(xs) < 2 or len(set(xs)) < 2:
        return None
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    return slope, my - slope * mx


def _epoch_means(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    """Epochs in order and the mean of ``key`` over each epoch's rows that have it."""
    per_epoch = defaultdict(list)
    for r in rows:
        if key in r:
            per_epoch[r["epoch"]].append(r[key])
    epochs = sorted(per_epoch)
    return epochs, [statistics.fmean(per_epoch[e]) for e in epochs]


def sweep_note(run: Run) -> str:
    """" (250 images, limited)": where a run's sweep numbers come from, for its legend entries."""
    return f" ({legend_note(run.sweep_meta)})"


def test_note(run: Run) -> str:
    """" (1,000 test images)": where a run's final test numbers come from, for its legend entries."""
    return f" ({run.test_images:,} test images)" if run.test_images else " (test images not recorded)"


SOLVER_STYLES = ("-", "--", ":", "-.")


def colour(run: Run) -> str | None:
    """The run's colour, the same in every figure of a report (set by :func:`combined_report`)."""
    return getattr(run, "colour", None)


def _sweep_lines(ax: Axes, run: Run, rows: list[dict], xkey: str, ykey: str) -> None:
    """One line per solver of a run's sweep (the run's colour, a line style per solver)."""
    for k, (solver, group) in enumerate(by_solver(rows).items()):
        label = run.label if solver == run.config.get("solver") else f"{run.label}, evaluated with {solver}"
        tol_line(ax, group, xkey, ykey, label + sweep_note(run), colour(run), SOLVER_STYLES[k % len(SOLVER_STYLES)])


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
                             "forward time per test batch (ms, median, min–max)")
        for run in swept:
            _sweep_lines(ax, run, [row for row in run.sweep if row.get("nfe_forward")], "nfe_forward", "time_ms")
        return finish_figure(fig, ax)
    fig, ax = new_figure("Fig. 3b: NFE vs forward time (training steps)", "nfe_forward", "time_forward_ms")
    for run in runs:
        rows = [r for r in run.train_rows if "nfe_forward" in r]
        if rows:
            ax.scatter([r["nfe_forward"] for r in rows], [r["time_forward_ms"] for r in rows], s=6, alpha=0.5,
                       color=colour(run), label=f"{run.label} (batch {run.config.get('batch_size', '—')})")
    pad_x(ax)
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
        ax.scatter(xs, ys, s=6, alpha=0.5, color=colour(run),
                   label=f"{run.label} (batch {run.config.get('batch_size', '—')})")
    if adjoint:
        ax.plot([0, top], [0, top], "k--", lw=0.8, label="backward = forward")
        ax.plot([0, top], [0, top / 2], "k:", lw=0.8, label="backward = forward / 2 (paper)")
    return finish_figure(fig, ax, None if adjoint else "no adjoint runs: backward NFE is 0 with direct backprop;\n"
                                                        "add --adjoint runs to the grid")


MARKERS = ("o", "s", "^", "D", "v", "P")


def fig3d(runs: list[Run]) -> Figure:
    """Mean forward NFE per epoch of each ODE run (and backward NFE of adjoint runs).

    Runs often share their NFE exactly (direct and adjoint solve the same forward pass): each run
    gets its own hollow marker, drawn smaller than the one before, so a line behind another shows.
    """
    from matplotlib.ticker import MaxNLocator

    fig, ax = new_figure("Fig. 3d: NFE over training", "epoch", "mean NFE per step")
    ode = [r for r in runs if r.is_ode]
    for k, run in enumerate(ode):
        style = {"marker": MARKERS[k % len(MARKERS)], "markersize": 9 - 5 * k / max(len(ode), 1),
                 "markerfacecolor": "none", "alpha": 0.85}
        epochs, values = _epoch_means(run.train_rows, "nfe_forward")
        line = ax.plot(epochs, values, "-", color=colour(run), label=f"{run.label} forward", **style)[0]
        if run.adjoint:
            epochs, values = _epoch_means(run.train_rows, "nfe_backward")
            ax.plot(epochs, values, "--", color=line.get_color(), label=f"{run.label} backward", **style)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return finish_figure(fig, ax, None if ode else "no ODE runs")


def fig_acc_vs_nfe(runs: list[Run]) -> Figure:
    """Final test accuracy against test NFE; runs without an ODE block as horizontal lines."""
    fig, ax = new_figure("Test accuracy vs NFE", "test nfe_forward per batch", "test acc")
    for run in runs:
        test = run.final_test()
        if test and "nfe_forward" in test:
            ax.scatter([test["nfe_forward"]], [test["acc"]], color=colour(run), label=run.label + test_note(run))
        elif test:
            ax.axhline(test["acc"], ls="--", lw=0.8, color=colour(run), label=f"{run.label} (no ODE){test_note(run)}")
    pad_x(ax)
    return finish_figure(fig, ax)


def fig_acc_vs_tol(runs: list[Run]) -> Figure:
    """Each run's final test accuracy at its training tolerance (a large marker) and its test-time sweep (a
    line per solver, its own images), in the run's colour; lines never join different runs."""
    fig, ax = new_figure("Test accuracy vs tolerance", "tolerance", "test acc", logx=True)
    for run in runs:
        test = run.final_test()
        if run.config.get("rtol") and test:
            ax.scatter([run.config["rtol"]], [test["acc"]], s=60, marker="*", color=colour(run),
                       label=f"{run.label}: trained at this tolerance{test_note(run)}")
        for k, (solver, group) in enumerate(by_solver([r for r in run.sweep if r.get("tol")]).items()):
            points = sorted((r["tol"], r["acc"]) for r in group)
            with_solver = "" if solver == run.config.get("solver") else f" with {solver}"
            ax.plot(*zip(*points), marker="x", ls=SOLVER_STYLES[k % len(SOLVER_STYLES)], color=colour(run),
                    label=f"{run.label}: evaluated{with_solver} at other tolerances{sweep_note(run)}")
    swept = any(r.config.get("rtol") for r in runs) or any(r.sweep for r in runs)
    return finish_figure(fig, ax, None if swept else "no adaptive-solver runs")


def fig_memory_vs_nfe(runs: list[Run]) -> Figure:
    """act_mem_mb against NFE of each ODE run's training steps; fixed-depth runs as horizontal lines."""
    fig, ax = new_figure("Activation memory vs NFE (training steps)", "nfe_forward", "act_mem_mb")
    for run in runs:
        rows = [r for r in run.train_rows if "act_mem_mb" in r]
        if not rows:
            continue
        batch = run.config.get("batch_size", "—")
        if run.is_ode:
            ax.scatter([r["nfe_forward"] for r in rows], [r["act_mem_mb"] for r in rows], s=8, alpha=0.5,
                       marker="s" if run.adjoint else "o", color=colour(run), label=f"{run.label} (batch {batch})")
        else:
            ax.axhline(statistics.fmean(r["act_mem_mb"] for r in rows), ls="--", lw=0.8, color=colour(run),
                       label=f"{run.label} (fixed depth, batch {batch})")
    pad_x(ax)
    return finish_figure(fig, ax)


def measured_findings(runs: list[Run]) -> str:
    """What the runs show, stated as measured numbers (no claims carried over from the paper)."""
    lines = []
    for run in runs:
        if not run.is_ode:
            continue
        rows, batch, who = run.train_rows, run.config.get("batch_size", "—"), f"`{run.folder or run.name}`"
        if not rows:
            continue
        if run.adjoint:
            ratios = [r["nfe_backward"] / r["nfe_forward"] for r in rows if r.get("nfe_forward")]
            lines.append(f"- {who}: backward/forward NFE ratio median {statistics.median(ratios):.2f} "
                         f"(range {min(ratios):.2f}–{max(ratios):.2f}) over {len(ratios)} steps. The paper reports "
                         f"backward ≈ half of forward; this is what torchdiffeq's adjoint measured here.")
        fit = linear_fit([r["nfe_forward"] for r in rows], [r["act_mem_mb"] for r in rows])
        if fit:
            per_nfe = fit[0]
            lines.append(f"- {who}: act_mem_mb (training batch {batch}) grows by {per_nfe:.3f} MiB "
                         f"per extra forward NFE "
                         f"({'adjoint: flat expected' if run.adjoint else 'direct backprop: linear expected'}).")
        else:
            lines.append(f"- {who}: NFE did not vary across steps, so memory against NFE has no slope to fit "
                         f"(act_mem_mb {statistics.fmean(r['act_mem_mb'] for r in rows):.1f} at every step, "
                         f"batch {batch}).")
        per_nfe = [r["time_forward_ms"] / r["nfe_forward"] for r in rows[1:] if r.get("nfe_forward")]
        if per_nfe:
            lines.append(f"- {who}: forward pass {statistics.median(per_nfe):.2f} ms per NFE (median over "
                         f"{len(per_nfe)} steps of time_forward_ms / nfe_forward, stem and head included, first "
                         f"step left out as warm-up).")
        by_tol = {r["tol"]: r for r in run.sweep if r.get("tol")}
        if by_tol:
            verdict = still_an_ode(run.sweep, run.config.get("rtol"), run.config.get("solver"), run.dataset,
                                   run.sweep_meta.get("images"))
            if verdict:
                lines.append(f"- {who} (test-time sweep{sweep_note(run)}): {verdict['text']}")
    return "\n".join(lines) if lines else "No ODE runs among these runs."


def sweep_caption(runs: list[Run]) -> str:
    """Where the test-time sweeps' numbers come from, run by run, when any run has one."""
    lines = []
    for run in (r for r in runs if r.sweep):
        meta, test_images = run.sweep_meta, run.test_images
        images = meta.get("images")
        parts = [f"{images:,} test images" if isinstance(images, int) else "images not recorded"]
        if meta.get("limited") or (isinstance(images, int) and test_images and images < test_images):
            parts[0] += f" (**limited**; training's evaluation: {test_images:,})" if test_images else " (**limited**)"
        if meta.get("batch_size"):
            parts.append(f"batch {meta['batch_size']}")
        if meta.get("act_mem_batch_size"):
            parts.append(f"act_mem_mb at batch {meta['act_mem_batch_size']} "
                         f"(training's at {run.config.get('batch_size', '—')})")
        lines.append(f"- `{run.folder or run.name}`: {', '.join(parts)}.")
    return ("Test-time sweeps (Fig. 3a, 3b, accuracy against tolerance):\n\n" + "\n".join(lines)) if lines else ""


def combined_report(runs: list[Run], title: str = "odenet: training-run comparison") -> Report:
    """The report over ``runs``: runs table, Table 1, Figure 3 a–d, accuracy and memory plots, findings,
    and ``sweep_points.csv`` (every run's test-time sweep, tidy)."""
    label_runs(runs)
    for k, run in enumerate(runs):  # one colour per run in every figure (read by colour())
        run.colour = PALETTE[k % len(PALETTE)]
    methods = group_methods(runs)
    if has_seeds(methods):
        return seeded_report(runs, methods, title)
    adjoint_figure = ["fig3c_nfe_forward_vs_backward"] if any(r.is_ode and r.adjoint for r in runs) else []
    figures = {"fig3a_nfe_vs_error": fig3a(runs), "fig3b_nfe_vs_time": fig3b(runs),
               # no empty panel: without adjoint runs there is no backward solve to plot
               **({"fig3c_nfe_forward_vs_backward": fig3c(runs)} if adjoint_figure else {}),
               "fig3d_nfe_over_training": fig3d(runs),
               "acc_vs_nfe": fig_acc_vs_nfe(runs), "acc_vs_tol": fig_acc_vs_tol(runs),
               "memory_vs_nfe": fig_memory_vs_nfe(runs), "methods_pareto": fig_pareto(runs)}
    dataset = ", ".join(sorted({r.dataset for r in runs}))
    paper, others = table1(runs)
    if others:
        others = ("Runs not comparable with the paper (smoke: under 100 training batches an epoch or limited test "
                  "batches; short: under 5 epochs, or epochs cut to a batch budget; unfinished; "
                  f"or not {PAPER_DATASET}); no paper numbers beside them:\n\n" + others)
    sweeps = sweep_caption(runs)
    sections = [
        Section("Runs", f"Dataset: {dataset}. Test accuracy is the final model's on `test images` images; other "
                        f"columns are means over the last epoch's training steps at the training batch size "
                        f"(`batch`: train/test). `status` marks smoke runs (under 100 training batches an epoch, "
                        f"or limited test batches: their numbers only show the code runs) and short runs (under 5 "
                        f"epochs, or epochs cut to a budget of batches: trained on purpose, not converged)."
                        f"\n\n{runs_table(runs)}"),
        Section("Table 1 (Chen et al. 2018) with our measurements",
                "Test error of the final model; `act_mem_mb` = MiB of tensors saved for backward per training step "
                "(measured, not an O() claim), `peak_mem_mb` = CUDA peak (— on CPU); `time_step_ms` = forward + "
                "backward + optimizer per batch. The paper's rows are its MNIST numbers (60,000 training and "
                "10,000 test images); only finished, non-smoke MNIST runs stand beside them.\n\n" + paper
                + (f"\n\n{others}" if others else "")),
        Section("Figure 3", "(a) ODE-block output error against a much tighter reference solve, per test-time "
                            "tolerance; (b) forward time against NFE (test-time sweep where there is one, with "
                            "min–max bars where measured, else the training steps); (c) backward against forward "
                            "NFE of the adjoint runs' training steps (no panel without adjoint runs); (d) mean NFE per epoch."
                            + (f"\n\n{sweeps}" if sweeps else ""),
                ["fig3a_nfe_vs_error", "fig3b_nfe_vs_time", *adjoint_figure, "fig3d_nfe_over_training"]),
        Section("Accuracy, tolerance and memory", "Legends give the images (test) or batch size (training) behind "
                                                  "each curve.", ["acc_vs_nfe", "acc_vs_tol", "memory_vs_nfe"]),
        Section("Methods", "The study's levers side by side (`method`: the regularisers, ANODE channels or "
                           "first-step reuse a run trained with; `plain` for none). Test columns come from the "
                           "final evaluation (`test images`), training columns are means over the last epoch's "
                           "steps at batch `batch`; `time/epoch s` sums those steps' `time_step_ms`. The plot adds "
                           "each run's test-time sweep (small markers, on the sweep's own images) and the frontier "
                           "of the final test evaluations: no run beats a frontier point on both accuracy and NFE. "
                           "Also in `methods.csv`.\n\n" + methods_table(runs),
                ["methods_pareto"]),
        Section("What these runs measured", measured_findings(runs)),
    ]
    per_image = comparison_text(runs)
    if per_image:
        figures["per_sample_runs"] = comparison_figure(runs)
        sections.insert(-1, Section("Per-image NFE across runs", per_image, ["per_sample_runs"]))
    files = {"sweep_points.csv": sweep_points_csv(runs)} if any(r.sweep for r in runs) else {}
    files["methods.csv"] = methods_csv(runs)
    return Report(title, sections, figures, files)


def seeded_report(runs: list[Run], methods, title: str) -> Report:
    """A study over seeds: its answer per method first (:mod:`odenet.reports.study`), then what only single runs
    show (the adjoint's backward NFE, memory against NFE, every run's row)."""
    sections, figures = study_sections(methods)
    adjoint = any(r.is_ode and r.adjoint for r in runs)
    figures["memory_vs_nfe"] = fig_memory_vs_nfe(runs)
    if adjoint:
        figures["fig3c_nfe_forward_vs_backward"] = fig3c(runs)
    sections += [
        Section("Memory and the adjoint's backward NFE",
                "Activation memory against NFE of every run's training steps"
                + (", and backward against forward NFE of the adjoint runs' training steps" if adjoint else "")
                + " (legends give the batch).", ["memory_vs_nfe", *(["fig3c_nfe_forward_vs_backward"] if adjoint
                                                                    else [])]),
        Section("Runs", "Every run: final test accuracy and the last epoch's means (`status` marks smoke and short "
                        "runs).\n\n" + runs_table(runs)),
    ]
    files = {"sweep_points.csv": sweep_points_csv(runs)} if any(r.sweep for r in runs) else {}
    return Report(title, sections, figures, files)
