"""The training job: data, model, optimizer and schedule from a TrainConfig; measurements to the run directory."""

from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchdiffeq
from torch import nn
from tqdm import tqdm

from odenet.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from odenet.config import ConfigError, TrainConfig
from odenet.data import DataBundle, build_loaders
from odenet.engine import evaluate, train_one_epoch
from odenet.measure import rss_peak_mb
from odenet.models import backbone_entry, create_backbone
from odenet.runlog import RunLogger, truncate_metrics, write_config, write_json

SUMMARY_KEYS = ("loss", "acc", "nfe_forward", "nfe_backward", "nfe_backprop", "steps_accepted", "steps_rejected",
                "act_mem_mb", "peak_mem_mb", "time_step_ms", "time_forward_ms", "time_backward_ms", "time_data_ms")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA device is visible; use --device cpu or auto")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def default_run_name(cfg: TrainConfig) -> str:
    parts = [cfg.backbone, cfg.dataset]
    if cfg.solver is not None:
        parts.append(cfg.solver + (f"-tol{cfg.rtol:g}" if cfg.rtol is not None else f"-steps{cfg.steps}"))
        parts.append("adjoint" if cfg.adjoint else "direct")
    parts += [f"s{cfg.seed}", datetime.now().strftime("%Y%m%d-%H%M%S")]
    return "-".join(parts)


def build_model(cfg: TrainConfig, data: DataBundle) -> nn.Module:
    kwargs: dict[str, Any] = {"image_size": data.spec.image_size}
    if backbone_entry(cfg.backbone).ode:
        kwargs["solver"] = cfg.solver_settings()
    try:
        return create_backbone(cfg.backbone, in_channels=data.spec.channels, num_classes=data.spec.num_classes,
                               **kwargs)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


