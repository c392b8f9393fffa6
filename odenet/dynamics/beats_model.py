"""The models compared on heartbeats, the windows they see, and their objective.

Every latent model shares the spirals' recognition RNN and decoder (:mod:`odenet.dynamics.latent`);
only the latent dynamics differ:

* ``latent-ode`` — :class:`LatentField` (ELU MLP), the seed's set-up;
* ``latent-ode-kinetic`` — the same, trained on −ELBO + λ∫‖f(z)‖²/L dt (RNODE's kinetic energy, Finlay
  et al. 2020, eq. 5), the integral taken by the trapezoid rule on the window's grid (the points where
  z(t) is decoded) rather than as an extra solver state;
* ``latent-ode-stable`` — :class:`StableField`, whose trajectories provably stay bounded;
* ``latent-gru`` — a GRU cell stepping z from grid point to grid point (the RNN baseline);
* ``mean-beat`` — :class:`MeanBeat`, the training beats' mean, whatever is observed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from odenet.dynamics.beats_config import HeartbeatsConfig
from odenet.dynamics.latent import LatentField, LatentODE, decoder, elbo_terms, posterior_sample, recognition
from odenet.dynamics.spirals import Spirals


@dataclass(frozen=True)
class BeatWindows:
    """S windows of heartbeat segments, in standardised units; times in beats from the window's start."""

    t: torch.Tensor  # (T,) the scored grid; the window is its first W points
    true: torch.Tensor  # (S, T, 2)
    obs: torch.Tensor  # (S, W, 2)
    mask: torch.Tensor  # (S, W) bool, column 0 always True
    window: int

    observed = Spirals.observed  # the same gather as the spirals': (S, M, 2) values, (S, M) times


def random_mask(count: int, window: int, observations: int, generator: torch.Generator) -> torch.Tensor:
    """Each row observes its first point and ``observations − 1`` others drawn at random (irregular)."""
    mask = torch.zeros(count, window, dtype=torch.bool)
    mask[:, 0] = True
    others = torch.rand(count, window - 1, generator=generator).argsort(dim=1)[:, : observations - 1] + 1
    return mask.scatter_(1, others, True)


def training_windows(x: torch.Tensor, cfg: HeartbeatsConfig, where: str, generator: torch.Generator
                     ) -> BeatWindows:
    """``batch_size`` windows of W points from segments x (N, H·P, 2): at a beat's start (``where`` =
    ``first``) or at a random phase of the first beat (``any``); only the window is scored."""
    p, w = cfg.beat_points, cfg.window()
    pick = torch.randint(len(x), (cfg.batch_size,), generator=generator)
    latest = min(p, x.shape[1] - w + 1) if where == "any" else 1
    offset = torch.randint(latest, (cfg.batch_size,), generator=generator)
    true = x[pick[:, None], offset[:, None] + torch.arange(w)]  # (B, W, 2)
    return BeatWindows(torch.arange(w) / p, true, true, random_mask(len(true), w, cfg.observations, generator), w)


def scored_windows(x: torch.Tensor, cfg: HeartbeatsConfig, generator: torch.Generator) -> BeatWindows:
    """Every segment observed in the first W points of its first beat and scored on all H·P points."""
    w = cfg.window()
    t = torch.arange(x.shape[1]) / cfg.beat_points
    return BeatWindows(t, x, x[:, :w], random_mask(len(x), w, cfg.observations, generator), w)


class StableField(nn.Module):
    """f(z) = −softplus(a)⊙z + W·tanh(MLP(z)) + b.

    The second term is bounded (‖W·tanh(·) + b‖ ≤ B = ‖W‖₂√h + ‖b‖), so
    d‖z‖²/dt ≤ −2λ‖z‖² + 2B‖z‖ with λ = min softplus(a): every trajectory enters the ball ‖z‖ ≤ B/λ and
    stays there, while the MLP is free to make a limit cycle inside it. The same layers as
    :class:`LatentField`, plus the tanh and a.
    """

    def __init__(self, latent_dim: int, hidden: int, leak: float = 0.5) -> None:
        super().__init__()
        self.leak = nn.Parameter(torch.full((latent_dim,), math.log(math.expm1(leak))))  # softplus⁻¹(leak)
        self.net = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ELU(), nn.Linear(hidden, hidden), nn.Tanh(),
                                 nn.Linear(hidden, latent_dim))

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return -F.softplus(self.leak) * z + self.net(z)

    @torch.no_grad()
    def radius(self) -> float:
        """B/λ: no trajectory stays outside this ball."""
        out = self.net[-1]
        bound = torch.linalg.matrix_norm(out.weight, ord=2) * math.sqrt(out.in_features) + out.bias.norm()
        return float(bound / F.softplus(self.leak).min())


