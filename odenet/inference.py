"""Classify images with a trained checkpoint: ``odenet.load(path)`` → a `TrainedModel`.

The checkpoint alone rebuilds the model (its saved config names the backbone, dataset and solver), so
the images need only what the model was trained on: their shape, and pixel values that the model
normalises with the dataset's own mean and standard deviation. ``predict`` reports each image's own
NFE: every ODE block is solved per image, with its own step-size control, as if the image were alone
(a batched adaptive solve would give every image of a batch the batch's steps).

Bad input (a missing or damaged checkpoint, images of the wrong shape, type or range) raises one
`odenet.errors.UserError` whose message names the input and the fix.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from odenet.data import get_dataset_spec
from odenet.errors import UserError
from odenet.models.ode import ode_blocks, read_nfe, regularization_off, reset_nfe, set_solver
from odenet.models.per_sample_blocks import per_sample_blocks
from odenet.naming import CLASS_NAMES
from odenet.run.checkpoint import load_checkpoint, load_weights
from odenet.train.build import build_model
from odenet.train.config import saved_train_config


class ImageError(UserError):
    """Images that the model cannot take; the message says what it expects."""


@dataclass(frozen=True)
class Prediction:
    """One image's answer: the class (index and name), the softmax probability of it, and the image's
    own forward NFE (summed over ODE blocks; None for a model without one)."""

    label: int
    name: str
    confidence: float
    nfe_forward: int | None


@dataclass(frozen=True)
class Predictions:
    """The answers for a batch of N images, as tensors; iterate for one `Prediction` per image.

    Attributes:
        labels: (N,) the predicted class of each image.
        probabilities: (N, classes) the softmax of the logits.
        nfe_forward: (N,) each image's own forward NFE, or None without ODE blocks.
        class_names: the dataset's class names, by label.
    """

    labels: torch.Tensor
    probabilities: torch.Tensor
    nfe_forward: torch.Tensor | None
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def __iter__(self) -> Iterator[Prediction]:
        return (self[i] for i in range(len(self)))

    def __getitem__(self, i: int) -> Prediction:
        label = int(self.labels[i])
        nfe = None if self.nfe_forward is None else int(self.nfe_forward[i])
        return Prediction(label, self.class_names[label], float(self.probabilities[i, label]), nfe)


class TrainedModel:
    """A trained classifier with what it needs around it: preprocessing, class names, the solver's settings.

    Attributes:
        module: the ``nn.Module`` (in eval mode), e.g. to pass to `odenet.read_nfe`.
        config: the resolved training config saved in the checkpoint, as a dict.
        class_names: the dataset's class names, by label.
        image_shape: (channels, height, width) of the images the model takes.
    """

    def __init__(self, module: nn.Module, config: dict[str, Any], device: torch.device) -> None:
        self.module, self.config, self.device = module, config, device
        spec = get_dataset_spec(config["dataset"])
        self.image_shape = (spec.channels, spec.image_size, spec.image_size)
        self.class_names = CLASS_NAMES.get(spec.name, tuple(str(i) for i in range(spec.num_classes)))
        self._mean = torch.tensor(spec.mean, device=device).view(-1, 1, 1)
        self._std = torch.tensor(spec.std, device=device).view(-1, 1, 1)

    def __repr__(self) -> str:
        solver = read_solver(self.module)
        return (f"TrainedModel({self.config['backbone']} on {self.config['dataset']}, "
                f"{solver or 'no ODE solver'}, {len(self.class_names)} classes)")

    def preprocess(self, images: Any) -> torch.Tensor:
        """Images → the normalised float tensor (N, C, H, W) the model takes.

        Accepts a NumPy array or tensor shaped (H, W) or (N, H, W) for one-channel data, (C, H, W) or
        (N, C, H, W); pixels as uint8 (0–255) or floats in [0, 1].
        """
        x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
        x = self._with_batch_and_channels(x)
        if x.dtype == torch.uint8:
            x = x.float() / 255
        elif x.is_floating_point():
            x = x.float()
            if x.numel() and (x.min() < 0 or x.max() > 1 or not torch.isfinite(x).all()):
                raise ImageError(f"float images must hold pixels in [0, 1], these range from {x.min():.3g} to "
                                 f"{x.max():.3g}; divide 0-255 pixels by 255, or pass them as uint8")
        else:
            raise ImageError(f"images of dtype {x.dtype} cannot be read as pixels; pass uint8 (0-255) or floats in "
                             f"[0, 1]")
        return (x.to(self.device) - self._mean) / self._std

    def _with_batch_and_channels(self, images: torch.Tensor) -> torch.Tensor:
        c, h, w = self.image_shape
        x = images
        if x.dim() == 2 and c == 1:
            x = x[None, None]
        elif x.dim() == 3:
            x = x[:, None] if c == 1 and tuple(x.shape[1:]) == (h, w) else x[None]
        if x.dim() != 4 or tuple(x.shape[1:]) != (c, h, w) or len(x) == 0:
            takes = f"(N, {c}, {h}, {w})" + (f", (N, {h}, {w}) or ({h}, {w})" if c == 1 else f" or ({c}, {h}, {w})")
            raise ImageError(f"images shaped {tuple(images.shape)} do not fit this {self.config['dataset']} model, "
                             f"which takes {takes} (channels first)")
        return x

    @torch.no_grad()
    def predict(self, images: Any, batch_size: int = 256, per_image_nfe: bool = True) -> Predictions:
        """Classify ``images`` (see `preprocess`), ``batch_size`` at a time.

        With ``per_image_nfe`` (and an adaptive solver), each image's ODE solves run alone, so its NFE is
        its own; without, images are solved in batches (faster) and each gets its batch's NFE.
        """
        x = self.preprocess(images)
        labels, probabilities, nfe = [], [], []
        adaptive = bool(ode_blocks(self.module)) and all(b.solver.adaptive for b in ode_blocks(self.module).values())
        with regularization_off(self.module):  # training-only integrals: same steps, same outputs
            for chunk in x.split(batch_size):
                logits, counts = self._forward(chunk, per_image_nfe and adaptive)
                probabilities.append(logits.softmax(1).cpu())
                labels.append(probabilities[-1].argmax(1))
                nfe.append(counts)
        counts = None if not ode_blocks(self.module) else torch.cat(nfe)
        return Predictions(torch.cat(labels), torch.cat(probabilities), counts, self.class_names)

    def _forward(self, x: torch.Tensor, per_image: bool) -> tuple[torch.Tensor, torch.Tensor]:
        reset_nfe(self.module)
        if not per_image:
            logits = self.module(x)
            return logits, torch.full((len(x),), read_nfe(self.module).get("nfe_forward", 0), dtype=torch.long)
        with per_sample_blocks(self.module) as blocks:
            logits = self.module(x)
            counts = sum(block.last.nfe_forward.to("cpu", torch.long) for block in blocks.values())
        return logits, counts

    def set_solver(self, **changes: Any) -> TrainedModel:
        """Change every ODE block's solver settings, e.g. ``set_solver(tol=1e-5)`` or ``method="rk4", steps=8``
        (`odenet.set_solver`); returns the model, so calls chain."""
        if not ode_blocks(self.module):
            raise UserError(f"this {self.config['backbone']} model has no ODE block, so no solver to set")
        set_solver(self.module, **changes)
        return self


def read_solver(module: nn.Module) -> str | None:
    """"dopri5 tol 0.001" (the first ODE block's settings), or None without ODE blocks."""
    blocks = list(ode_blocks(module).values())
    if not blocks:
        return None
    s = blocks[0].solver
    return f"{s.method} tol {s.rtol:g}" if s.adaptive else f"{s.method} {s.steps} steps"


def load(checkpoint: str | Path, device: str | torch.device = "cpu") -> TrainedModel:
    """The trained model in ``checkpoint`` (a ``last.pt`` or ``best.pt`` that train.py wrote), ready to classify.

    Raises:
        odenet.errors.UserError: the file is missing, damaged, not an odenet checkpoint, or holds a config or
            weights that do not fit (one sentence naming the file and what to do).
    """
    device = torch.device(device)
    state = load_checkpoint(checkpoint, map_location=device)
    cfg = saved_train_config(state, str(checkpoint))
    spec = get_dataset_spec(cfg.dataset)
    model = build_model(cfg, _Shapes(spec)).to(device)
    load_weights(model, state, checkpoint, "pass a last.pt or best.pt that train.py wrote")
    return TrainedModel(model.eval(), cfg.to_dict(), device)


@dataclass(frozen=True)
class _Shapes:
    """What `odenet.train.build.build_model` reads of a dataset (its spec), without loading any data."""

    spec: Any
