"""CIFAR backbones: a CIFAR-style ResNet-18 from timm's blocks, and its ODE counterpart.

Both share the 32×32 stem (3×3 stride-1 conv, no max-pool) and the head. In ``odenet18``
each stage's stride-1 residual blocks become one ODE block, while the downsampling blocks
stay residual (the ODE state cannot change shape), as in ACA (Zhuang et al. 2020) and MALI.
"""

from __future__ import annotations

from torch import nn
from timm.models.resnet import BasicBlock, downsample_conv

from odenet.models.backbones import Classifier, register_backbone
from odenet.models.layers import ConvODEField
from odenet.models.ode import ODEBlock
from odenet.solve import SolverSettings

WIDTHS = (64, 128, 256, 512)
BLOCKS_PER_STAGE = 2


def cifar_stem(in_channels: int, width: int = WIDTHS[0]) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                         nn.ReLU(inplace=True))


def cifar_head(width: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))


def _down_block(in_width: int, width: int) -> BasicBlock:
    """The stride-2 block opening stages 2–4 (stride 1 and no projection for stage 1's first block)."""
    stride = 1 if in_width == width else 2
    down = None if stride == 1 else downsample_conv(in_width, width, kernel_size=1, stride=stride)
    return BasicBlock(in_width, width, stride=stride, downsample=down)


@register_backbone("resnet18", family="cifar")
def resnet18(*, in_channels: int, num_classes: int, image_size: int = 32) -> Classifier:
    del image_size
    stages, in_width = [], WIDTHS[0]
    for width in WIDTHS:
        stages.append(nn.Sequential(_down_block(in_width, width),
                                    *[BasicBlock(width, width) for _ in range(BLOCKS_PER_STAGE - 1)]))
        in_width = width
    return Classifier(cifar_stem(in_channels), nn.Sequential(*stages), cifar_head(WIDTHS[-1], num_classes))


@register_backbone("odenet18", ode=True, family="cifar")
def odenet18(*, in_channels: int, num_classes: int, solver: SolverSettings | None = None,
             image_size: int = 32) -> Classifier:
    """ResNet-18 with each stage's stride-1 blocks replaced by one ODE block (4 ODE blocks)."""
    del image_size
    solver = solver or SolverSettings()
    stages, in_width = [], WIDTHS[0]
    for width in WIDTHS:
        layers = [] if in_width == width else [_down_block(in_width, width)]
        stages.append(nn.Sequential(*layers, ODEBlock(ConvODEField(width), solver)))
        in_width = width
    return Classifier(cifar_stem(in_channels), nn.Sequential(*stages), cifar_head(WIDTHS[-1], num_classes))
