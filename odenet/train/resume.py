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
from odenet.run.checkpoint import CheckpointError, damaged, load_weights, mismatch
from odenet.train.config import TrainConfig

# Options that may change between a run and its resumption; any other difference is refused
# unless --force: it would silently make the resumed half a different experiment.
RESUMABLE_CHANGES = ("epochs", "resume", "force", "progress", "device", "workers", "data_dir", "download", "out_dir",
                     "run_name", "test_batch_size", "limit_test_batches", "checkpoint_every", "on_solver_failure",
                     "compile", "per_sample_every", "threads")


FLOAT32_MAX = 3.4028234663852886e38


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


def check_resumable(state: dict[str, Any], path: str, cfg: TrainConfig | None = None) -> None:
    """A checkpoint's metrics and RNG states are what train.py writes (its counters and config:
    :func:`~odenet.run.checkpoint.load_checkpoint`), checked before anything is read from them or any file of the
    run is touched (the model, optimizer and schedule: by :func:`restore_state`).

    With ``cfg``, then the run's settings against it (:func:`check_resume_config`).

    Raises:
        CheckpointError: an entry of another kind (epoch as text, metrics without best_acc, an RNG state without
            its numpy part, ...): one sentence naming the checkpoint and the entry.
        ConfigError: ``cfg`` differs from the run's settings (without --force).
    """
    plain = (type(None), bool, int, float, str)
    odd = [k for k, v in state["config"].items() if not isinstance(k, str) or not (
        isinstance(v, plain) or (isinstance(v, list) and all(isinstance(x, plain) for x in v)))]
    if odd:
        raise damaged(path, f"its config's {str(odd[0])[:40]!r} is not a plain value")
    fresh = checkpoint_state(Progress(), nn.Identity(), _Empty(), _Empty(), torch.Generator().get_state(), {})
    saved = state["metrics"]  # older checkpoints lack "skipped"
    metrics = {k: v for k, v in fresh["metrics"].items() if k != "skipped" or (isinstance(saved, dict) and k in saved)}
    problem = mismatch(saved, metrics, "metrics", exact=False)
    rng = {k: v for k, v in state["rng"].items() if k != "cuda"} if isinstance(state["rng"], dict) else state["rng"]
    problem = problem or mismatch(rng, {k: v for k, v in fresh["rng"].items() if k != "cuda"}, "rng")  # GPU only
    if problem:
        raise damaged(path, problem)
    if cfg is not None:
        check_resume_config(state["config"], cfg, path)


class _Empty:
    """A stand-in optimizer or schedule for :func:`check_resumable`'s fresh state (only metrics and rng are read)."""

    def state_dict(self) -> dict[str, Any]:
        return {}


def restore_state(state: dict[str, Any], path: str, model: nn.Module, optimizer, scheduler,
                  loader_gen: torch.Generator) -> Progress:
    """Load a checkpoint's weights, optimizer, schedule and RNG states; returns where training stood.

    Each entry is checked against what this run would write before it is loaded, so a damaged one is one
    sentence here, not a traceback from deep inside a later training step.

    Raises:
        CheckpointError: an entry that does not fit (:func:`check_resumable` first).
    """
    check_resumable(state, path)
    load_weights(model, state, path, "resume with the run's settings")
    _restore(path, "optimizer", lambda: _load_optimizer(optimizer, state["optimizer"], path))
    _restore(path, "scheduler", lambda: _load_schedule(scheduler, state["scheduler"], path))
    _restore(path, "rng", lambda: restore_rng(state["rng"], loader_gen))
    m = state["metrics"]
    return Progress(state["epoch"], state["step"], m["best_acc"], m["best_epoch"], state.get("batches_done", 0),
                    m.get("skipped", 0))


def _restore(path: str, entry: str, load) -> None:
    """``load()``, any error of a damaged value (a state torch cannot set) turned into one sentence."""
    try:
        load()
    except CheckpointError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:150]
        raise damaged(path, f"its {entry} state cannot be restored: {first}") from None


def _load_optimizer(optimizer: torch.optim.Optimizer, saved: Any, path: str) -> None:
    """The optimizer's state, checked: hyperparameters of the same kinds, one state per parameter of its shape."""
    fresh = optimizer.state_dict()
    problem = mismatch(saved, {"state": {}, "param_groups": fresh["param_groups"]}, "optimizer", exact=False)
    if problem:
        raise damaged(path, problem)
    too_large = [f"{k} {v!r}" for group in saved["param_groups"] for k, value in group.items() if k != "params"
                 for v in (value if isinstance(value, (list, tuple)) else [value])
                 if isinstance(v, float) and not abs(v) <= FLOAT32_MAX]
    if too_large:  # torch's optimizers compute in float32: beyond its range a step fails, not a number
        raise damaged(path, f"its optimizer's {too_large[0]} is not a finite float32 number")
    optimizer.load_state_dict(saved)
    for group in optimizer.param_groups:
        for param in group["params"]:
            for key, value in optimizer.state.get(param, {}).items():
                # A state is tensors (momentum_buffer None before the first step; step a number in older torch).
                if not (isinstance(value, torch.Tensor) or value is None or (
                        key == "step" and isinstance(value, (int, float)) and not isinstance(value, bool))):
                    raise damaged(path, f"its optimizer's {key} is a {type(value).__name__}, not a tensor")
                if isinstance(value, torch.Tensor) and key != "step" and (value.shape, value.dtype) != (
                        param.shape, param.dtype):
                    raise damaged(path, f"its optimizer's {key} is a {value.dtype} tensor of shape "
                                        f"{tuple(value.shape)} where the model's parameter is {param.dtype} of "
                                        f"{tuple(param.shape)}: the optimizer of another model")


def _load_schedule(scheduler, saved: Any, path: str) -> None:
    """The schedule's state, checked against a fresh one's (its entries become the scheduler's attributes)."""
    problem = mismatch(saved, scheduler.state_dict(), "scheduler", exact=False)
    methods = [k for k in saved if callable(getattr(type(scheduler.torch), str(k), None))] if isinstance(saved, dict) \
        else []
    if problem or methods:
        raise damaged(path, problem or f"scheduler has an unexpected entry {methods[0]!r}")
    scheduler.load_state_dict(saved)
