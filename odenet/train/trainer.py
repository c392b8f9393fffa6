"""The training job: data, model, optimizer and schedule from a TrainConfig; measurements to the run directory.

Runs alone or as one of several torchrun processes (DistributedDataParallel); survives
SIGINT/SIGTERM (finishes the step, checkpoints, exits 130/143) and SIGKILL (resume replays
from the last checkpoint, bit for bit on CPU); turns solver blow-ups into one explained error.
"""

from __future__ import annotations

import dataclasses
import errno
import sys
import time
from typing import Any

import torch
from tqdm import tqdm

from odenet.config import ConfigError
from odenet.errors import RunFailure, UserError
from odenet.measure import EventClock
from odenet.models.ode import reset_nfe
from odenet.solve import SolverError
from odenet.run.checkpoint import load_checkpoint, save_checkpoint
from odenet.run.dirs import claim_run_dir
from odenet.run.files import read_mapping, write_config, write_json
from odenet.run.log import PER_SAMPLE_FILE, RunLogger
from odenet.run.metrics import kept_epoch_lines, kept_rows, read_metrics, truncate_epoch_rows, truncate_metrics
from odenet.train import distributed
from odenet.train.build import (build_data, build_model, compile_settings, configure_backends, seed_everything,
                                setup_process, speed_up)
from odenet.train.config import TrainConfig
from odenet.train.interrupts import (FailurePolicy, StopSignals, build_if_it_fits, check_threads, checkpoint_note,
                                     out_of_memory)
from odenet.train.optim import apply_optimizer_settings, build_optimizer, build_schedule, steps_per_epoch
from odenet.train.per_sample_view import PerSampleWatch
from odenet.train.resume import Progress, check_resumable, checkpoint_state, restore_state
from odenet.train.step import NonFiniteLossError, evaluate, to_device, train_step
from odenet.train.summary import epoch_line, last_epoch_rows, run_header, run_summary

RESUME_KEYS = ("model", "optimizer", "scheduler", "epoch", "step", "rng", "config", "metrics")


