"""The optimizer and learning-rate schedule of a run (the paper's recipe: SGD with step decay)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import torch

from odenet.train.config import TrainConfig


def build_optimizer(params: Iterable[torch.Tensor], cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per epoch."""
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=cfg.milestones, gamma=cfg.lr_gamma)


def apply_optimizer_settings(optimizer: torch.optim.Optimizer, scheduler, cfg: TrainConfig, epochs_done: int) -> None:
    """``--force`` on resume: the optimizer and schedule follow the new flags, not the checkpoint's saved values."""
    scheduler.base_lrs = [cfg.lr for _ in optimizer.param_groups]
    scheduler.milestones = Counter(cfg.milestones)
    scheduler.gamma = cfg.lr_gamma
    decay = cfg.lr_gamma ** sum(1 for m in cfg.milestones if m <= epochs_done)
    for group in optimizer.param_groups:
        group.update(lr=cfg.lr * decay, initial_lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
