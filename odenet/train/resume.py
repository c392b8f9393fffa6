"""What a checkpoint must hold for a resumed run to continue bit for bit, and when a resume is refused.

A resumed CPU run with a fixed seed reproduces the uninterrupted one exactly: the checkpoint
stores the model, optimizer and scheduler, every RNG state, and the data loader's generator
state *at the start of the current epoch* together with the number of batches already taken
from it, so a mid-epoch resume replays the epoch's draws and skips those batches.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from odenet.config import ConfigError, flag
from odenet.run.checkpoint import CheckpointError
from odenet.train.config import TrainConfig

# Options that may change between a run and its resumption; any other difference is refused
# unless --force: it would silently make the resumed half a different experiment.
RESUMABLE_CHANGES = ("epochs", "resume", "force", "progress", "device", "workers", "data_dir", "download", "out_dir",
                     "run_name", "test_batch_size", "limit_test_batches", "checkpoint_every", "on_solver_failure",
                     "compile", "per_sample_every")


@dataclass
class Progress:
    """Where training stands; what a checkpoint restores."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    best_acc: float = -1.0
    best_epoch: int = 0
    batches_done: int = 0  # batches of the current (unfinished) epoch already trained on
    skipped: int = 0  # batches skipped after a solver failure (--on-solver-failure skip-batch)


def check_resume_config(saved: dict[str, Any], cfg: TrainConfig, path: str) -> None:
    """Refuse to resume into a run whose settings differ (unless --force)."""
    for key in ("backbone", "dataset"):  # a different model or data cannot even load
        if saved.get(key) != getattr(cfg, key):
            raise CheckpointError(f"checkpoint {path} is from a {saved.get(key)} run, not {getattr(cfg, key)}; "
                                  f"resume with --{key} {saved.get(key)}")
    current = cfg.to_dict()
    # A key a checkpoint of an earlier version lacks is an option that version did not have: it ran as
    # the option's default (or without it, None) does now.
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    changed = [k for k in sorted(set(saved) | set(current)) if k not in RESUMABLE_CHANGES
               and (saved[k] != current.get(k) if k in saved else current.get(k) not in (None, defaults.get(k)))]
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


def checkpoint_state(progress: Progress, model: nn.Module, optimizer, scheduler, loader_state: torch.Tensor,
                     config: dict[str, Any]) -> dict[str, Any]:
    """What ``last.pt`` and ``best.pt`` hold (torchvision's layout plus RNG states and progress)."""
    p = progress
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "epoch": p.epoch, "step": p.step, "batches_done": p.batches_done, "rng": rng_state(loader_state),
            "config": config, "metrics": {"best_acc": p.best_acc, "best_epoch": p.best_epoch, "skipped": p.skipped}}


def restore_state(state: dict[str, Any], path: str, model: nn.Module, optimizer, scheduler,
                  loader_gen: torch.Generator) -> Progress:
    """Load a checkpoint's weights, optimizer, schedule and RNG states; returns where training stood."""
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise ConfigError(f"checkpoint {path} does not fit this model ({str(exc).splitlines()[0]}); resume with "
                          f"the run's settings") from None
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    restore_rng(state["rng"], loader_gen)
    m = state["metrics"]
    return Progress(state["epoch"], state["step"], m["best_acc"], m["best_epoch"], state.get("batches_done", 0),
                    m.get("skipped", 0))