class Trainer:
    """Holds one run's objects; :meth:`fit` trains, evaluates every epoch and checkpoints."""

    def __init__(self, cfg: TrainConfig, dist: distributed.Context, device, run_dir, resume_from: str | None) -> None:
        self.cfg, self.dist, self.device, self.run_dir = cfg, dist, device, run_dir
        # Every check before any write: the checkpoint first (a wrong --resume fails fast), then the metrics.
        saved = load_checkpoint(resume_from, map_location=self.device, required=RESUME_KEYS) if resume_from else None
        if saved is not None:
            check_resumable(saved, resume_from, cfg)
            kept_rows(self.run_dir / "metrics.jsonl", saved["step"], saved["epoch"], saved.get("batches_done", 0))
            kept_epoch_lines(self.run_dir / PER_SAMPLE_FILE, saved["epoch"])
        seed_everything(cfg.seed)
        configure_backends(cfg)
        self.data = build_data(cfg, self.device, self.dist.rank, self.dist.world_size)
        self.raw_model = build_if_it_fits(lambda: build_model(cfg, self.data), self.device).to(self.device)
        speed_up(self.raw_model, channels_last=cfg.channels_last, amp=cfg.amp, compile=cfg.compile)
        self.model = distributed.wrap(self.dist, self.raw_model, self.device)
        self.params = list(self.model.parameters())
        self.optimizer = build_optimizer(self.params, cfg)
        self.scheduler = build_schedule(self.optimizer, cfg, steps_per_epoch(cfg, self.data.train))
        self.progress, self.resumed_from = Progress(), resume_from
        if saved is not None:
            self.progress = restore_state(saved, resume_from, self.raw_model, self.optimizer, self.scheduler,
                                          self.data.train.generator)
            if cfg.force:
                apply_optimizer_settings(self.optimizer, self.scheduler, cfg, saved["epoch"])
        self.epoch_loader_state = self.data.train.generator.get_state()
        self.n_params = sum(p.numel() for p in self.raw_model.parameters())
        self.signals = StopSignals(self.run_dir / "last.pt")
        self.failures = FailurePolicy(cfg.on_solver_failure, self.raw_model, self.run_dir / "last.pt")
        self.eta = TimeEstimate(self.device.type == "cpu", cfg)
        self.per_sample = PerSampleWatch(cfg.per_sample_every, self.data.test, self.device, cfg.channels_last)

    # ------------------------------------------------------------------ checkpoints
    def _save(self, name: str) -> None:
        if not self.dist.is_main:
            return
        # Mid-epoch, the loader's state at the epoch's start (a resume replays the epoch's draws).
        loader = self.epoch_loader_state if self.progress.batches_done else self.data.train.generator.get_state()
        save_checkpoint(self.run_dir / name, checkpoint_state(self.progress, self.raw_model, self.optimizer,
                                                              self.scheduler, loader, self.cfg.to_dict()))

    # ------------------------------------------------------------------ loop
    def fit(self) -> dict[str, Any]:
        cfg, p = self.cfg, self.progress
        if p.epoch > cfg.epochs:
            raise ConfigError(f"{self.resumed_from} has already trained {p.epoch} epochs, more than --epochs "
                              f"{cfg.epochs}; pass --epochs {p.epoch + 1} or more to train on")
        if self.resumed_from and p.epoch == cfg.epochs:
            self._say(f"run {self.run_dir} has already trained its {cfg.epochs} epochs; nothing to do (pass a "
                      f"larger --epochs to train on)")
            return finished_summary(self)
        logger = self._open_logger()
        self._say(run_opening(self.run_dir, cfg, self.data, self.n_params, self.device, self.dist.world_size,
                             f" | resumed from {self.resumed_from} at step {p.step}" if self.resumed_from else ""))
        started, last_train, test, completed = time.perf_counter(), [], {}, False
        try:
            with self.signals, compile_settings(self.raw_model, cfg.compile):
                for epoch in range(p.epoch + 1, cfg.epochs + 1):
                    last_train = self._train_epoch(epoch, logger)
                    test = self._end_epoch(epoch, logger, last_train)
            completed = True
            summary = self.summary(last_train, test, time.perf_counter() - started)
            if self.dist.is_main:
                write_json(self.run_dir / "summary.json", summary)
        except OSError as exc:
            raise write_failure(exc, f"epoch {p.epoch + 1}, step {p.step}", self.run_dir, self.eta.steps > 0) from None
        finally:
            if logger:
                _close_quietly(logger, completed)
        return summary

    def _end_epoch(self, epoch: int, logger: RunLogger | None, last_train: list[dict]) -> dict[str, Any]:
        """Evaluate, log, checkpoint (best.pt on a new best), and stop here on a pending signal."""
        p = self.progress
        test = self._evaluate()
        if logger:
            logger.log({"split": "test", "epoch": epoch, "step": p.step, **test})
        per_image = self.per_sample(self.raw_model, epoch, p.step, logger)
        p.epoch, p.batches_done = epoch, 0
        self.epoch_loader_state = self.data.train.generator.get_state()
        if test["acc"] > p.best_acc:
            p.best_acc, p.best_epoch = test["acc"], epoch
            self._save("best.pt")
        self._save("last.pt")
        self._say(epoch_report(self.eta, epoch, self.cfg.epochs, last_train, test))
        self._say(per_image)
        if epoch < self.cfg.epochs:  # a signal during the last evaluation: the run is complete anyway
            self._check_signal(epoch)
        return test

    def _open_logger(self) -> RunLogger | None:
        if not self.dist.is_main:
            return None
        p = self.progress
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.resumed_from:
            truncate_metrics(self.run_dir / "metrics.jsonl", p.step, p.epoch, p.batches_done)
            truncate_epoch_rows(self.run_dir / PER_SAMPLE_FILE, p.epoch)
        write_config(self.run_dir, self.cfg.to_dict())
        return RunLogger(self.run_dir, self.cfg.to_dict(), purge_step=p.step + 1 if self.resumed_from else None)

    def _train_epoch(self, epoch: int, logger: RunLogger | None) -> list[dict]:
        cfg, p = self.cfg, self.progress
        loader = self.data.train
        total = steps_per_epoch(cfg, loader)
        skip, p.batches_done = p.batches_done, 0  # a mid-epoch resume replays the epoch's draws up to here
        bar = tqdm(total=total, initial=skip, desc=f"epoch {epoch}/{cfg.epochs}", leave=False, dynamic_ncols=True,
                   disable=not (cfg.progress and self.dist.is_main) or None, file=sys.stderr)
        clock, rows, batches = EventClock(self.device), [], iter(loader)
        try:
            for index in range(total):
                data_start = clock.mark()
                batch = next(batches)
                if index < skip:
                    continue
                row = self._train_batch(epoch, index, batch, data_start, logger)
                p.batches_done = index + 1
                if row is None:
                    continue
                rows.append(row)
                bar.update()
                bar.set_postfix({k: f"{row[k]:.3g}" for k in ("loss", "acc", "nfe_forward", "nfe_backward")
                                 if k in row})
                if cfg.checkpoint_every and p.step % cfg.checkpoint_every == 0:
                    self._save("last.pt")
                self._say(self.eta.step(total * (cfg.epochs - epoch + 1) - p.batches_done, cfg.epochs))
                self._check_signal(epoch)
        finally:
            bar.close()
        self.scheduler.after_epoch()
        return rows

    def _train_batch(self, epoch: int, index: int, batch, data_start, logger: RunLogger | None) -> dict | None:
        """One optimizer step, logged; None when the batch failed and was skipped."""
        p = self.progress
        images, labels = to_device(batch, self.device, self.cfg.channels_last)
        self.failures.before_batch()
        try:
            row = train_step(self.model, images, labels, self.optimizer, self.params, data_start,
                             label_smoothing=self.cfg.label_smoothing, grad_clip=self.cfg.grad_clip)
        except (SolverError, NonFiniteLossError) as exc:
            self.optimizer.zero_grad(set_to_none=True)
            reset_nfe(self.model)  # the failed batch's evaluations belong to no step

            def log_skip(reason: str) -> None:
                p.skipped += 1
                if logger:
                    logger.log({"split": "skipped", "epoch": epoch, "step": p.step, "batch": index,
                                "skipped_batches": p.skipped, "reason": reason})
                self._say(f"skipped batch {index} of epoch {epoch}: {reason}")

            self.failures.failed(exc, epoch, p.step + 1, log_skip)
            return None
        self.failures.succeeded()
        row = distributed.combine_rows(self.dist, {**row, "lr": self.optimizer.param_groups[0]["lr"]})
        self.scheduler.after_step()
        p.step += 1
        if logger:
            logger.log({"split": "train", "epoch": epoch, "step": p.step, **row})
        return row

    def _evaluate(self) -> dict[str, Any]:
        try:
            test = evaluate(self.model, self.data.test, self.device, limit=self.cfg.limit_test_batches,
                            channels_last=self.cfg.channels_last)
        except SolverError as exc:
            raise RunFailure(f"evaluation after epoch {self.progress.epoch + 1} stopped: {exc}; "
                             f"{checkpoint_note(self.run_dir / 'last.pt')}; try a looser --tol or a larger "
                             f"--max-num-steps") from None
        return distributed.combine_evaluation(self.dist, test, self.device)

    def _check_signal(self, epoch: int) -> None:
        if not distributed.any_rank(self.dist, self.signals.received is not None, self.device):
            return
        self._save("last.pt")
        raise StopSignals.interrupted(self.signals.received, f"epoch {epoch}, step {self.progress.step}",
                                      self.run_dir / "last.pt")

    # ------------------------------------------------------------------ reporting
    def _say(self, text: str | None) -> None:
        if text and self.dist.is_main:
            say(text)

    def summary(self, last_train: list[dict], test: dict[str, Any], wall_s: float) -> dict[str, Any]:
        p = self.progress
        return run_summary(run_dir=str(self.run_dir), config=self.cfg.to_dict(), params=self.n_params,
                           data_source=self.data.source, device=str(self.device), world_size=self.dist.world_size,
                           epochs_completed=p.epoch, steps=p.step, best_acc=p.best_acc, best_epoch=p.best_epoch,
                           skipped_batches=p.skipped, last_train=last_train, test=test, wall_s=wall_s)


