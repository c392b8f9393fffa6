"""``--per-sample-every N``: how the per-image cost of the ODE blocks spreads out during training.

Every N epochs (after the epoch's test evaluation) the first :data:`SUBSET` test images — the same
images every time, in the test loader's order — pass through the model twice in evaluation mode:
batched (the usual solve; its NFE is the batch's) and with each ODE block solved per image
(:func:`odenet.models.per_sample_blocks.per_sample_blocks`: each image with its own step-size control, as
if alone). Logged per evaluation: every image's ``nfe_forward`` (summed over the ODE blocks), its
correctness, the quantiles, and the batched ``nfe_forward`` per image of the same images
(:meth:`odenet.run.log.RunLogger.log_per_sample`: ``per_sample_train.jsonl`` and the TensorBoard
histogram ``sample/nfe_forward``) — Fig. 3d of the paper per image instead of per batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from odenet.models.ode import regularization_off, reset_nfe, take_nfe
from odenet.models.per_sample_blocks import per_sample_blocks
from odenet.train.step import flat_nfe, to_device

SUBSET = 1000  # test images per training-time per-sample evaluation
QUANTILES = (0.1, 0.5, 0.9, 0.99)


def first_images(loader, n: int = SUBSET) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``n`` images of ``loader`` (fewer if the split is smaller), as its batches cut at ``n``."""
    batches, seen = [], 0
    for images, labels in loader:
        take = min(len(labels), n - seen)
        batches.append((images[:take], labels[:take]))
        seen += take
        if seen == n:
            break
    return batches


@torch.no_grad()
def per_sample_view(model: nn.Module, batches, device: torch.device, channels_last: bool = False) -> dict[str, Any]:
    """Per-image ``nfe_forward`` and correctness on ``batches``, with the batched NFE of the same images.

    Returns:
        ``images``, ``nfe_forward`` (one int per image), ``correct`` (one bool per image), the quantiles
        ``nfe_forward_p10/p50/p90/p99``, ``nfe_forward_mean``, ``nfe_forward_max`` and
        ``nfe_forward_batched`` (the batched solves' NFE, weighted by batch size: every image of a
        batch costs the batch's NFE).
    """
    was_training = model.training
    model.eval()
    nfe, correct, batched = [], [], 0.0
    try:
        # x alone (the regularisers' integrals are training-only work), and no trace left on training's steps
        with regularization_off(model):
            for images, labels in batches:
                images, labels = to_device((images, labels), device, channels_last)
                reset_nfe(model)
                model(images)
                batched += flat_nfe(take_nfe(model))["nfe_forward"] * len(labels)
                with per_sample_blocks(model) as blocks:
                    logits = model(images)
                    counts = [blk.last.nfe_forward for blk in blocks.values()]
                nfe += torch.stack(counts).sum(0).tolist()
                correct += (logits.argmax(1) == labels).tolist()
                reset_nfe(model)
    finally:
        model.train(was_training)
    values = np.asarray(nfe, dtype=np.float64)
    out: dict[str, Any] = {"images": len(nfe), "nfe_forward": [int(v) for v in nfe], "correct": correct}
    out.update({f"nfe_forward_p{round(100 * q)}": float(np.quantile(values, q)) for q in QUANTILES})
    out.update({"nfe_forward_mean": float(values.mean()), "nfe_forward_max": float(values.max()),
                "nfe_forward_batched": batched / len(nfe)})
    return out


class PerSampleWatch:
    """Runs :func:`per_sample_view` every ``every`` epochs on a fixed subset, taken on first use."""

    def __init__(self, every: int | None, test_loader, device: torch.device, channels_last: bool) -> None:
        self.every, self.loader, self.device, self.channels_last = every, test_loader, device, channels_last
        self.batches = None

    def due(self, epoch: int) -> bool:
        return bool(self.every) and epoch % self.every == 0

    def __call__(self, model: nn.Module, epoch: int, step: int, logger) -> str | None:
        """Evaluate and log if ``epoch`` is due (main process only); returns the console line."""
        if not self.due(epoch) or logger is None:
            return None
        # Iterating a loader draws its base seed from torch's global generator: restored after, so that
        # training (e.g. RNODE's Hutchinson probes) draws what it would have drawn without the view.
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            if self.batches is None:
                self.batches = first_images(self.loader)
            view = per_sample_view(model, self.batches, self.device, self.channels_last)
        logger.log_per_sample({"epoch": epoch, "step": step, **view})
        return (f"  per image, {view['images']:,} test images solved alone: nfe_forward p10 "
                f"{view['nfe_forward_p10']:.0f} | median {view['nfe_forward_p50']:.0f} | p90 "
                f"{view['nfe_forward_p90']:.0f} | max {view['nfe_forward_max']:.0f} (batched: "
                f"{view['nfe_forward_batched']:.1f} per image)")
