"""Measurements of one phase (a training step, an evaluation batch): memory and time.

``act_mem_mb`` is the size of the tensors autograd holds for backward at the end of the
forward pass, found through ``torch.autograd.graph.saved_tensors_hooks``. It is what an
ODE-Net's memory claim is about (adjoint O(1) in the number of solver steps, direct backprop
O(NFE), ResNet O(depth)), it is exact on every device including the CPU, and it does not
depend on the caching allocator. Each storage counts once however many ops save it,
parameters are left out (they are resident whatever the method), and so are tensors whose
graph branch was already freed when the forward pass ended (e.g. an adaptive solver's
rejected trial steps): what is counted is what the backward pass will find in memory.
"""

from __future__ import annotations

import resource
import sys
import time
import weakref
from collections.abc import Iterable

import torch

MB = 2 ** 20


class SavedTensorMeter:
    """Context manager: bytes of distinct storages saved for backward inside it and still held at its exit.

    Args:
        exclude: tensors whose storages are not activations (the model's parameters).
    """

    def __init__(self, exclude: Iterable[torch.Tensor] = ()) -> None:
        self._exclude = {t.untyped_storage().data_ptr() for t in exclude}
        self._saved: list[weakref.ref] = []
        self.bytes = 0
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, _unpack)

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        # Autograd keeps what this returns. Returning ``tensor`` itself would, for a saved
        # output, tie the tensor to its own grad_fn: a reference cycle through C++ that no
        # garbage collection breaks, so graph branches that backward never visits (an adaptive
        # solver's step-size control) leaked every step (~34 MB a step at batch 128 on an H200).
        # The detached alias shares the storage and autograd restores the grad_fn on unpack.
        alias = tensor.detach()
        self._saved.append(weakref.ref(alias))  # weak: the meter must not keep alive what autograd frees
        return alias

    def _count(self) -> int:
        """Sum over live saved tensors, one entry per storage (addresses of live storages are unique)."""
        sizes: dict[tuple[str, int], int] = {}
        for ref in self._saved:
            tensor = ref()
            if tensor is None:
                continue
            try:
                storage = tensor.untyped_storage()
                key = (str(tensor.device), storage.data_ptr())
                nbytes = storage.nbytes()
            except (RuntimeError, NotImplementedError):  # tensors without storage (fake/meta under compile)
                continue
            if key[1] not in self._exclude:
                sizes[key] = nbytes
        return sum(sizes.values())

    @property
    def mb(self) -> float:
        return self.bytes / MB

    def __enter__(self) -> "SavedTensorMeter":
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)
        self.bytes = self._count()
        self._saved.clear()


def _unpack(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def sync(device: torch.device) -> None:
    """Wait for queued GPU work so that a timer reads the work's time, not its launch time."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class EventClock:
    """Timestamps that cost no host synchronisation when taken: CUDA events on a GPU, perf_counter on a CPU.

    A training step marks its phase boundaries with these and synchronises once, at its end:
    a synchronisation between forward and backward would stall the GPU pipeline that the
    numbers are meant to describe. Event times are the GPU's timeline, which on an idle GPU
    starts when the host records the first mark.
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def mark(self):
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def wait(self, mark) -> None:
        """Block until ``mark`` has happened (before reading any interval that ends there)."""
        if self.cuda:
            mark.synchronize()

    def ms(self, start, end) -> float:
        return start.elapsed_time(end) if self.cuda else (end - start) * 1e3


class Clock:
    """Wall-clock reader that synchronises the device first."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def now(self) -> float:
        sync(self.device)
        return time.perf_counter()


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mem_mb(device: torch.device) -> float | None:
    """CUDA max-allocated bytes since the last :func:`reset_peak`, in MiB; ``None`` off CUDA."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / MB


def rss_peak_mb() -> float:
    """Peak resident set size of this process so far (never resets), in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MB if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux
