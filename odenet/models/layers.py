"""Building blocks shared by the backbones: the paper's stem, head, residual block and ODE field."""

from __future__ import annotations

import torch
from torch import nn


def norm(dim: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups, as in torchdiffeq's ``odenet_mnist.py``."""
    return nn.GroupNorm(min(32, dim), dim)


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class ConcatConv2d(nn.Module):
    """3×3 convolution of [t, x]: time enters as one extra constant input channel (channel 0)."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim_in + 1, dim_out, kernel_size=3, stride=1, padding=1, bias=True)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        tt = torch.ones_like(x[:, :1]) * t  # (B, 1, H, W)
        return self.conv(torch.cat([tt, x], dim=1))


class ConvODEField(nn.Module):
    """f(t, x) = GN → ReLU → conv3×3([t, ·]) → GN → ReLU → conv3×3([t, ·]) → GN (Chen et al. 2018)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1 = norm(dim)
        self.conv1 = ConcatConv2d(dim, dim)
        self.norm2 = norm(dim)
        self.conv2 = ConcatConv2d(dim, dim)
        self.norm3 = norm(dim)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, H, W)
        out = self.conv1(t, self.relu(self.norm1(x)))
        out = self.conv2(t, self.relu(self.norm2(out)))
        return self.norm3(out)


class PreActBlock(nn.Module):
    """Pre-activation residual block with GroupNorm (the paper's ResNet baseline)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1 = norm(dim)
        self.conv1 = conv3x3(dim, dim)
        self.norm2 = norm(dim)
        self.conv2 = conv3x3(dim, dim)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.relu(self.norm1(x)))
        out = self.conv2(self.relu(self.norm2(out)))
        return out + x


def paper_stem(in_channels: int, width: int = 64) -> nn.Sequential:
    """Conv downsampling of the paper's MNIST network: 28×28 → 26 → 13 → 6 (32×32 → 30 → 15 → 7)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, 1),
        norm(width), nn.ReLU(inplace=True),
        nn.Conv2d(width, width, 4, 2, 1),
        norm(width), nn.ReLU(inplace=True),
        nn.Conv2d(width, width, 4, 2, 1),
    )


def paper_head(width: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(norm(width), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(width, num_classes))
