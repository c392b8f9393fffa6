"""Multi-process training with torchrun and DistributedDataParallel (NCCL on GPU, gloo on CPU).

``torchrun --nproc-per-node N train.py ...`` sets RANK, LOCAL_RANK and WORLD_SIZE; every
process trains on its shard of each global batch (global batch = ``--batch-size`` × N).
Adaptive solvers take different numbers of steps on different ranks, so per-step rows carry
each rank's NFE as well as their mean and max; loss and accuracy are averaged over ranks;
only rank 0 writes logs and checkpoints.
"""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

# How each per-step measurement combines across ranks (anything else: rank 0's value).
MEAN_KEYS = ("loss", "acc", "act_mem_mb", "nfe_backprop", "steps_accepted", "steps_rejected",
             "steps_accepted_backward", "steps_rejected_backward")
MAX_KEYS = ("time_step_ms", "time_forward_ms", "time_backward_ms", "time_data_ms", "time_meter_ms", "time_ms",
            "peak_mem_mb")
SUM_KEYS = ("images_per_s",)
NFE_KEYS = ("nfe_forward", "nfe_backward")
BLOCK_NFE_PREFIXES = ("nfe_forward/", "nfe_backward/")


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device_type: str) -> Context:
    """Join the process group torchrun describes (no-op for a single process)."""
    if not launched_by_torchrun():
        return Context()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return Context(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def shutdown(ctx: Context) -> None:
    if ctx.active and dist.is_initialized():
        dist.destroy_process_group()


def combine_rows(ctx: Context, row: dict[str, Any]) -> dict[str, Any]:
    """One training step's (or evaluation's) row from every rank → the row rank 0 logs.

    ``nfe_forward`` is the mean over ranks, ``nfe_forward_min`` / ``_max`` the extremes over
    every rank's batches (as in a single-process evaluation row), ``nfe_forward/rank<r>`` each
    rank's mean; likewise backward.
    """
    if not ctx.active:
        return row
    rows: list[dict[str, Any]] = [{} for _ in range(ctx.world_size)]
    dist.all_gather_object(rows, row)
    out = dict(rows[0])
    block_keys = [k for k in out if k.startswith(BLOCK_NFE_PREFIXES)]  # per ODE block: mean over ranks
    for key in MEAN_KEYS:
        if key in out:
            out[key] = statistics.fmean(r[key] for r in rows)
    for key in MAX_KEYS:
        if key in out:
            out[key] = max(r[key] for r in rows)
    for key in SUM_KEYS:
        if key in out:
            out[key] = sum(r[key] for r in rows)
    for key in NFE_KEYS:
        if key in out:
            values = [r[key] for r in rows]
            out[key] = statistics.fmean(values)
            if f"{key}_max" in row:  # an evaluation row: each rank's per-batch extremes
                out[f"{key}_min"] = min(r[f"{key}_min"] for r in rows)
                out[f"{key}_max"] = max(r[f"{key}_max"] for r in rows)
            else:  # a training row: each rank's shard of the global batch is one batch
                out[f"{key}_min"] = min(values)
                out[f"{key}_max"] = max(values)
            out.update({f"{key}/rank{i}": v for i, v in enumerate(values)})
    for key in block_keys:
        out[key] = statistics.fmean(r[key] for r in rows)
    return out


def all_sum(ctx: Context, values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum over ranks (evaluation totals)."""
    if not ctx.active:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def any_rank(ctx: Context, flag: bool, device: torch.device) -> bool:
    """True if ``flag`` is set on any rank (e.g. a stop signal), so that all ranks stop together."""
    if not ctx.active:
        return flag
    tensor = torch.tensor([int(flag)], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def wrap(ctx: Context, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The model as the training loop calls it: DistributedDataParallel under torchrun, else itself."""
    if not ctx.active:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def combine_evaluation(ctx: Context, test: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """One evaluation's row from every rank's share of the test set → loss and accuracy over all images."""
    if not ctx.active:
        return test
    n = test["images"]
    loss_sum, correct, images = all_sum(ctx, [test["loss"] * n, test["acc"] * n, n], device)
    return {**combine_rows(ctx, test), "loss": loss_sum / images, "acc": correct / images, "images": int(images)}
