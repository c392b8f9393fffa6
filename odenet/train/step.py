"""One timed optimizer step and one evaluation pass — each returns its measurements as data.

Nothing here writes files; callers hand the returned dicts to a logger. Keys are the
project-wide names: ``loss``, ``acc``, ``nfe_forward``, ``nfe_backward``, ``nfe_backprop``,
``steps_accepted``, ``steps_rejected``, ``act_mem_mb``, ``peak_mem_mb`` (CUDA only),
``time_step_ms`` = ``time_forward_ms`` + ``time_backward_ms`` + optimizer time,
``time_data_ms``, and ``time_meter_ms`` (the memory meter's own exit work, kept out of the other
times); evaluation reports ``time_ms`` per batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from odenet.errors import RunFailure
from odenet.measure import Clock, EventClock, SavedTensorMeter, peak_mem_mb, reset_peak
from odenet.models.ode import ode_blocks, regularization_terms, reset_nfe, take_nfe
from odenet.solve.settings import as_solver_error


class NonFiniteLossError(RunFailure):
    """The loss of a training step is NaN or infinite."""


def backward(model: nn.Module, loss: torch.Tensor) -> None:
    """loss.backward(), turning a failed adjoint solve into a SolverError."""
    try:
        loss.backward()
    except AssertionError as exc:
        blocks = list(ode_blocks(model).values())
        error = as_solver_error(exc, blocks[0].solver, "backward") if blocks else None
        if error is None:
            raise
        raise error from None


def flat_nfe(stats: dict) -> dict[str, float]:
    """:func:`read_nfe`'s dict → flat metric keys; per-block keys (``nfe_forward/<block>``) only with several blocks."""
    if not stats:
        return {}
    row = {k: v for k, v in stats.items() if k != "blocks"}
    if len(stats["blocks"]) > 1:
        for name, block in stats["blocks"].items():
            for key in ("nfe_forward", "nfe_backward"):
                row[f"{key}/{name}"] = block[key]
    return row


def optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer,
                   compute: Callable[[], tuple[torch.Tensor, Mapping[str, torch.Tensor | float]]], *,
                   params: Iterable[torch.Tensor] | None = None, measure_memory: bool = True,
                   data_start=None, grad_clip: float | None = None) -> dict[str, float]:
    """Forward (``compute()``), backward and optimizer step, timed and counted: every training loop's step.

    ``compute()`` returns the loss to minimise and other quantities to report (0-d tensors or
    floats, e.g. ``acc``); the row holds ``loss`` and those (when they include a ``loss`` of their own —
    the plain cross-entropy beside a regularised or smoothed objective — the minimised value is
    ``loss_total``), the phase times, ``act_mem_mb``
    (when ``measure_memory``; ``params`` are left out of it), ``peak_mem_mb`` on CUDA and the
    NFE counters. Phase times come from :class:`EventClock` marks, read after the step's two
    unavoidable synchronisations (the loss, which decides whether to update, and the step's
    end). ``data_start``: an EventClock mark taken before the batch was fetched (``time_data_ms``).
    ``grad_clip``: the gradients' global norm is clipped to it before the update.

    Raises:
        NonFiniteLossError: the loss is NaN or infinite; the weights are left as they were.
        SolverError: a forward or adjoint solve failed.
    """
    device = next(model.parameters()).device
    clock = EventClock(device)
    reset_nfe(model)  # whatever an earlier phase left must not count here
    reset_peak(device)
    t0 = clock.mark()
    meter = SavedTensorMeter(exclude=model.parameters() if params is None else params) if measure_memory else None
    if meter is None:
        loss, extras = compute()
        t1 = t1_meter = clock.mark()
    else:
        with meter:
            loss, extras = compute()
            t1 = clock.mark()
        # The meter's exit (summing the saved storages: milliseconds for a direct-backprop graph of
        # ~1000 tensors) is odenet's measuring, not the model's work: timed apart as time_meter_ms.
        t1_meter = clock.mark()
    optimizer.zero_grad(set_to_none=True)
    backward(model, loss)
    t2 = clock.mark()
    # One synchronisation for the loss and every reported tensor; the loss is checked before the
    # update, so a non-finite loss leaves the weights as they were.
    tensors = {k: v for k, v in extras.items() if isinstance(v, torch.Tensor)}
    values = torch.stack([loss.detach().float(), *(v.detach().float() for v in tensors.values())]).tolist()
    if not math.isfinite(values[0]):
        optimizer.zero_grad(set_to_none=True)
        raise NonFiniteLossError(f"the loss is {values[0]}")
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], grad_clip)
    optimizer.step()
    t3 = clock.mark()
    clock.wait(t3)
    meter_ms = clock.ms(t1, t1_meter)
    row = {"loss": values[0], **{k: v for k, v in extras.items() if k not in tensors}, **dict(zip(tensors, values[1:])),
           "time_step_ms": clock.ms(t0, t3) - meter_ms, "time_forward_ms": clock.ms(t0, t1),
           "time_backward_ms": clock.ms(t1_meter, t2)}
    if "loss" in extras:
        row["loss_total"] = values[0]
    if meter is not None:
        row["act_mem_mb"] = meter.mb
        row["time_meter_ms"] = meter_ms
    if data_start is not None:
        row["time_data_ms"] = clock.ms(data_start, t0)
    peak = peak_mem_mb(device)
    if peak is not None:
        row["peak_mem_mb"] = peak
    row.update(flat_nfe(take_nfe(model)))
    return row