def finished_summary(trainer: Trainer) -> dict[str, Any]:
    """Resuming a run that has trained all its epochs: nothing to train, nothing rewritten.

    Only a summary that the interrupted run did not get to write is made, from its metrics.
    """
    path = trainer.run_dir / "summary.json"
    if path.is_file():
        return read_mapping(path, "delete it, and resume again to write it anew from metrics.jsonl", "run summary")
    last_train, test = last_epoch_rows(read_metrics(trainer.run_dir / "metrics.jsonl"), trainer.progress.epoch)
    summary = trainer.summary(last_train, test, float("nan"))
    if trainer.dist.is_main:
        write_json(path, summary)
    return summary


class TimeEstimate:
    """A CPU run's time left: after its first AFTER_STEPS steps, from their pace (training steps only, said so),
    if that is MIN_S or more; after each epoch, from the epochs so far (training and evaluation)."""

    AFTER_STEPS = 10
    MIN_S = 60.0  # shorter runs say nothing

    def __init__(self, cpu: bool, cfg: TrainConfig | None = None) -> None:
        self.cpu, self.steps, self.started = cpu, 0, time.perf_counter()
        self.limited = bool(cfg and cfg.limit_train_batches)
        self.epochs_started, self.epochs_done = time.perf_counter(), 0

    def step(self, steps_left: int, epochs: int) -> str | None:
        """Count one step; the estimate once ``AFTER_STEPS`` are done (``steps_left`` after this one).

        Timed from the end of the first step, which carries one-time costs (allocations, compilation).
        """
        self.steps += 1
        if self.steps == 1:
            self.started = time.perf_counter()
        if not self.cpu or self.steps != self.AFTER_STEPS:
            return None
        per_step = (time.perf_counter() - self.started) / (self.AFTER_STEPS - 1)
        return eta_line(per_step, steps_left, epochs, self.MIN_S, self.limited)

    def epoch(self, epoch: int, epochs: int) -> str | None:
        """After an epoch's evaluation: the time left for the other epochs at this session's pace, if MIN_S or more."""
        self.epochs_done += 1
        left = (time.perf_counter() - self.epochs_started) / self.epochs_done * (epochs - epoch)
        if not self.cpu or left < self.MIN_S:
            return None
        rest = f"epoch {epochs}" if epoch + 1 == epochs else f"epochs {epoch + 1}-{epochs}"
        return f"about {_amount(left)} left for {rest} (training and evaluations, at the pace so far)"


