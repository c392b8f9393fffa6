"""The optimizer and learning-rate schedule of a run.

Two recipes share this room. The paper's (the default, the reproduction): SGD with momentum and
a step decay at epoch milestones, stepped once per epoch. The fast one (``configs/*-fast.yaml``):
AdamW or SGD with a linear warm-up and a cosine or one-cycle decay, stepped every optimizer step
so that a run of a few epochs still anneals smoothly.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from typing import Any

import torch

from odenet.train.config import TrainConfig

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("step", "cosine", "onecycle")


def build_optimizer(params: Iterable[torch.Tensor], cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


class Schedule:
    """The learning rate over a run: ``after_step()`` after each optimizer step, ``after_epoch()`` after each epoch.

    ``step`` decays at epoch milestones (stepped per epoch, as the paper); ``cosine`` and
    ``onecycle`` are functions of the fraction of training done (stepped per optimizer step),
    after ``warmup_epochs`` of linear warm-up from lr/25.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int) -> None:
        self.kind = cfg.schedule
        if self.kind == "step":
            self.torch = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=cfg.milestones,
                                                              gamma=cfg.lr_gamma)
        else:
            total = max(1, cfg.epochs * steps_per_epoch)
            warmup = min(total - 1, round(cfg.warmup_epochs * steps_per_epoch))
            factor = cosine_factor if self.kind == "cosine" else onecycle_factor
            self.torch = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda step: warmup_then(step, warmup, total, factor))

    def after_step(self) -> None:
        if self.kind != "step":
            self.torch.step()

    def after_epoch(self) -> None:
        if self.kind == "step":
            self.torch.step()

    def state_dict(self) -> dict[str, Any]:
        return self.torch.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.torch.load_state_dict(state)


def warmup_then(step: int, warmup: int, total: int, factor) -> float:
    """Linear warm-up from 1/25 of the rate over ``warmup`` steps, then ``factor`` of the remaining fraction."""
    if step < warmup:
        return 1 / 25 + (1 - 1 / 25) * step / warmup
    return factor(min(1.0, (step - warmup) / max(1, total - warmup)))


def cosine_factor(progress: float) -> float:
    """Cosine decay from 1 to 0 (Loshchilov & Hutter 2017, SGDR without restarts)."""
    return 0.5 * (1 + math.cos(math.pi * progress))


def onecycle_factor(progress: float) -> float:
    """One-cycle (Smith & Topin 2019) after the warm-up: the cosine annealing phase down to 1/10⁴ of the peak."""
    return 1e-4 + (1 - 1e-4) * cosine_factor(progress)


def build_schedule(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int) -> Schedule:
    return Schedule(optimizer, cfg, steps_per_epoch)


def steps_per_epoch(cfg: TrainConfig, loader) -> int:
    """Optimizer steps of one epoch (``--limit-train-batches`` counted)."""
    return len(loader) if cfg.limit_train_batches is None else min(cfg.limit_train_batches, len(loader))


def apply_optimizer_settings(optimizer: torch.optim.Optimizer, schedule: Schedule, cfg: TrainConfig,
                             epochs_done: int) -> None:
    """``--force`` on resume: the optimizer and step schedule follow the new flags, not the checkpoint's values."""
    if schedule.kind == "step":
        scheduler = schedule.torch
        scheduler.base_lrs = [cfg.lr for _ in optimizer.param_groups]
        scheduler.milestones = Counter(cfg.milestones)
        scheduler.gamma = cfg.lr_gamma
        decay = cfg.lr_gamma ** sum(1 for m in cfg.milestones if m <= epochs_done)
    else:
        schedule.torch.base_lrs = [cfg.lr for _ in optimizer.param_groups]
        decay = schedule.torch.lr_lambdas[0](schedule.torch.last_epoch)
    for group in optimizer.param_groups:
        group.update(lr=cfg.lr * decay, initial_lr=cfg.lr, weight_decay=cfg.weight_decay)
        if "momentum" in group:
            group["momentum"] = cfg.momentum
