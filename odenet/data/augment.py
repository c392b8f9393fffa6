"""Batch-level augmentation on uint8 tensors, on any device.

Working on a whole batch at once (instead of PIL images one by one, as torchvision's
reference transforms do) is what lets the pipeline feed a GPU, and it keeps CPU and GPU
augmentation the same code. Randomness comes from torch's generator, so seeded loaders
give the same batches.
"""

from __future__ import annotations

import functools

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
    dy, dx = torch.randint(0, 2 * padding + 1, (2, len(images)), generator=generator,
                           device=generator_device(generator))
    return crop_at(images, padding, dy, dx)


def crop_at(images: torch.Tensor, padding: int, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Crop image i of the zero-padded batch at offset (dy[i], dx[i]), each in [0, 2 * padding]."""
    b, c, h, w = images.shape
    dev = images.device
    padded = F.pad(images, (padding, padding, padding, padding))  # (B, C, H + 2p, W + 2p)
    rows = (dy.to(dev)[:, None] + torch.arange(h, device=dev))[:, None, :, None]  # (B, 1, H, 1)
    cols = (dx.to(dev)[:, None] + torch.arange(w, device=dev))[:, None, None, :]  # (B, 1, 1, W)
    batch = torch.arange(b, device=dev)[:, None, None, None]
    chan = torch.arange(c, device=dev)[None, :, None, None]
    return padded[batch, chan, rows, cols]


def random_hflip(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Flip each image left-right with probability 1/2. ``images``: (B, C, H, W)."""
    return hflip_where(images, torch.rand(len(images), generator=generator, device=generator_device(generator)) < 0.5)


def hflip_where(images: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Flip the images whose entry of the (B,) boolean ``flip`` is set."""
    return torch.where(flip.to(images.device)[:, None, None, None], images.flip(-1), images)


@functools.lru_cache(maxsize=32)
def _channel_stats(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device):
    """(1, C, 1, 1) mean and std on ``device``, made once: on a GPU each would be a blocking copy per batch."""
    return (torch.tensor(mean, device=device).view(1, -1, 1, 1), torch.tensor(std, device=device).view(1, -1, 1, 1))


def normalize(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 (B, C, H, W) in [0, 255] → float32, standardised per channel."""
    m, s = _channel_stats(tuple(mean), tuple(std), images.device)
    return (images.float().div_(255.0) - m) / s


def generator_device(generator: torch.Generator | None) -> torch.device | None:
    return None if generator is None else generator.device
