"""What stops a training loop, and how: SIGINT/SIGTERM, and failed solves or non-finite losses.

* :class:`StopSignals` records the first SIGINT/SIGTERM so that the loop can finish its step,
  checkpoint and exit with 128 + signal; a second signal stops at once (the last checkpoint stays).
* :class:`FailurePolicy` decides what a failed batch does: stop the run with one explained
  sentence (:class:`odenet.errors.RunFailure`), or with ``--on-solver-failure skip-batch`` skip
  it — weights, optimizer and BatchNorm statistics as they were — and carry on, up to
  ``MAX_CONSECUTIVE_SKIPS`` batches in a row.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from odenet.errors import Interrupted, RunFailure, StoppedAtOnce
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
