"""Observation times and training batches of sub-trajectories (torchdiffeq ode_demo's ``get_batch``).

The true trajectory lives on an equally spaced grid of N times. ``--irregular p`` observes a
random subset of it (t0 and a fraction 1 − p of the rest), so the gaps between observations vary.
A batch is ``batch_size`` windows of ``batch_time`` consecutive *observed* times. Each window is
solved from its first observation, in elapsed time; the windows' elapsed times differ, so the
solver is asked for their union and each window picks its own times out of it. Elapsed times
are whole numbers of grid steps, so the union is exact (no near-duplicate floats).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from odenet.dynamics.systems import Trajectory


def observed_indices(n: int, irregular: float, generator: torch.Generator) -> torch.Tensor:
    """Sorted grid indices kept when a fraction ``irregular`` of the N − 1 times after t0 is dropped.

    t0 is always kept: it is where the evaluation trajectory starts.
    """
    drop = round(irregular * (n - 1))
    kept = torch.randperm(n - 1, generator=generator)[: n - 1 - drop] + 1
    return torch.cat([torch.zeros(1, dtype=torch.long), kept.sort().values])


@dataclass(frozen=True)
class Batch:
    """Windows of observed times and what the solver must return for them."""

    windows: torch.Tensor  # (B, T) grid indices of each window's observations
    tau: torch.Tensor  # (U,) union of the windows' elapsed times, increasing, tau[0] = 0
    positions: torch.Tensor  # (B, T) index into tau of each window's observation


def sample_batch(observed: torch.Tensor, batch_time: int, batch_size: int, dt: float,
                 generator: torch.Generator) -> Batch:
    """``batch_size`` distinct windows of ``batch_time`` consecutive observed times."""
    starts = torch.randperm(len(observed) - batch_time + 1, generator=generator)[:batch_size]
    windows = observed[starts[:, None] + torch.arange(batch_time)]  # (B, T)
    steps = windows - windows[:, :1]  # elapsed grid steps, (B, T)
    union, positions = torch.unique(steps, sorted=True, return_inverse=True)
    return Batch(windows, union.float() * dt, positions)


def predict_batch(model, trajectory: Trajectory, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(prediction, target), both (B, T, D): each window solved from its first true state."""
    first = batch.windows[:, 0]
    states = model(trajectory.y[first], trajectory.t[first], batch.tau)  # (U, B, D)
    rows = torch.arange(len(first))[:, None]
    return states[batch.positions, rows], trajectory.y[batch.windows]


def predict_trajectory(model, trajectory: Trajectory) -> torch.Tensor:
    """The learned solution from the true y0 at every grid time, (N, D)."""
    t = trajectory.t
    return model(trajectory.y[:1], t[:1], t - t[0])[:, 0]
