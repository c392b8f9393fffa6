"""The backbone registry and the one classifier shape every backbone has: stem → features → head."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from odenet.solve.options import SolverConstraint
from odenet.registry import Registry


@dataclass(frozen=True)
class BackboneEntry:
    factory: Callable[..., nn.Module]
    ode: bool  # has ODE blocks, so takes ``solver`` and reports NFE
    family: str  # "mnist": the paper's 28×28 design; "cifar": the 32×32 ResNet-18 design
    solver: SolverConstraint | None = None  # what the backbone fixes of its solver (rknet: direct RK4)


BACKBONES: Registry[BackboneEntry] = Registry("backbone")


def register_backbone(name: str, *, ode: bool = False, family: str = "mnist",
                      solver: SolverConstraint | None = None):
    def add(factory):
        BACKBONES.register(name)(BackboneEntry(factory, ode or solver is not None, family, solver))
        return factory

    return add


class Classifier(nn.Module):
    """stem → features → head. Backbones of one family differ only in ``features``."""

    def __init__(self, stem: nn.Module, features: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.stem = stem
        self.features = features
        self.head = head

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.stem(x))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def create_backbone(name: str, *, in_channels: int, num_classes: int, **kwargs) -> nn.Module:
    """Build a registered backbone; ``None`` keyword arguments are dropped (timm's convention).

    Raises:
        ValueError: unknown name (the message lists the valid ones).
    """
    entry = BACKBONES.get(name)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return entry.factory(in_channels=in_channels, num_classes=num_classes, **kwargs)


def list_backbones() -> list[str]:
    return BACKBONES.names()


def backbone_entry(name: str) -> BackboneEntry:
    return BACKBONES.get(name)