def _amount(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def eta_line(seconds_per_step: float, steps_left: int, epochs: int, min_s: float = 0.0,
             limited: bool = False) -> str | None:
    """The first estimate's sentence (training steps only, as it says; each epoch's line then gives the time left
    with evaluations), or None under ``min_s``. ``limited``: --limit-train-batches is set already."""
    total = seconds_per_step * steps_left
    if total < min_s:
        return None
    less = "--device cuda or fewer --epochs" if limited else "--device cuda, --limit-train-batches or fewer --epochs"
    return (f"about {_amount(total)} for {epochs} epochs at {seconds_per_step:.2f} s per step on the CPU (training "
            f"steps only; {less} for less)")


def say(text: str) -> None:
    """A console line above the progress bar, never inside it (tqdm clears the bar, prints, redraws it)."""
    tqdm.write(text, file=sys.stdout)
    sys.stdout.flush()


def run_opening(run_dir, cfg: TrainConfig, *facts: Any) -> str:
    """The run's first line (:func:`run_header`), and a note when a step schedule will never decay the rate."""
    line = run_header(run_dir, cfg, *facts)
    if cfg.schedule == "step" and cfg.milestones and min(cfg.milestones) >= cfg.epochs:
        span = "its one epoch" if cfg.epochs == 1 else f"all {cfg.epochs} epochs"
        line += (f"\nnote: the learning rate stays {cfg.lr:g} for {span}: --schedule step lowers it "
                 f"at epochs {','.join(map(str, cfg.milestones))} (--milestones), which this run does not reach; for "
                 f"a short run use --schedule onecycle (the fast recipe, configs/*-fast.yaml) or earlier --milestones")
    return line


def epoch_report(eta: TimeEstimate, epoch: int, epochs: int, train: list[dict], test: dict[str, Any]) -> str:
    """The epoch's line (:func:`epoch_line`) and the time left."""
    line = epoch_line(epoch, epochs, train, test)
    left = eta.epoch(epoch, epochs)
    return f"{line}\n{left}" if left else line


def write_failure(exc: OSError, where: str, run_dir, started: bool) -> RunFailure | UserError:
    """A failed write (disk full, quota, a vanished mount) in one sentence: exit 3 once training has started, else 2."""
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
    what = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded"}.get(
        exc.errno, exc.strerror or str(exc))
    target = f" writing {exc.filename}" if exc.filename else ""
    fix = "free space" if full else f"make {run_dir} writable"
    if not started:
        return UserError(f"cannot start training in {run_dir}: {what}{target}; {fix} and run again")
    return RunFailure(f"training stopped at {where}: {what}{target}; {checkpoint_note(run_dir / 'last.pt')} "
                      f"(never a partial one: checkpoints are written whole or not at all); {fix} and continue "
                      f"with --resume {run_dir / 'last.pt'}")


def _close_quietly(logger: RunLogger, completed: bool) -> None:
    try:
        logger.close(completed)
    except OSError:  # the disk that filled up cannot take the last buffered bytes either; the failure says so
        pass


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run one training job end to end; returns the summary written to ``summary.json``.

    The run directory is locked for the run's life (the main process holds the lock): a second
    run with the same --run-name is refused instead of interleaving its rows with this one's.
    """
    dist, device = setup_process(cfg)
    check_threads(cfg.threads, "--threads")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    cfg = dataclasses.replace(cfg, threads=torch.get_num_threads())  # what ran, in config.yaml and checkpoints
    try:
        run_dir, resume_from, lock = claim_run_dir(cfg.to_dict(), lock=dist.is_main)
        try:
            with out_of_memory(f"training in {run_dir}", checkpoint_note(run_dir / "last.pt") + " and the run's "
                               "files are intact", "a smaller --batch-size, --width or --augment-dim, or --adjoint "
                               "(memory that does not grow with the number of steps)"):
                return Trainer(cfg, dist, device, run_dir, resume_from).fit()
        finally:
            if lock is not None:
                lock.release()
    finally:
        distributed.shutdown(dist)
