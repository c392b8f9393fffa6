"""The "plain torchdiffeq implementation" the benchmarks compare against.

Written from the published description of the architecture (torchdiffeq's
``examples/odenet_mnist.py``), as a user who copies the example would have it: conv stem 1→64
(3×3), 64→64 (4×4, stride 2), 64→64 (4×4, stride 2) with GroupNorm; the field GN-ReLU-conv3×3
over [t, x] (torch.cat of a t channel) twice, then GN; head GN-ReLU-pool-linear; dopri5,
rtol = atol = 1e-3, t ∈ [0, 1]; and the ResNet counterpart with 6 residual blocks. NFE is
counted like the example does, with a counter in the field.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchdiffeq import odeint, odeint_adjoint


def norm(dim: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, dim), dim)


class ConcatConv2d(nn.Module):
    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self._layer = nn.Conv2d(dim_in + 1, dim_out, kernel_size=3, stride=1, padding=1)

    def forward(self, t, x):
        tt = torch.ones_like(x[:, :1, :, :]) * t
        return self._layer(torch.cat([tt, x], 1))


class ODEfunc(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1 = norm(dim)
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = ConcatConv2d(dim, dim)
        self.norm2 = norm(dim)
        self.conv2 = ConcatConv2d(dim, dim)
        self.norm3 = norm(dim)
        self.nfe = 0

    def forward(self, t, x):
        self.nfe += 1
        out = self.relu(self.norm1(x))
        out = self.conv1(t, out)
        out = self.relu(self.norm2(out))
        out = self.conv2(t, out)
        return self.norm3(out)


class ODEBlock(nn.Module):
    def __init__(self, odefunc: nn.Module, adjoint: bool, tol: float = 1e-3) -> None:
        super().__init__()
        self.odefunc = odefunc
        self.integration_time = torch.tensor([0, 1]).float()
        self.solve = odeint_adjoint if adjoint else odeint
        self.tol = tol

    def forward(self, x):
        self.integration_time = self.integration_time.type_as(x)
        out = self.solve(self.odefunc, x, self.integration_time, rtol=self.tol, atol=self.tol)
        return out[1]


class ResBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1 = norm(dim)
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(dim, dim, 3, 1, 1, bias=False)
        self.norm2 = norm(dim)
        self.conv2 = nn.Conv2d(dim, dim, 3, 1, 1, bias=False)

    def forward(self, x):
        shortcut = x
        out = self.relu(self.norm1(x))
        out = self.conv1(out)
        out = self.relu(self.norm2(out))
        return self.conv2(out) + shortcut


def plain_model(kind: str, adjoint: bool = False) -> nn.Sequential:
    """kind: "odenet" or "resnet" (paper's conv downsampling, MNIST)."""
    stem = [nn.Conv2d(1, 64, 3, 1), norm(64), nn.ReLU(inplace=True), nn.Conv2d(64, 64, 4, 2, 1), norm(64),
            nn.ReLU(inplace=True), nn.Conv2d(64, 64, 4, 2, 1)]
    middle = [ODEBlock(ODEfunc(64), adjoint)] if kind == "odenet" else [ResBlock(64) for _ in range(6)]
    head = [norm(64), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.Linear(64, 10)]
    return nn.Sequential(*stem, *middle, *head)


def odefunc(model: nn.Sequential) -> ODEfunc | None:
    return next((m for m in model.modules() if isinstance(m, ODEfunc)), None)


def plain_step(model: nn.Sequential, x: torch.Tensor, y: torch.Tensor, optimizer,
               losses: list | None = None) -> tuple[int, int]:
    """One training step the way the example does it → (NFE forward, NFE backward).

    ``losses``: append the step's loss (a detached 0-d tensor: read it later, no sync here).
    """
    func = odefunc(model)
    optimizer.zero_grad()
    logits = model(x)
    nfe_f = func.nfe if func else 0
    if func:
        func.nfe = 0
    loss = F.cross_entropy(logits, y)
    if losses is not None:
        losses.append(loss.detach())
    loss.backward()
    nfe_b = func.nfe if func else 0
    if func:
        func.nfe = 0
    optimizer.step()
    return nfe_f, nfe_b


def copy_weights(src: nn.Module, dst: nn.Module) -> None:
    """Copy parameters in registration order (the two implementations list them in the same order)."""
    src_params, dst_params = list(src.parameters()), list(dst.parameters())
    assert [p.shape for p in src_params] == [p.shape for p in dst_params], "architectures differ"
    with torch.no_grad():
        for s, d in zip(src_params, dst_params):
            d.copy_(s)
