"""The training job: data, model, optimizer and schedule from a TrainConfig; measurements to the run directory.

Runs alone or as one of several torchrun processes (DistributedDataParallel); survives
SIGINT/SIGTERM (finishes the step, checkpoints, exits 130/143) and SIGKILL (resume replays
from the last checkpoint, bit for bit on CPU); turns solver blow-ups into one explained error.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchdiffeq
from torch import nn
from tqdm import tqdm

from odenet import distributed
from odenet.checkpoint import load_checkpoint, save_checkpoint
from odenet.config import ConfigError, TrainConfig
from odenet.data import DataBundle, build_loaders
from odenet.engine import NonFiniteLossError, evaluate, to_device, train_step
from odenet.measure import EventClock, rss_peak_mb
from odenet.models import backbone_entry, create_backbone
from odenet.models.ode import SolverError, ode_blocks, read_nfe
from odenet.runlog import RunLogger, read_metrics, truncate_metrics, write_config, write_json
from odenet.runstate import Progress, check_resume_config, resolve_run_dir, restore_rng, rng_state

SUMMARY_KEYS = ("loss", "acc", "nfe_forward", "nfe_backward", "nfe_backprop", "steps_accepted", "steps_rejected",
                "act_mem_mb", "peak_mem_mb", "time_step_ms", "time_forward_ms", "time_backward_ms", "time_data_ms")
MAX_CONSECUTIVE_SKIPS = 20
EXIT_FAILED = 3


class TrainingFailure(RuntimeError):
    """Training stopped on a solver failure or a non-finite loss; the message says what to do."""


class Interrupted(RuntimeError):
    """SIGINT or SIGTERM: a checkpoint was written; exit with 128 + signal number."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA device is visible; use --device cpu or auto")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(cfg: TrainConfig, data: DataBundle) -> nn.Module:
    kwargs: dict[str, Any] = {"image_size": data.spec.image_size}
    if backbone_entry(cfg.backbone).ode:
        kwargs["solver"] = cfg.solver_settings()
    try:
        return create_backbone(cfg.backbone, in_channels=data.spec.channels, num_classes=data.spec.num_classes,
                               **kwargs)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def configure_backends(cfg: TrainConfig) -> None:
    if cfg.tf32 is not None:
        torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
        torch.backends.cudnn.allow_tf32 = cfg.tf32


def speed_up(model: nn.Module, *, channels_last: bool = False, amp: str = "none", compile: bool = False) -> None:
    """Apply the opt-in speed settings: channels-last, bf16 fields, torch.compile.

    Compilation is in place (``Module.compile``) and applies to the ODE fields — the solver's
    Python control flow stays eager — or, for backbones without ODE blocks, to the feature
    blocks, so both sides of a comparison get the same treatment.
    """
    if channels_last:
        model.to(memory_format=torch.channels_last)
    blocks = ode_blocks(model)
    if amp == "bf16":
        for block in blocks.values():
            block.set_autocast(torch.bfloat16)
    if compile:
        if any(b.solver.adjoint for b in blocks.values()):
            # The adjoint differentiates the field with retain_graph=True, which compiled
            # backward graphs with donated buffers refuse (seen with torch 2.11 on an H200).
            import torch._functorch.config as functorch_config

            functorch_config.donated_buffer = False
        for module in [b.func for b in blocks.values()] or list(model.features.children()) or [model.features]:
            module.compile()


RESUME_KEYS = ("model", "optimizer", "scheduler", "epoch", "step", "rng", "config", "metrics")


