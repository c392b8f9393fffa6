"""What a checkpoint must hold for a resumed run to continue bit for bit, and where a run lives.

A resumed CPU run with a fixed seed reproduces the uninterrupted one exactly: the checkpoint
stores the model, optimizer and scheduler, every RNG state, and the data loader's generator
state *at the start of the current epoch* together with the number of batches already taken
from it, so a mid-epoch resume replays the epoch's draws and skips those batches.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from odenet.config import ConfigError, TrainConfig, flag

# Options that may change between a run and its resumption; any other difference is refused
# unless --force: it would silently make the resumed half a different experiment.
RESUMABLE_CHANGES = ("epochs", "resume", "force", "progress", "device", "workers", "data_dir", "download", "out_dir",
                     "run_name", "test_batch_size", "limit_test_batches", "checkpoint_every", "on_solver_failure",
                     "compile")


@dataclass
class Progress:
    """Where training stands; what a checkpoint restores."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    best_acc: float = -1.0
    best_epoch: int = 0
    batches_done: int = 0  # batches of the current (unfinished) epoch already trained on
    skipped: int = 0  # batches skipped after a solver failure (--on-solver-failure skip-batch)


def solver_name_parts(cfg: TrainConfig) -> list[str]:
    """The solver's part of a run name: ["dopri5-tol0.001", "adjoint"], or [] without an ODE block."""
    if cfg.solver is None:
        return []
    setting = f"-tol{cfg.rtol:g}" if cfg.rtol is not None else f"-steps{cfg.steps}"
    return [cfg.solver + setting, "adjoint" if cfg.adjoint else "direct"]


def default_run_name(cfg: TrainConfig) -> str:
    parts = [cfg.backbone, cfg.dataset, *solver_name_parts(cfg)]
    parts += [f"s{cfg.seed}", datetime.now().strftime("%Y%m%d-%H%M%S")]
    return "-".join(parts)


def resolve_run_dir(cfg: TrainConfig) -> tuple[Path, str | None]:
    """(run directory, checkpoint to resume from or None). Refuses to overwrite a run."""
    if cfg.resume == "auto":
        if not cfg.run_name:
            raise ConfigError("--resume auto needs --run-name to know which run to continue")
        run_dir = Path(cfg.out_dir) / cfg.run_name
        last = run_dir / "last.pt"
        if last.is_file():
            return run_dir, str(last)
        if (run_dir / "metrics.jsonl").exists():
            raise ConfigError(f"{run_dir} holds a run without a checkpoint to resume (it stopped before its first "
                              f"one); choose another --run-name, or delete {run_dir}")
        check_writable(run_dir)
        return run_dir, None
    if cfg.resume:
        return Path(cfg.resume).resolve().parent, cfg.resume
    run_dir = Path(cfg.out_dir) / (cfg.run_name or default_run_name(cfg))
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


def check_resume_config(saved: dict[str, Any], cfg: TrainConfig, path: str) -> None:
    """Refuse to resume into a run whose settings differ (unless --force)."""
    for key in ("backbone", "dataset"):  # a different model or data cannot even load
        if saved.get(key) != getattr(cfg, key):
            from odenet.checkpoint import CheckpointError
            raise CheckpointError(f"checkpoint {path} is from a {saved.get(key)} run, not {getattr(cfg, key)}; "
                                  f"resume with --{key} {saved.get(key)}")
    current = cfg.to_dict()
    changed = [k for k in sorted(set(saved) | set(current)) if k not in RESUMABLE_CHANGES
               and saved.get(k) != current.get(k)]
    if changed and not cfg.force:
        detail = ", ".join(f"{flag(k)} {current.get(k)} (run: {saved.get(k)})" for k in changed[:3])
        raise ConfigError(f"refusing to resume {path} with other settings: {detail}; resume with the run's settings, "
                          f"or pass --force to continue with the new ones")


def rng_state(loader_state: torch.Tensor) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "loader": loader_state,
             "numpy": _numpy_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _numpy_state() -> list:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached]


def restore_rng(state: dict[str, Any], loader_gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuple(state["python"]))
    loader_gen.set_state(state["loader"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value):
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value
