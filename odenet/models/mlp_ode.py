"""The MLP ODE-Net of the regularisers' papers: the flattened image itself is the ODE state.

ERNODE (Pal et al. 2021) and TayNODE (Kelly et al. 2020) measure how far their regularisers cut the
solver's cost on this MNIST classifier, in which the unregularised NFE grows as training goes on. The
field is the ERNODE code's (avik-pal/RegNeuralDE.jl at 345925c, ``experiments/mnist_node.jl``:
``MLPDynamics(784, 100)``, ``Dense(in + 1, hidden, tanh)`` then ``Dense(hidden + 1, in, tanh)``, the time
concatenated at both layers), the head ``Dense(784, 10)``, t ∈ [0, 1]. TayNODE's is the same shape with
sigmoids and a linear output. Here the image arrives normalised by the dataset's mean and std, as for every
odenet backbone (theirs: pixels in [0, 1]).
"""

from __future__ import annotations

import torch
from torch import nn

from odenet.models.backbones import Classifier, register_backbone
from odenet.models.ode import ODEBlock
from odenet.solve import SolverSettings


class MLPField(nn.Module):
    """f(t, x) = tanh(W₂ [tanh(W₁ [x, t] + b₁), t] + b₂) on a (B, D) state."""

    def __init__(self, dim: int, hidden: int = 100) -> None:
        super().__init__()
        self.dense1 = nn.Linear(dim + 1, hidden)
        self.dense2 = nn.Linear(hidden + 1, dim)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # x: (B, D)
        tt = t.reshape(-1, 1).expand(x.shape[0], 1).to(x.dtype)  # a scalar t, or (B, 1) per sample
        h = torch.tanh(self.dense1(torch.cat([x, tt], dim=1)))
        return torch.tanh(self.dense2(torch.cat([h, tt], dim=1)))


@register_backbone("odenet-mlp", ode=True)
def odenet_mlp(*, in_channels: int, num_classes: int, solver: SolverSettings | None = None, image_size: int = 28,
               hidden: int = 100) -> Classifier:
    """Flatten → one ODE block on the C·H·W pixels (MLP field, ``hidden`` units) → linear head."""
    dim = in_channels * image_size ** 2
    return Classifier(nn.Flatten(), ODEBlock(MLPField(dim, hidden), solver or SolverSettings()),
                      nn.Linear(dim, num_classes))
