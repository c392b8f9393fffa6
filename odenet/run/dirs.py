"""Where a run lives: its directory name, and the checks made before anything is written there."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from odenet.errors import ConfigError
from odenet.naming import solver_name_parts


def default_run_name(config: Mapping[str, Any]) -> str:
    """backbone-dataset-solver-setting-backprop-s<seed>-<time> (without the solver parts for a ResNet)."""
    parts = [config["backbone"], config["dataset"], *solver_name_parts(config)]
    parts += [f"s{config['seed']}", datetime.now().strftime("%Y%m%d-%H%M%S")]
    return "-".join(parts)


def resolve_run_dir(config: Mapping[str, Any]) -> tuple[Path, str | None]:
    """(run directory, checkpoint to resume from or None) from ``out_dir``, ``run_name`` and ``resume``.

    Refuses to overwrite a run.
    """
    out_dir, run_name, resume = config["out_dir"], config.get("run_name"), config.get("resume")
    if resume == "auto":
        if not run_name:
            raise ConfigError("--resume auto needs --run-name to know which run to continue")
        run_dir = Path(out_dir) / run_name
        last = run_dir / "last.pt"
        if last.is_file():
            return run_dir, str(last)
        if (run_dir / "metrics.jsonl").exists():
            raise ConfigError(f"{run_dir} holds a run without a checkpoint to resume (it stopped before its first "
                              f"one); choose another --run-name, or delete {run_dir}")
        check_writable(run_dir)
        return run_dir, None
    if resume:
        return Path(resume).resolve().parent, resume
    run_dir = Path(out_dir) / (run_name or default_run_name(config))
    if (run_dir / "metrics.jsonl").exists():
        raise ConfigError(f"run directory {run_dir} already holds a run; choose another --run-name, or continue it "
                          f"with --resume {run_dir / 'last.pt'}")
    check_writable(run_dir)
    return run_dir, None


def check_writable(run_dir: Path) -> None:
    """Fail before training if the run directory could not be written (nothing is created here)."""
    existing = run_dir
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"output directory {existing} is not writable; choose another --out-dir")