@dataclass
class Progress:
    """Where training stands; what a checkpoint restores."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    best_acc: float = -1.0
    best_epoch: int = 0


def resolve_run_dir(cfg: TrainConfig) -> Path:
    if cfg.resume:
        return Path(cfg.resume).resolve().parent
    run_dir = Path(cfg.out_dir) / (cfg.run_name or default_run_name(cfg))
    if (run_dir / "metrics.jsonl").exists():
        raise ConfigError(f"run directory {run_dir} already holds a run; choose another --run-name, or continue it "
                          f"with --resume {run_dir / 'last.pt'}")
    return run_dir


def rng_state(loader_gen: torch.Generator) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "loader": loader_gen.get_state(),
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
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value):
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


class Trainer:
    """Holds one run's objects; :meth:`fit` trains, evaluates every epoch and checkpoints."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.device = pick_device(cfg.device)
        seed_everything(cfg.seed)
        self.data = build_loaders(cfg.dataset, batch_size=cfg.batch_size, test_batch_size=cfg.test_batch_size,
                                  workers=cfg.workers, seed=cfg.seed,
                                  data_dir=Path(cfg.data_dir) if cfg.data_dir else None, download=cfg.download,
                                  pin_memory=self.device.type == "cuda")
        self.model = build_model(cfg, self.data).to(self.device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, milestones=cfg.milestones,
                                                              gamma=cfg.lr_gamma)
        self.progress = Progress()
        self.run_dir = resolve_run_dir(cfg)
        if cfg.resume:
            self._restore(load_checkpoint(cfg.resume, map_location=self.device))
        self.params = sum(p.numel() for p in self.model.parameters())

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> dict[str, Any]:
        p = self.progress
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "epoch": p.epoch, "step": p.step,
                "rng": rng_state(self.data.train.generator), "config": self.cfg.to_dict(),
                "metrics": {"best_acc": p.best_acc, "best_epoch": p.best_epoch}}

    def _restore(self, state: dict[str, Any]) -> None:
        saved = state["config"]
        for key in ("backbone", "dataset"):
            if saved.get(key) != getattr(self.cfg, key):
                raise CheckpointError(f"checkpoint {self.cfg.resume} is from a {saved.get(key)} run, not "
                                      f"{getattr(self.cfg, key)}; resume with --{key} {saved.get(key)}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        restore_rng(state["rng"], self.data.train.generator)
        self.progress = Progress(state["epoch"], state["step"], state["metrics"]["best_acc"],
                                 state["metrics"]["best_epoch"])

    # ------------------------------------------------------------------ loop
    def fit(self) -> dict[str, Any]:
        cfg, p = self.cfg, self.progress
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_config(self.run_dir, cfg.to_dict())
        if cfg.resume:
            truncate_metrics(self.run_dir / "metrics.jsonl", p.step, p.epoch)
        logger = RunLogger(self.run_dir, cfg.to_dict(), purge_step=p.step + 1 if cfg.resume else None)
        print(f"run {self.run_dir} | {cfg.backbone} on {cfg.dataset} ({self.data.train_size} train / "
              f"{self.data.test_size} test, from {self.data.source}) | {self.params:,} params | {self.device}",
              flush=True)
        started = time.perf_counter()
        last_train: list[dict] = []
        test: dict[str, Any] = {}
        completed = False
        try:
            for epoch in range(p.epoch + 1, cfg.epochs + 1):
                last_train = self._train_epoch(epoch, logger)
                test = evaluate(self.model, self.data.test, self.device, limit=cfg.limit_test_batches)
                logger.log({"split": "test", "epoch": epoch, "step": p.step, **test})
                p.epoch = epoch
                if test["acc"] > p.best_acc:
                    p.best_acc, p.best_epoch = test["acc"], epoch
                    save_checkpoint(self.run_dir / "best.pt", self.state())
                save_checkpoint(self.run_dir / "last.pt", self.state())
                print(epoch_line(epoch, cfg.epochs, last_train, test), flush=True)
            completed = True
        finally:
            logger.close(completed)
        summary = self.summary(last_train, test, time.perf_counter() - started)
        write_json(self.run_dir / "summary.json", summary)
        return summary

    def _train_epoch(self, epoch: int, logger: RunLogger) -> list[dict]:
        cfg, p = self.cfg, self.progress
        total = len(self.data.train) if cfg.limit_train_batches is None else min(cfg.limit_train_batches,
                                                                                 len(self.data.train))
        bar = tqdm(total=total, desc=f"epoch {epoch}/{cfg.epochs}", leave=False, dynamic_ncols=True,
                   disable=not cfg.progress or None, file=sys.stderr)

        def on_step(row: dict) -> None:
            p.step += 1
            logger.log({"split": "train", "epoch": epoch, "step": p.step, **row})
            bar.update()
            bar.set_postfix({k: f"{row[k]:.3g}" for k in ("loss", "acc", "nfe_forward", "nfe_backward") if k in row})

        try:
            rows = train_one_epoch(self.model, self.data.train, self.optimizer, self.device,
                                   limit=cfg.limit_train_batches, on_step=on_step)
        finally:
            bar.close()
        self.scheduler.step()
        return rows

    def summary(self, last_train: list[dict], test: dict[str, Any], wall_s: float) -> dict[str, Any]:
        p = self.progress
        train_means = {k: float(np.mean([r[k] for r in last_train])) for k in SUMMARY_KEYS
                       if last_train and k in last_train[0]}
        return {
            "run_dir": str(self.run_dir), "config": self.cfg.to_dict(), "params": self.params,
            "data_source": self.data.source, "device": str(self.device), "epochs_completed": p.epoch,
            "steps": p.step, "best_acc": p.best_acc, "best_epoch": p.best_epoch, "test": test,
            "train_last_epoch": train_means, "rss_peak_mb": rss_peak_mb(), "wall_time_s": wall_s,
            "versions": {"torch": torch.__version__, "torchdiffeq": torchdiffeq.__version__},
        }


def epoch_line(epoch: int, epochs: int, train: list[dict], test: dict[str, Any]) -> str:
    mean = lambda key: float(np.mean([r[key] for r in train]))  # noqa: E731
    text = f"epoch {epoch}/{epochs} | train loss {mean('loss'):.4f} acc {mean('acc'):.4f}"
    if train and "nfe_forward" in train[0]:
        text += f" nfe_forward {mean('nfe_forward'):.1f} nfe_backward {mean('nfe_backward'):.1f}"
    text += f" act_mem_mb {mean('act_mem_mb'):.1f} | test loss {test['loss']:.4f} acc {test['acc']:.4f}"
    if "nfe_forward" in test:
        text += f" nfe_forward {test['nfe_forward']:.1f}"
    return text


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run one training job end to end; returns the summary written to ``summary.json``."""
    return Trainer(cfg).fit()
