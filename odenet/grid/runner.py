"""Run a grid: check every point, train the unfinished ones with the chosen engine, write one report.

What it prints: a line per finished point with its whole time (training and its test-time sweep), an
estimate of the time left after each, and at the end a table of every point (:func:`summary_table`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from odenet.config import build_parser
from odenet.errors import RunFailure
from odenet.grid import engines
from odenet.grid.job import evaluate_run
from odenet.grid.launch import LaunchOptions, Progress, check_launch, gpu_slots, point_threads, visible_gpus
from odenet.grid.plan import GridArgs, GridPlan, expand, load_plan
from odenet.grid.points import DONE, point_state, prepare, run_dir_of
from odenet.naming import run_label
from odenet.reports import combined_report, find_runs, run_status, write_report
from odenet.run.tensorboard import write_report as write_tensorboard_report
from odenet.run.tensorboard import write_study
from odenet.train.config import TrainConfig


def run_grid(plan: GridPlan, launch: LaunchOptions | None = None) -> tuple[list[dict], Path]:
    """Train every run of the plan (skipping finished ones), sweep ODE runs, write the combined report.

    Raises:
        ConfigError: a bad point or run directory, before anything is written.
        RunFailure: some points failed (each reported); the report of the others is written.
        Interrupted: SIGINT/SIGTERM; the running points checkpointed, no report.
    """
    launch = launch or plan.launch
    check_launch(launch)
    configs = expand(plan)
    states = [point_state(cfg) for cfg in configs]  # every point checked before any is touched
    todo = [cfg for cfg, state in zip(configs, states) if state != DONE]
    at_once = (f"; {min(launch.jobs, len(todo))} at a time, each run's output in its train.log"
               if launch.launcher == "local" and launch.jobs > 1 and len(todo) > 1 else "")
    print(f"grid: {len(configs)} runs in {plan.out_dir} ({len(configs) - len(todo)} already complete{at_once})",
          flush=True)
    progress = Progress(len(configs), len(configs) - len(todo))
    try:
        records = _run(plan, launch, [prepare(cfg, s) for cfg, s in zip(configs, states) if s != DONE], progress)
    finally:
        progress.close()
    for cfg, state in zip(configs, states):  # runs finished earlier, swept now if their sweep is missing
        if state == DONE and plan.eval is not None and cfg.solver is not None:
            evaluate_run(run_dir_of(cfg), plan.eval)
    return _report(plan, configs, records)


def _run(plan: GridPlan, launch: LaunchOptions, todo: list[TrainConfig], progress: Progress) -> list[dict]:
    if not todo:
        return []
    if launch.launcher == "submitit":
        # On Slurm a task's threads are its CPUs; the local executor starts every job at once.
        return engines.run_submitit(_specs(plan, todo, point_threads(launch)), launch, Path(plan.out_dir), progress)
    if launch.jobs == 1:
        return engines.run_inline(_specs(plan, todo, point_threads(launch)), progress)
    gpus = visible_gpus(plan.base.get("device", TrainConfig.device))
    slots = gpu_slots(launch.jobs, launch.jobs_per_gpu, gpus)
    if len(slots) < launch.jobs:
        print(f"--jobs {launch.jobs}: {len(gpus)} GPUs x --jobs-per-gpu {launch.jobs_per_gpu} run "
              f"{len(slots)} points at a time", flush=True)
    return engines.run_processes(_specs(plan, todo, point_threads(launch)), slots, progress)


def _specs(plan: GridPlan, todo: list[TrainConfig], threads: int | None) -> list[dict[str, Any]]:
    return [{"config": cfg.to_dict(), "eval": plan.eval, "threads": threads} for cfg in todo]


def _report(plan: GridPlan, configs: list[TrainConfig], records: list[dict[str, Any]]) -> tuple[list[dict], Path]:
    """The combined report of every complete point; then RunFailure if any point failed."""
    out = Path(plan.out_dir)
    complete = [run_dir_of(cfg) for cfg in configs if (run_dir_of(cfg) / "summary.json").is_file()]
    failed = [r for r in records if r["status"] != "ok"]
    runs = find_runs(complete) if complete else []
    if runs:
        report = combined_report(runs, plan.title)
        write_report(report, out)
        write_tensorboard_report(report, str(out / "_report"), "report")
        write_study(runs, out / "_report")
        print(f"\n{summary_table([r.summary for r in runs if r.summary])}\n{TABLE_NOTE}", flush=True)
    if failed:
        names = "; ".join(f"{r['run_name']} (exit {r['exit_code']}): {r.get('message', '')}" for r in failed)
        where = f"the report of the other {len(runs)} is in {out / 'report.md'}" if runs else "no report written"
        raise RunFailure(f"{len(failed)} of {len(configs)} grid points failed — {names}; {where}; fix the cause "
                         f"and re-run the same command to train only the unfinished points")
    return [r.summary for r in runs], out


def parse_grid_args(argv: list[str] | None = None) -> GridPlan:
    """``odenet-grid`` arguments → the checked plan, launch options included."""
    parser = build_parser(GridArgs, prog="odenet-grid",
                          description="Train a grid of runs (backbone x tol x solver x adjoint x seed) and write "
                                      "one combined report; re-running skips finished runs.")
    args = GridArgs(**vars(parser.parse_args(sys.argv[1:] if argv is None else argv)))
    plan = load_plan(args)
    plan.launch = LaunchOptions.of(args)
    check_launch(plan.launch)
    expand(plan)  # every point resolved here, so that a bad one is a ConfigError before anything runs
    return plan


SUMMARY_COLUMNS = (("seed", "seed", "{}"), ("acc", "test acc", "{:.4f}"), ("images", "test images", "{:,}"),
                   ("nfe_forward", "nfe_forward", "{:.1f}"), ("nfe_backward", "nfe_backward", "{:.1f}"),
                   ("act_mem_mb", "act_mem_mb", "{:.1f}"), ("time_step_ms", "time_step_ms", "{:.0f}"),
                   ("params", "params", "{:,}"), ("batch_size", "batch", "{}"), ("status", "status", "{}"))
TABLE_NOTE = ("test acc: the final model on `test images` images; other columns: means over the last epoch's "
              "training steps at batch `batch`, one seed a row. The test-time sweeps in the report use their own "
              "images and batch (stated there).")


def summary_table(summaries: list[dict]) -> str:
    """Side-by-side table of finished runs: test accuracy of the final model (and its images), last-epoch
    training means at the training batch size, and the run's status (smoke runs say so)."""
    header = ["run"] + [title for _, title, _ in SUMMARY_COLUMNS]
    lines = []
    for s in summaries:
        values = {**s["train_last_epoch"], "acc": s["test"]["acc"], "images": s["test"].get("images"),
                  "params": s["params"], "batch_size": s["config"].get("batch_size"), "seed": s["config"].get("seed"),
                  "status": run_status(s["config"], True)}
        lines.append([run_label(s["config"])] + [fmt.format(values[key]) if values.get(key) is not None else "—"
                                                 for key, _, fmt in SUMMARY_COLUMNS])
    widths = [max(len(row[i]) for row in [header] + lines) for i in range(len(header))]
    render = lambda row: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(row, widths)))
    return "\n".join([render(header), render(["-" * w for w in widths])] + [render(r) for r in lines])