class LatentGRU(nn.Module):
    """The RNN baseline: q(z0) from the same RNN, z stepped by a GRU cell fed each time gap, the same decoder."""

    def __init__(self, cfg: HeartbeatsConfig, obs_dim: int = 2) -> None:
        super().__init__()
        self.rec = recognition(cfg, obs_dim)
        self.cell = nn.GRUCell(1, cfg.latent_dim)
        self.dec = decoder(cfg, obs_dim)

    def latent(self, z0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """z0 (S, L), t (T,) → z (S, T, L), one cell step per gap."""
        states = [z0]
        for gap in t.diff():
            states.append(self.cell(gap.expand(len(z0), 1), states[-1]))
        return torch.stack(states, dim=1)


class MeanBeat(nn.Module):
    """The training beats' mean (P, 2), repeated beat after beat: what "one form of a beat" scores."""

    def __init__(self, beat: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("beat", beat)

    def predict(self, count: int, points: int) -> torch.Tensor:
        repeats = math.ceil(points / len(self.beat))
        return self.beat.repeat(repeats, 1)[:points].expand(count, -1, -1)


def build_model(cfg: HeartbeatsConfig, variant: str, mean_beat: torch.Tensor) -> nn.Module:
    """The model of ``variant`` (see :data:`odenet.dynamics.beats_config.VARIANTS`); weights from torch's RNG."""
    if variant == "mean-beat":
        return MeanBeat(mean_beat)
    if variant == "latent-gru":
        return LatentGRU(cfg)
    field = StableField(cfg.latent_dim, cfg.hidden) if variant == "latent-ode-stable" else \
        LatentField(cfg.latent_dim, cfg.hidden)
    return LatentODE(cfg, field)


def kinetic_weight(cfg: HeartbeatsConfig, variant: str) -> float:
    return cfg.kinetic if variant == "latent-ode-kinetic" else 0.0


def kinetic_energy(field: nn.Module, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """∫‖f(z(t))‖²/L dt over ``t`` (trapezoid rule on the decoded grid), mean over series; z (S, T, L)."""
    speed = field(t, z).pow(2).mean(-1)  # (S, T)
    return torch.trapezoid(speed, t, dim=1).mean()


def objective(model: nn.Module, batch: BeatWindows, noise_std: float, kinetic: float,
              generator: torch.Generator) -> tuple[torch.Tensor, dict]:
    """−ELBO (+ λ·kinetic energy) to minimise, and what to report (``reg_kinetic`` unweighted)."""
    z0, mean, logvar = posterior_sample(model, batch, generator)
    z = model.latent(z0, batch.t[: batch.window])  # (B, W, L)
    value, parts = elbo_terms(model.dec(z), batch, mean, logvar, noise_std)
    loss = -value
    if isinstance(model, LatentODE):
        energy = kinetic_energy(model.ode.func, z, batch.t[: batch.window])
        parts["reg_kinetic"] = energy
        if kinetic > 0:
            loss = loss + kinetic * energy
    return loss, parts


@torch.no_grad()
def predict(model: nn.Module, windows: BeatWindows) -> tuple[torch.Tensor, torch.Tensor | None]:
    """x̂ (S, T, 2) from q's mean given each window's observations, and z (S, T, L) (None for the mean beat)."""
    if isinstance(model, MeanBeat):
        return model.predict(len(windows.true), len(windows.t)), None
    mean, _ = model.rec(*windows.observed())
    z = model.latent(mean, windows.t)
    return model.dec(z), z
