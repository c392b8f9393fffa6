"""How a grid's points are spread over processes, GPUs and machines: the options, checked, and the slots.

Three engines run the same job function (:func:`odenet.grid.job.run_point`):

* ``--jobs 1`` (default): one point after another in this process;
* ``--jobs N``: N points at once, each a ``python -m odenet.grid`` process of its own (a fresh
  interpreter, so CUDA_VISIBLE_DEVICES and the thread count are set before torch starts, and a
  point that crashes or is killed takes no other point with it);
* ``--launcher submitit``: one Slurm job array (or submitit's local executor), one task per point.

A point's numbers do not depend on how it is launched: every point runs with the same number of CPU threads
(:func:`point_threads`: ``--threads-per-job``, else :data:`DEFAULT_THREADS`, whatever ``--jobs``), recorded in
its config.yaml, because float rounding, so the last digits of losses and NFE, depends on the thread count.
Bit for bit the same numbers need the same thread count, device, torch and machine type.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, fields
from typing import Any

import torch
from tqdm import tqdm

from odenet.config import ConfigError, flag, opt
from odenet.train import interrupts
from odenet.train.interrupts import check_threads

LAUNCHERS = ("local", "submitit")
EXECUTORS = ("slurm", "local")
DEFAULT_THREADS = 1  # per point, whatever --jobs: the same numbers from --jobs 1 and --jobs N
MAX_JOBS = 4096  # more processes at once than any one machine runs: a typo, refused before any is started


@dataclass
class LaunchOptions:
    jobs: int = opt(1, "grid points trained at once, each in its own process (local launcher)", metavar="N")
    jobs_per_gpu: int = opt(1, "grid points sharing one GPU (GPUs are given round-robin)", metavar="K")
    threads_per_job: int | None = opt(None, f"CPU threads of each point (default: {DEFAULT_THREADS}, whatever "
                                            f"--jobs, so that a point's numbers do not depend on it; recorded in its "
                                            f"config.yaml)", metavar="T")
    launcher: str = opt("local", "local (this machine), or submitit (a Slurm job array; from the "
                                 "repository root: pip install -e '.[cluster]')")
    submitit_executor: str = opt("slurm", "with --launcher submitit: slurm, or local (submitit's local executor: "
                                          "real processes on this machine)")
    slurm_partition: str | None = opt(None, "Slurm partition", metavar="NAME")
    slurm_gpus_per_job: int = opt(1, "GPUs per grid point (0 on a CPU-only cluster; more than 1 makes each point "
                                     "a DDP run, one task per GPU)", metavar="G")
    slurm_nodes: int = opt(1, "nodes per grid point (with more than 1: a DDP run across nodes)", metavar="N")
    slurm_cpus_per_job: int | None = opt(None, "CPUs per task, also its torch threads", metavar="C")
    slurm_time: str = opt("60", "time limit per grid point: minutes, or [HH:]MM:SS", metavar="TIME")
    slurm_array_parallelism: int | None = opt(None, "grid points running at once (default: all)", metavar="N")
    slurm_setup: list[str] | None = opt(None, "shell lines run before each job, comma-separated (e.g. 'module load "
                                              "cuda')", metavar="LINE,...")

    @classmethod
    def of(cls, args: Any) -> "LaunchOptions":
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})


def check_launch(opts: LaunchOptions) -> None:
    """Every launch flag, checked before anything runs (ConfigError: one sentence)."""
    if opts.launcher not in LAUNCHERS:
        raise ConfigError(f"unknown --launcher {opts.launcher!r}; valid: {', '.join(LAUNCHERS)}")
    if opts.submitit_executor not in EXECUTORS:
        raise ConfigError(f"unknown --submitit-executor {opts.submitit_executor!r}; valid: {', '.join(EXECUTORS)}")
    for name in ("jobs", "jobs_per_gpu", "threads_per_job", "slurm_nodes", "slurm_cpus_per_job",
                 "slurm_array_parallelism"):
        value = getattr(opts, name)
        if value is not None and value < 1:
            raise ConfigError(f"{flag(name)} must be at least 1, got {value}")
    for name, limit in (("jobs", MAX_JOBS), ("slurm_array_parallelism", MAX_JOBS), ("threads_per_job", MAX_JOBS),
                        ("slurm_cpus_per_job", MAX_JOBS), ("slurm_nodes", MAX_JOBS), ("jobs_per_gpu", MAX_JOBS),
                        ("slurm_gpus_per_job", MAX_JOBS)):
        value = getattr(opts, name)
        if value is not None and value > limit:
            raise ConfigError(f"{flag(name)} {value:,} is more than any machine runs at once; give at most {limit:,}")
    if opts.slurm_gpus_per_job < 0:
        raise ConfigError(f"--slurm-gpus-per-job must be 0 or more, got {opts.slurm_gpus_per_job}")
    timeout_minutes(opts.slurm_time)
    defaults = LaunchOptions()
    cluster_flags = [f.name for f in fields(LaunchOptions) if f.name.startswith(("slurm_", "submitit_"))
                     and getattr(opts, f.name) != getattr(defaults, f.name)]
    if opts.launcher == "local" and cluster_flags:
        raise ConfigError(f"{flag(cluster_flags[0])} applies to --launcher submitit only; add --launcher submitit "
                          f"or drop it")
    if opts.launcher == "submitit":
        _check_submitit(opts)


def _check_submitit(opts: LaunchOptions) -> None:
    if opts.jobs != 1:
        raise ConfigError("--jobs is for the local launcher; with --launcher submitit every point is a job of "
                          "the array (limit them with --slurm-array-parallelism)")
    if importlib.util.find_spec("submitit") is None:
        raise ConfigError("--launcher submitit needs the submitit package; from the repository root: pip install "
                          "-e '.[cluster]' (or pip install submitit)")
    if opts.submitit_executor == "slurm" and shutil.which("sbatch") is None:
        raise ConfigError("--launcher submitit found no Slurm here (no sbatch on PATH); run on a Slurm login "
                          "node, or pass --submitit-executor local to run the jobs through submitit on this machine")
    if opts.submitit_executor == "local" and opts.slurm_nodes > 1:
        raise ConfigError("--slurm-nodes above 1 needs Slurm; submitit's local executor runs on one machine")


def timeout_minutes(text: str) -> int:
    """--slurm-time as minutes: ``90``, ``30:00`` (MM:SS) or ``1:30:00`` (HH:MM:SS)."""
    if not re.fullmatch(r"\d+(:\d{1,2}){0,2}", text.strip()):
        raise ConfigError(f"--slurm-time expects minutes or [HH:]MM:SS, got {text!r}")
    parts = [int(p) for p in text.strip().split(":")]
    if len(parts) == 1:
        minutes = parts[0]
    else:
        hours, mins, secs = ([0] * (3 - len(parts)) + parts)
        minutes = hours * 60 + mins + (secs > 0)
    if minutes < 1:
        raise ConfigError(f"--slurm-time must be at least one minute, got {text!r}")
    return minutes


def check_on_this_machine(opts: LaunchOptions, device: str) -> None:
    """The local launcher's options against this machine: threads it has, GPUs to share. Refused rather than
    accepted without a word (--jobs-per-gpu on a machine without GPUs would do nothing)."""
    if opts.launcher != "local":
        return
    check_threads(opts.threads_per_job, "--threads-per-job")
    if opts.jobs_per_gpu != 1 and not visible_gpus(device):
        where = "--set device=cpu" if device == "cpu" else "this machine has no GPU"
        raise ConfigError(f"--jobs-per-gpu shares GPUs between points, and {where}: drop it (--jobs alone sets how "
                          f"many points run at once)")
    threads = point_threads(opts)
    if opts.jobs * threads > cpu_cores():
        print(f"note: --jobs {opts.jobs} x {threads} threads per point is more than this machine's {cpu_cores()} "
              f"cores: points run slower, their numbers are unchanged", flush=True)


def point_threads(opts: LaunchOptions) -> int:
    """CPU threads of every point: --threads-per-job, else (on Slurm) --slurm-cpus-per-job, else
    :data:`DEFAULT_THREADS`; never the cores divided by --jobs, which would make the numbers depend on --jobs."""
    return opts.threads_per_job or (opts.slurm_cpus_per_job if opts.launcher == "submitit" else None) or \
        DEFAULT_THREADS


def cpu_cores() -> int:
    return interrupts.cpu_cores()


def visible_gpus(device: str) -> list[str]:
    """The GPUs this machine lets the grid hand out (none when the runs are on the CPU)."""
    if device == "cpu":
        return []
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return [g.strip() for g in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if g.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


def gpu_slots(jobs: int, per_gpu: int, gpus: list[str]) -> list[str | None]:
    """One CUDA_VISIBLE_DEVICES value per point that may run at once, round-robin over the GPUs, at most
    ``per_gpu`` points on each; without GPUs, ``jobs`` CPU slots."""
    if not gpus:
        return [None] * jobs
    slots = [g for _ in range(per_gpu) for g in gpus]
    return slots[:jobs]


class Progress:
    """One line per finished point with its headline numbers and its whole time (training and sweep: a
    point's summary has its training's alone), then the time left at the mean time a point has taken so far;
    a points-done bar on a terminal."""

    def __init__(self, total: int, done: int) -> None:
        self.total, self.done = total, done
        self.started, self.finished_here = time.perf_counter(), 0
        self.bar = tqdm(total=total, initial=done, desc="grid", unit="point", file=sys.stderr, dynamic_ncols=True,
                        disable=not sys.stderr.isatty())

    def finished(self, record: dict[str, Any]) -> None:
        self.done, self.finished_here = self.done + 1, self.finished_here + 1
        tqdm.write(point_line(record, self.done, self.total), file=sys.stdout)
        left, elapsed = self.total - self.done, time.perf_counter() - self.started
        if left:
            eta = minutes(elapsed / self.finished_here * left)
            tqdm.write(f"grid: {self.done}/{self.total} points done; about {eta} left (the mean time per point so far, "
                       f"training and sweeps; points differ)", file=sys.stdout)
        sys.stdout.flush()
        self.bar.update()

    def close(self) -> None:
        self.bar.close()


def point_line(record: dict[str, Any], done: int, total: int) -> str:
    """``[done/total] run: test acc, nfe_forward, time`` of a finished point, or how it failed."""
    head = f"[{done}/{total}] {record['run_name']}"
    if record["status"] != "ok":
        return (f"{head} {record['status']} (exit {record['exit_code']}): {record.get('message', '')} "
                f"(run directory {record['run_dir']})")
    acc = f"test acc {record['acc']:.4f}" if record.get("acc") is not None else "test acc —"
    nfe = f", nfe_forward {record['nfe_forward']:.1f}" if record.get("nfe_forward") is not None else ""
    train = record.get("wall_s") if isinstance(record.get("wall_s"), (int, float)) else float("nan")
    whole = record["ended"] - record["started"] if {"started", "ended"} <= set(record) else float("nan")
    if whole == whole:  # NaN when the record lacks a time
        time_text = f"{whole:.0f} s in all, {train:.0f} s of it training" if train == train else f"{whole:.0f} s"
    else:
        time_text = f"{train:.0f} s training" if train == train else "—"
    return f"{head}: {acc}{nfe}, {time_text}"


def minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min" if seconds < 5400 else \
        f"{seconds / 3600:.1f} h"
