"""The backbones of Chen et al. 2018, Table 1 (MNIST): mlp, resnet, rknet, odenet; and stem-only, the ablation.

Parameter counts on MNIST equal torchdiffeq's ``examples/odenet_mnist.py`` (conv downsampling):
mlp 238,510; resnet 576,778; odenet and rknet 208,266.
"""

from __future__ import annotations

from torch import nn

from odenet.models.backbones import Classifier, register_backbone
from odenet.models.layers import ConvODEField, PreActBlock, ZeroAugmented, paper_head, paper_stem
from odenet.models.ode import ODEBlock
from odenet.solve import DEFAULT_STEPS, SolverConstraint, SolverSettings


@register_backbone("mlp")
def mlp(*, in_channels: int, num_classes: int, image_size: int = 28, hidden: int = 300) -> Classifier:
    """One hidden layer (784-300-10 on MNIST)."""
    return Classifier(nn.Flatten(), nn.Sequential(nn.Linear(in_channels * image_size ** 2, hidden), nn.ReLU()),
                      nn.Linear(hidden, num_classes))


@register_backbone("resnet")
def resnet(*, in_channels: int, num_classes: int, width: int = 64, depth: int = 6, image_size: int = 28) -> Classifier:
    """Stem + ``depth`` pre-activation residual blocks + head."""
    del image_size  # the conv stem adapts to any size
    return Classifier(paper_stem(in_channels, width), nn.Sequential(*[PreActBlock(width) for _ in range(depth)]),
                      paper_head(width, num_classes))


@register_backbone("stem-only")
def stem_only(*, in_channels: int, num_classes: int, width: int = 64, image_size: int = 28) -> Classifier:
    """The shared stem and head with nothing between: what the conv front-end alone achieves (the ablation)."""
    del image_size
    return Classifier(paper_stem(in_channels, width), nn.Identity(), paper_head(width, num_classes))


@register_backbone("odenet", ode=True)
def odenet(*, in_channels: int, num_classes: int, solver: SolverSettings | None = None, width: int = 64,
           image_size: int = 28, augment_dim: int = 0) -> Classifier:
    """Stem + one ODE block in place of the residual blocks + head.

    ``augment_dim`` (ANODE, Dupont et al. 2019, §4): k zero channels appended to the ODE state, the
    field widened to match, and the head reads the whole augmented state, as the authors' ConvODENet
    does (EmilienDupont/augmented-neural-odes at 88d9865, ``anode/conv_models.py``:
    ``Linear((C + augment_dim)·H·W, output_dim)`` on the flattened state). Theirs appends the channels
    to the image itself; here, as in the paper's ODE-Net, to the stem's features.
    """
    del image_size
    stem = paper_stem(in_channels, width)  # created first: the same seed gives the same weights as before ANODE
    block = ODEBlock(ConvODEField(width + augment_dim), solver or SolverSettings())
    return Classifier(stem, ZeroAugmented(block, augment_dim) if augment_dim else block,
                      paper_head(width + augment_dim, num_classes))


RKNET = SolverConstraint("rknet", method="rk4")


@register_backbone("rknet", solver=RKNET)
def rknet(*, in_channels: int, num_classes: int, solver: SolverSettings | None = None, width: int = 64,
          image_size: int = 28) -> Classifier:
    """RK-Net: the ODE-Net field integrated by fixed RK4 steps and backpropagated directly.

    ``solver`` may only choose the number of steps (and t1); anything but direct RK4 is an ODE-Net.
    """
    del image_size
    solver = solver or SolverSettings(method="rk4", steps=DEFAULT_STEPS)
    RKNET.check(solver)
    return Classifier(paper_stem(in_channels, width), ODEBlock(ConvODEField(width), solver),
                      paper_head(width, num_classes))