class Trainer:
    """Holds one run's objects; :meth:`fit` trains, evaluates every epoch and checkpoints."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.dist = distributed.init("cuda" if pick_device(cfg.device).type == "cuda" else "cpu")
        if self.dist.active and cfg.on_solver_failure != "stop":
            raise ConfigError("--on-solver-failure skip-batch cannot keep DDP ranks in step (one rank would skip "
                              "the gradient all-reduce); use stop under torchrun")
        self.device = pick_device(cfg.device, self.dist.local_rank)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.run_dir, resume_from = resolve_run_dir(cfg)
        # Read and check the checkpoint before anything else, so a wrong --resume fails first and fast.
        saved = load_checkpoint(resume_from, map_location=self.device, required=RESUME_KEYS) if resume_from else None
        if saved is not None:
            check_resume_config(saved["config"], cfg, resume_from)
        seed_everything(cfg.seed)
        configure_backends(cfg)
        self.data = build_loaders(cfg.dataset, batch_size=cfg.batch_size, test_batch_size=cfg.test_batch_size,
                                  workers=cfg.workers, seed=cfg.seed,
                                  data_dir=Path(cfg.data_dir) if cfg.data_dir else None, download=cfg.download,
                                  pin_memory=self.device.type == "cuda",
                                  on_device=self.device if cfg.data_on_device else None,
                                  rank=self.dist.rank, world_size=self.dist.world_size)
        if len(self.data.train) == 0:
            per = " this process's share of the" if self.dist.active else " the"
            raise ConfigError(f"--batch-size {cfg.batch_size} is larger than{per} {self.data.train_size} "
                              f"training images, so no full batch is left to train on; use a smaller --batch-size")
        self.raw_model = build_model(cfg, self.data).to(self.device)
        speed_up(self.raw_model, channels_last=cfg.channels_last, amp=cfg.amp, compile=cfg.compile)
        self.model = self._wrap(self.raw_model)
        self.params = list(self.model.parameters())
        self.optimizer = torch.optim.SGD(self.params, lr=cfg.lr, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, milestones=cfg.milestones,
                                                              gamma=cfg.lr_gamma)
        self.progress = Progress()
        self.resumed_from = resume_from
        self.epoch_loader_state = self.data.train.generator.get_state()
        if saved is not None:
            self._restore(saved, resume_from)
        self.n_params = sum(p.numel() for p in self.raw_model.parameters())
        self._signal: int | None = None

    def _wrap(self, model: nn.Module) -> nn.Module:
        if not self.dist.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> dict[str, Any]:
        p = self.progress
        loader = self.epoch_loader_state if p.batches_done else self.data.train.generator.get_state()
        return {"model": self.raw_model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "epoch": p.epoch, "step": p.step,
                "batches_done": p.batches_done, "rng": rng_state(loader), "config": self.cfg.to_dict(),
                "metrics": {"best_acc": p.best_acc, "best_epoch": p.best_epoch, "skipped": p.skipped}}

    def _restore(self, state: dict[str, Any], path: str) -> None:
        try:
            self.raw_model.load_state_dict(state["model"])
        except RuntimeError as exc:
            raise ConfigError(f"checkpoint {path} does not fit this model ({str(exc).splitlines()[0]}); resume with "
                              f"the run's settings") from None
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.cfg.force:
            self._apply_optimizer_settings(state["epoch"])
        restore_rng(state["rng"], self.data.train.generator)
        self.epoch_loader_state = self.data.train.generator.get_state()
        m = state["metrics"]
        self.progress = Progress(state["epoch"], state["step"], m["best_acc"], m["best_epoch"],
                                 state.get("batches_done", 0), m.get("skipped", 0))

    def _apply_optimizer_settings(self, epochs_done: int) -> None:
        """--force: the optimizer and schedule follow the new flags, not the checkpoint's saved values."""
        cfg = self.cfg
        from collections import Counter

        self.scheduler.base_lrs = [cfg.lr for _ in self.optimizer.param_groups]
        self.scheduler.milestones = Counter(cfg.milestones)
        self.scheduler.gamma = cfg.lr_gamma
        decay = cfg.lr_gamma ** sum(1 for m in cfg.milestones if m <= epochs_done)
        for group in self.optimizer.param_groups:
            group.update(lr=cfg.lr * decay, initial_lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)

    def _save(self, name: str) -> None:
        if self.dist.is_main:
            save_checkpoint(self.run_dir / name, self.state())

    # ------------------------------------------------------------------ loop
    def fit(self) -> dict[str, Any]:
        cfg, p = self.cfg, self.progress
        if p.epoch > cfg.epochs:
            raise ConfigError(f"{self.resumed_from} has already trained {p.epoch} epochs, more than --epochs "
                              f"{cfg.epochs}; pass --epochs {p.epoch + 1} or more to train on")
        if self.resumed_from and p.epoch == cfg.epochs:
            return self._finished()
        logger = self._open_logger()
        self._say(f"run {self.run_dir} | {cfg.backbone} on {cfg.dataset} ({self.data.train_size} train / "
                  f"{self.data.test_size} test, from {self.data.source}) | {self.n_params:,} params | {self.device}"
                  + (f" x {self.dist.world_size} processes" if self.dist.active else "")
                  + (f" | resumed from {self.resumed_from} at step {p.step}" if self.resumed_from else ""))
        started = time.perf_counter()
        last_train: list[dict] = []
        test: dict[str, Any] = {}
        completed = False
        previous = self._install_signal_handlers()
        try:
            for epoch in range(p.epoch + 1, cfg.epochs + 1):
                last_train = self._train_epoch(epoch, logger)
                test = self._evaluate()
                if logger:
                    logger.log({"split": "test", "epoch": epoch, "step": p.step, **test})
                p.epoch, p.batches_done = epoch, 0
                self.epoch_loader_state = self.data.train.generator.get_state()
                if test["acc"] > p.best_acc:
                    p.best_acc, p.best_epoch = test["acc"], epoch
                    self._save("best.pt")
                self._save("last.pt")
                self._say(epoch_line(epoch, cfg.epochs, last_train, test))
                if epoch < cfg.epochs:  # a signal during the last evaluation: the run is complete anyway
                    self._check_signal(epoch)
            completed = True
        finally:
            self._restore_signal_handlers(previous)
            if logger:
                logger.close(completed)
        summary = self.summary(last_train, test, time.perf_counter() - started)
        if self.dist.is_main:
            write_json(self.run_dir / "summary.json", summary)
        return summary

    def _finished(self) -> dict[str, Any]:
        """Resuming a run that has trained all its epochs: nothing to train, nothing rewritten.

        Only a summary that the interrupted run did not get to write is made, from its metrics.
        """
        path = self.run_dir / "summary.json"
        self._say(f"run {self.run_dir} has already trained its {self.cfg.epochs} epochs; nothing to do (pass a "
                  f"larger --epochs to train on)")
        if path.is_file():
            return json.loads(path.read_text())
        rows = read_metrics(self.run_dir / "metrics.jsonl")
        last_train = [r for r in rows if r["split"] == "train" and r["epoch"] == self.progress.epoch]
        tests = [r for r in rows if r["split"] == "test"]
        test = {k: v for k, v in tests[-1].items() if k not in ("split", "epoch", "step")} if tests else {}
        summary = self.summary(last_train, test, float("nan"))
        if self.dist.is_main:
            write_json(path, summary)
        return summary

    def _open_logger(self) -> RunLogger | None:
        if not self.dist.is_main:
            return None
        p = self.progress
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_config(self.run_dir, self.cfg.to_dict())
        if self.resumed_from:
            truncate_metrics(self.run_dir / "metrics.jsonl", p.step, p.epoch, p.batches_done)
        return RunLogger(self.run_dir, self.cfg.to_dict(), purge_step=p.step + 1 if self.resumed_from else None)

    def _train_epoch(self, epoch: int, logger: RunLogger | None) -> list[dict]:
        cfg, p = self.cfg, self.progress
        loader = self.data.train
        total = len(loader) if cfg.limit_train_batches is None else min(cfg.limit_train_batches, len(loader))
        skip, p.batches_done = p.batches_done, 0  # a mid-epoch resume replays the epoch's draws up to here
        bar = tqdm(total=total, initial=skip, desc=f"epoch {epoch}/{cfg.epochs}", leave=False, dynamic_ncols=True,
                   disable=not (cfg.progress and self.dist.is_main) or None, file=sys.stderr)
        clock = EventClock(self.device)
        rows: list[dict] = []
        consecutive_skips = 0
        batches = iter(loader)
        try:
            for index in range(total):
                data_start = clock.mark()
                batch = next(batches)
                if index < skip:
                    continue
                images, labels = to_device(batch, self.device, cfg.channels_last)
                # A batch that may be skipped must not leave BatchNorm running statistics behind.
                buffers = ([b.clone() for b in self.raw_model.buffers()] if cfg.on_solver_failure == "skip-batch"
                           else None)
                try:
                    row = train_step(self.model, images, labels, self.optimizer, self.params, data_start)
                except (SolverError, NonFiniteLossError) as exc:
                    if buffers is not None:
                        with torch.no_grad():
                            for saved, live in zip(buffers, self.raw_model.buffers()):
                                live.copy_(saved)
                    consecutive_skips = self._on_failure(exc, epoch, index, logger, consecutive_skips)
                    p.batches_done = index + 1
                    continue
                consecutive_skips = 0
                row = distributed.combine_rows(self.dist, {**row, "lr": self.optimizer.param_groups[0]["lr"]})
                p.step += 1
                p.batches_done = index + 1
                if logger:
                    logger.log({"split": "train", "epoch": epoch, "step": p.step, **row})
                rows.append(row)
                bar.update()
                bar.set_postfix({k: f"{row[k]:.3g}" for k in ("loss", "acc", "nfe_forward", "nfe_backward")
                                 if k in row})
                if cfg.checkpoint_every and p.step % cfg.checkpoint_every == 0:
                    self._save("last.pt")
                self._check_signal(epoch)
        finally:
            bar.close()
        self.scheduler.step()
        return rows

    def _evaluate(self) -> dict[str, Any]:
        try:
            test = evaluate(self.model, self.data.test, self.device, limit=self.cfg.limit_test_batches,
                            channels_last=self.cfg.channels_last)
        except SolverError as exc:
            last = self.run_dir / "last.pt"
            kept = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was written yet"
            raise TrainingFailure(f"evaluation after epoch {self.progress.epoch + 1} stopped: {exc}; {kept}; try a "
                                  f"looser --tol or a larger --max-num-steps") from None
        if not self.dist.active:
            return test
        n = test["images"]
        loss_sum, correct, images = distributed.all_sum(self.dist, [test["loss"] * n, test["acc"] * n, n],
                                                        self.device)
        combined = distributed.combine_rows(self.dist, test)
        return {**combined, "loss": loss_sum / images, "acc": correct / images, "images": int(images)}

    # ------------------------------------------------------------------ failures and signals
    def _on_failure(self, exc: Exception, epoch: int, index: int, logger: RunLogger | None, skips: int) -> int:
        """Stop with one explained sentence, or (skip-batch) log the skip and carry on."""
        p = self.progress
        self.optimizer.zero_grad(set_to_none=True)
        read_nfe(self.model)  # the failed batch's evaluations belong to no step
        what = (f"{exc.reason} in the {exc.phase} solve ({exc.solver.describe()})" if isinstance(exc, SolverError)
                else f"the loss was not finite ({exc})")
        if self.cfg.on_solver_failure == "skip-batch" and skips + 1 < MAX_CONSECUTIVE_SKIPS:
            p.skipped += 1
            if logger:
                logger.log({"split": "skipped", "epoch": epoch, "step": p.step, "batch": index,
                            "skipped_batches": p.skipped, "reason": what})
            self._say(f"skipped batch {index} of epoch {epoch}: {what}")
            return skips + 1
        last = self.run_dir / "last.pt"
        kept = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was written yet"
        remedy = ("a looser --tol, a larger --max-num-steps, --weight-decay, a smoother activation, or a fixed-step "
                  "solver (--solver rk4 --steps N)") if isinstance(exc, SolverError) else \
                 "a lower --lr, --weight-decay, or a looser --tol"
        gave_up = f" ({MAX_CONSECUTIVE_SKIPS} batches in a row)" if skips else ""
        raise TrainingFailure(f"training stopped at epoch {epoch}, step {p.step + 1}{gave_up}: {what}; {kept}; "
                              f"try {remedy}, or --on-solver-failure skip-batch")

    def _install_signal_handlers(self):
        import threading

        if threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum, frame):
            if self._signal is not None:  # a second signal: stop now, keeping the last checkpoint
                raise KeyboardInterrupt
            self._signal = signum

        return {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}

    @staticmethod
    def _restore_signal_handlers(previous) -> None:
        for s, h in (previous or {}).items():
            signal.signal(s, h)

    def _check_signal(self, epoch: int) -> None:
        if not distributed.any_rank(self.dist, self._signal is not None, self.device):
            return
        self._save("last.pt")
        signum = self._signal or signal.SIGTERM
        name = signal.Signals(signum).name
        raise Interrupted(signum, f"interrupted by {name} at epoch {epoch}, step {self.progress.step}; checkpoint "
                                  f"{self.run_dir / 'last.pt'} written; continue with --resume "
                                  f"{self.run_dir / 'last.pt'}")

    # ------------------------------------------------------------------ reporting
    def _say(self, text: str) -> None:
        if self.dist.is_main:
            print(text, flush=True)

    def summary(self, last_train: list[dict], test: dict[str, Any], wall_s: float) -> dict[str, Any]:
        p = self.progress
        train_means = {k: float(np.mean([r[k] for r in last_train])) for k in SUMMARY_KEYS
                       if last_train and k in last_train[0]}
        return {
            "run_dir": str(self.run_dir), "config": self.cfg.to_dict(), "params": self.n_params,
            "data_source": self.data.source, "device": str(self.device), "world_size": self.dist.world_size,
            "epochs_completed": p.epoch, "steps": p.step, "best_acc": p.best_acc, "best_epoch": p.best_epoch,
            "skipped_batches": p.skipped, "test": test, "train_last_epoch": train_means,
            "rss_peak_mb": rss_peak_mb(), "wall_time_s": wall_s,
            "versions": {"torch": torch.__version__, "torchdiffeq": torchdiffeq.__version__},
        }


def epoch_line(epoch: int, epochs: int, train: list[dict], test: dict[str, Any]) -> str:
    mean = lambda key: float(np.mean([r[key] for r in train])) if train else float("nan")  # noqa: E731
    text = f"epoch {epoch}/{epochs} | train loss {mean('loss'):.4f} acc {mean('acc'):.4f}"
    if train and "nfe_forward" in train[0]:
        text += f" nfe_forward {mean('nfe_forward'):.1f} nfe_backward {mean('nfe_backward'):.1f}"
    if train:
        text += f" act_mem_mb {mean('act_mem_mb'):.1f}"
    text += f" | test loss {test['loss']:.4f} acc {test['acc']:.4f}"
    if "nfe_forward" in test:
        text += f" nfe_forward {test['nfe_forward']:.1f}"
    return text


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run one training job end to end; returns the summary written to ``summary.json``."""
    trainer = Trainer(cfg)
    try:
        return trainer.fit()
    finally:
        distributed.shutdown(trainer.dist)