def train_step(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, optimizer: torch.optim.Optimizer,
               params: Iterable[torch.Tensor], data_start=None, *, label_smoothing: float = 0.0,
               grad_clip: float | None = None) -> dict[str, float]:
    """A classifier's step on one batch already on the model's device.

    Minimises the (label-smoothed) cross-entropy plus the ODE blocks' weighted regularisers; the
    row's ``loss`` is the plain cross-entropy whatever is minimised (``loss_total``), so losses
    compare across recipes and with evaluation, and ``reg_*`` are the regularisers' unweighted values.
    """
    def compute():
        logits = model(images)
        loss = F.cross_entropy(logits, labels)
        extras: dict[str, torch.Tensor] = {"acc": (logits.argmax(1) == labels).float().mean()}
        minimised = F.cross_entropy(logits, labels, label_smoothing=label_smoothing) if label_smoothing else loss
        penalty, regularizers = regularization_terms(model)
        extras.update(regularizers)
        if penalty is not None:
            minimised = minimised + penalty
        if minimised is not loss:
            extras["loss"] = loss
        return minimised, extras

    return optimizer_step(model, optimizer, compute, params=params, data_start=data_start, grad_clip=grad_clip)


def to_device(batch: tuple[torch.Tensor, torch.Tensor], device: torch.device,
              channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = batch
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return images.to(device, non_blocking=True, memory_format=fmt), labels.to(device, non_blocking=True)


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, device: torch.device, *, limit: int | None = None,
             after_batch: Callable[[], None] | None = None, channels_last: bool = False) -> dict:
    """Loss and accuracy over the loader, with per-batch NFE (mean, min, max), time and memory.

    ``after_batch`` runs after each batch has been measured (outside the timed region).
    """
    was_training = model.training
    model.eval()
    clock = Clock(device)
    loss_sum, correct, seen, elapsed = 0.0, 0, 0, 0.0
    per_batch: list[dict] = []
    reset_nfe(model)
    for index, (images, labels) in enumerate(loader):
        if limit is not None and index >= limit:
            break
        images, labels = to_device((images, labels), device, channels_last)
        reset_peak(device)
        t0 = clock.now()
        logits = model(images)
        elapsed_batch = clock.now() - t0
        elapsed += elapsed_batch
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
        correct += (logits.argmax(1) == labels).sum().item()
        seen += len(labels)
        batch = {"time_ms": elapsed_batch * 1e3, **flat_nfe(take_nfe(model)),
                 **{k: v.item() for k, v in regularization_terms(model)[1].items()}}
        peak = peak_mem_mb(device)
        if peak is not None:
            batch["peak_mem_mb"] = peak
        per_batch.append(batch)
        if after_batch is not None:
            after_batch()
    model.train(was_training)
    if not seen:
        raise ValueError("the test loader yielded no batches; check --limit-test-batches and the dataset")
    return summarize_eval(loss_sum / seen, correct / seen, seen, elapsed, per_batch)


def summarize_eval(loss: float, acc: float, seen: int, elapsed: float, per_batch: list[dict]) -> dict:
    """Per-batch measurements → means, plus min/max of nfe_forward and the peak of peak_mem_mb."""
    out = {"loss": loss, "acc": acc, "images": seen, "images_per_s": seen / elapsed if elapsed else float("nan")}
    keys = [k for k in per_batch[0] if not k.startswith(("nfe_backward", "nfe_backprop", "steps_accepted_b",
                                                         "steps_rejected_b"))]
    for key in keys:
        values = [b[key] for b in per_batch]
        out[key] = max(values) if key == "peak_mem_mb" else sum(values) / len(values)
    if "nfe_forward" in out:
        out["nfe_forward_min"] = min(b["nfe_forward"] for b in per_batch)
        out["nfe_forward_max"] = max(b["nfe_forward"] for b in per_batch)
    return out
