"""The latent-ODE experiment's data: noisy, irregularly observed 2-D spirals (torchdiffeq's latent_ode.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch

# torchdiffeq latent_ode.py: generate_spiral2d(start=0, stop=6π, ntotal=1000, a=0, b=0.3)
SPIRAL_STOP = 6 * math.pi
SPIRAL_POINTS = 1000
SPIRAL_A, SPIRAL_B = 0.0, 0.3


def spiral_curves(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The clockwise and counter-clockwise spirals at times ``t``, each (len(t), 2)."""
    z_cw = SPIRAL_STOP + 1.0 - t
    r_cw = SPIRAL_A + SPIRAL_B * 50.0 / z_cw
    cw = torch.stack([r_cw * torch.cos(z_cw) - 5.0, r_cw * torch.sin(z_cw)], dim=1)
    r_cc = SPIRAL_A + SPIRAL_B * t
    cc = torch.stack([r_cc * torch.cos(t) + 5.0, r_cc * torch.sin(t)], dim=1)
    return cw, cc


@dataclass(frozen=True)
class Spirals:
    """S spirals on a grid of W observed-window points followed by E extrapolation points."""

    t: torch.Tensor  # (W + E,) elapsed time from each window's start
    true: torch.Tensor  # (S, W + E, 2) noiseless
    obs: torch.Tensor  # (S, W, 2) noisy (read only where mask)
    mask: torch.Tensor  # (S, W) bool, column 0 always True
    clockwise: torch.Tensor  # (S,) bool
    window: int

    def observed(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Each spiral's observations in time order and their times: (S, M, 2), (S, M)."""
        count = len(self.mask)
        positions = self.mask.nonzero()[:, 1].reshape(count, -1)  # row-major, so each row is sorted
        return self.obs.gather(1, positions[..., None].expand(-1, -1, 2)), self.t[positions]


class SpiralShape(Protocol):
    """What :func:`make_spirals` reads of a config (a :class:`~odenet.dynamics.config.LatentConfig`)."""

    window: int
    extrapolate: int
    observations: int
    noise_std: float


def make_spirals(count: int, cfg: SpiralShape, generator: torch.Generator) -> Spirals:
    """``count`` spirals with random start, direction, observed subset and noise."""
    w, e = cfg.window, cfg.extrapolate
    grid = torch.linspace(0.0, SPIRAL_STOP, SPIRAL_POINTS)
    cw, cc = spiral_curves(grid)
    # Window starts are drawn from [W, N − W − E], keeping torchdiffeq's "not very near the start".
    starts = torch.randint(w, SPIRAL_POINTS - w - e + 1, (count,), generator=generator)
    clockwise = torch.rand(count, generator=generator) < 0.5
    index = starts[:, None] + torch.arange(w + e)  # (S, W + E)
    true = torch.where(clockwise[:, None, None], cw[index], cc[index])
    obs = true[:, :w] + cfg.noise_std * torch.randn(count, w, 2, generator=generator)
    mask = torch.zeros(count, w, dtype=torch.bool)
    mask[:, 0] = True
    others = torch.rand(count, w - 1, generator=generator).argsort(dim=1)[:, : cfg.observations - 1] + 1
    mask.scatter_(1, others, True)
    return Spirals(grid[: w + e] - grid[0], true, obs, mask, clockwise, w)
