"""Batch-level augmentation on uint8 tensors, on any device.

Working on a whole batch at once (instead of PIL images one by one, as torchvision's
reference transforms do) is what lets the pipeline feed a GPU, and it keeps CPU and GPU
augmentation the same code. Randomness comes from torch's generator, so seeded loaders
give the same batches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero-pad by ``padding`` then crop each image back to its size at a random offset.

    Equivalent to torchvision's ``RandomCrop(size, padding=padding)`` (fill 0) applied per image.

    Args:
        images: (B, C, H, W) tensor.
    """
    if padding == 0:
        return images
    b, c, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))  # (B, C, H + 2p, W + 2p)
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=generator_device(generator))
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=generator_device(generator))
    dy, dx = dy.to(images.device), dx.to(images.device)
    rows = (dy[:, None] + torch.arange(h, device=images.device))[:, None, :, None]  # (B, 1, H, 1)
    cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, None, :]  # (B, 1, 1, W)
    batch = torch.arange(b, device=images.device)[:, None, None, None]
    chan = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[batch, chan, rows, cols]


def random_hflip(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Flip each image left-right with probability 1/2. ``images``: (B, C, H, W)."""
    flip = torch.rand(len(images), generator=generator, device=generator_device(generator)) < 0.5
    flip = flip.to(images.device)[:, None, None, None]
    return torch.where(flip, images.flip(-1), images)


def normalize(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 (B, C, H, W) in [0, 255] → float32, standardised per channel."""
    m = torch.tensor(mean, device=images.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=images.device).view(1, -1, 1, 1)
    return (images.float().div_(255.0) - m) / s


def generator_device(generator: torch.Generator | None) -> torch.device | None:
    return None if generator is None else generator.device
