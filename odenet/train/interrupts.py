"""What stops a training loop, and how: SIGINT/SIGTERM, and failed solves or non-finite losses.

* :class:`StopSignals` records the first SIGINT/SIGTERM so that the loop can finish its step,
  checkpoint and exit with 128 + signal; a second signal stops at once (the last checkpoint stays).
* :class:`FailurePolicy` decides what a failed batch does: stop the run with one explained
  sentence (:class:`odenet.errors.RunFailure`), or with ``--on-solver-failure skip-batch`` skip
  it — weights, optimizer and BatchNorm statistics as they were — and carry on, up to
  ``MAX_CONSECUTIVE_SKIPS`` batches in a row.
* :func:`build_if_it_fits` refuses a model whose weights and optimizer state alone exceed the device's memory
  before any is allocated, and :func:`out_of_memory` turns an allocation that fails anyway (activations
  grow with NFE and batch) into one sentence (:class:`odenet.errors.RunFailure`), the run's files kept.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from odenet.errors import ConfigError, Interrupted, RunFailure, StoppedAtOnce
from odenet.solve import SolverError

MAX_CONSECUTIVE_SKIPS = 20


# SIGUSR2 is what Slurm sends (through submitit, 90 s ahead) before a job's time limit: stop at the
# step's end with a checkpoint, so that re-running the grid resumes the point.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGUSR2") if hasattr(signal, name))


class StopSignals:
    """Context manager: SIGINT/SIGTERM handlers for the loop's lifetime (main thread only).

    The first signal is recorded (the loop finishes its step, checkpoints and stops); a second
    one raises :class:`StoppedAtOnce` where the program is. A checkpoint being written then is
    abandoned (its temporary file removed), so ``last_checkpoint`` is the previous one, whole.
    """

    def __init__(self, last_checkpoint: Path | None = None) -> None:
        self.received: int | None = None
        self.last_checkpoint = last_checkpoint
        self._previous: dict = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if self.received is None:
            self.received = signum
            return
        # A second signal: stop now, keeping the last checkpoint.
        kept = checkpoint_note(self.last_checkpoint) if self.last_checkpoint else "no checkpoint was kept"
        resume = f"; continue with --resume {self.last_checkpoint}" if self.last_checkpoint and \
            self.last_checkpoint.is_file() else ""
        raise StoppedAtOnce(signum, f"stopped at once by a second {signal.Signals(signum).name}; {kept}{resume}")

    @staticmethod
    def interrupted(signum: int | None, where: str, checkpoint: Path) -> Interrupted:
        signum = signum or signal.SIGTERM
        return Interrupted(signum, f"interrupted by {signal.Signals(signum).name} at {where}; checkpoint "
                                   f"{checkpoint} written; continue with --resume {checkpoint}")


def checkpoint_note(last: Path) -> str:
    return f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was written yet"


class FailurePolicy:
    """Stop or skip a batch whose solve failed or whose loss was not finite (``--on-solver-failure``)."""

    def __init__(self, mode: str, model: nn.Module, last_checkpoint: Path) -> None:
        self.skip = mode == "skip-batch"
        self.model = model
        self.last_checkpoint = last_checkpoint
        self.consecutive = 0
        self._buffers: list[torch.Tensor] | None = None

    def before_batch(self) -> None:
        """A batch that may be skipped must not leave BatchNorm running statistics behind."""
        if self.skip:
            self._buffers = [b.clone() for b in self.model.buffers()]

    def succeeded(self) -> None:
        self.consecutive = 0

    def failed(self, exc: Exception, epoch: int, step: int, log_skip: Callable[[str], None]) -> None:
        """Restore the batch's side effects, then skip it (``log_skip(reason)``) or raise RunFailure."""
        if self._buffers is not None:
            with torch.no_grad():
                for saved, live in zip(self._buffers, self.model.buffers()):
                    live.copy_(saved)
        what = (f"{exc.reason} in the {exc.phase} solve ({exc.solver.describe()})" if isinstance(exc, SolverError)
                else f"the loss was not finite ({exc})")
        if self.skip and self.consecutive + 1 < MAX_CONSECUTIVE_SKIPS:
            self.consecutive += 1
            log_skip(what)
            return
        remedy = ("a looser --tol, a larger --max-num-steps, --weight-decay, a smoother activation, or a fixed-step "
                  "solver (--solver rk4 --steps N)") if isinstance(exc, SolverError) else \
                 "a lower --lr, --weight-decay, or a looser --tol"
        gave_up = f" ({MAX_CONSECUTIVE_SKIPS} batches in a row)" if self.consecutive else ""
        raise RunFailure(f"training stopped at epoch {epoch}, step {step}{gave_up}: {what}; "
                         f"{checkpoint_note(self.last_checkpoint)}; try {remedy}, or --on-solver-failure skip-batch")


# What a failed allocation says: torch's CPU allocator, CUDA's caching allocator, Python's own.
ALLOCATION_MARKS = ("DefaultCPUAllocator", "can't allocate memory", "not enough memory", "out of memory")
BYTES_PER_PARAMETER = 16  # float32 weights, their gradients and AdamW's two moments (SGD's momentum: fewer)


def is_allocation_failure(exc: BaseException) -> bool:
    return isinstance(exc, (MemoryError, torch.OutOfMemoryError)) or (
        isinstance(exc, RuntimeError) and any(mark in str(exc) for mark in ALLOCATION_MARKS))


@contextlib.contextmanager
def out_of_memory(what: str, kept: str, remedy: str) -> Iterator[None]:
    """An allocation that fails inside the block → RunFailure: "``what`` ran out of memory (...); ``kept``; try
    ``remedy``"; any other error passes through."""
    try:
        yield
    except (MemoryError, RuntimeError) as exc:
        if not is_allocation_failure(exc):
            raise
        detail = (str(exc).strip().splitlines() or ["MemoryError"])[0]
        detail = detail.split("DefaultCPUAllocator: ", 1)[-1].split(". ")[0][:160]
        raise RunFailure(f"{what} ran out of memory ({detail}); {kept}; try {remedy}") from None


def cpu_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def check_threads(threads: int | None, flag: str) -> None:
    """More CPU threads than cores only slow each other down: refused, in one sentence naming ``flag``."""
    if threads is not None and threads > cpu_cores():
        raise ConfigError(f"{flag} {threads} is more than this machine's {cpu_cores()} cores; give at most "
                          f"{cpu_cores()}")


def device_memory(device: torch.device) -> int | None:
    """The device's memory in bytes (a GPU's, or the machine's RAM for the CPU); None where it cannot be told."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def build_if_it_fits(build: Callable[[], nn.Module], device: torch.device,
                     remedy: str = "use a smaller --width or --augment-dim") -> nn.Module:
    """``build()`` the model, after building it on the meta device (shapes only, nothing allocated) and refusing it
    when its parameters' :data:`BYTES_PER_PARAMETER` alone exceed the device's memory (activations come on top).

    Raises:
        ConfigError: the model cannot fit; ``remedy`` names the options that shrink it.
    """
    with torch.device("meta"):
        params = sum(p.numel() for p in build().parameters())
    need, have = params * BYTES_PER_PARAMETER, device_memory(device)
    if have is not None and need > have:
        raise ConfigError(f"the model has {params:,} parameters: {need / 2 ** 30:,.1f} GiB for its weights, gradients "
                          f"and optimizer state alone, more than the {have / 2 ** 30:,.1f} GiB of {device.type} memory "
                          f"here; {remedy}")
    return build()
