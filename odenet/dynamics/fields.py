"""Learned vector fields and the model that integrates them with the project's :class:`ODEBlock`.

Two registries: ``FIELDS`` (the network, named by its widths) and ``FEATURES`` (what the network
sees of the state: ``y`` itself, or ``cubic`` = y³ as torchdiffeq's ``examples/ode_demo.py``
feeds its ``ODEFunc``). A field can also take the time t as an extra input.

:class:`DynamicsModel` solves many sub-trajectories at once. Each starts at its own time, so
the solve runs in elapsed time τ from a common 0; a time-dependent field gets its absolute time
t = t_start + τ as an extra state component with dt/dτ = 1, so one batched solve still gives every
sub-trajectory its own clock.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from odenet.config import ConfigError
from odenet.models.ode import ODEBlock, SolverSettings
from odenet.registry import Registry

FieldFactory = Callable[[int, int], nn.Module]
FIELDS: Registry[FieldFactory] = Registry("field")
FEATURES: Registry[Callable[[torch.Tensor], torch.Tensor]] = Registry("feature")


def _mlp(widths: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(widths, widths[1:]):
        layers += [nn.Linear(fan_in, fan_out), nn.Tanh()]
    return nn.Sequential(*layers[:-1])


@FIELDS.register("2-50-2")
def small_field(in_dim: int, out_dim: int) -> nn.Module:
    """ode_demo's ODEFunc: one tanh hidden layer of 50."""
    return _mlp([in_dim, 50, out_dim])


@FIELDS.register("2-150-50-50-2")
def large_field(in_dim: int, out_dim: int) -> nn.Module:
    return _mlp([in_dim, 150, 50, 50, out_dim])


@FEATURES.register("y")
def identity_features(y: torch.Tensor) -> torch.Tensor:
    return y


@FEATURES.register("cubic")
def cubic_features(y: torch.Tensor) -> torch.Tensor:
    # ode_demo's ``self.net(y**3)``: for y' = y³A the field is then linear in its input.
    return y ** 3


def list_fields() -> list[str]:
    return FIELDS.names()


def list_features() -> list[str]:
    return FEATURES.names()


class LearnedField(nn.Module):
    """f(t, y) = net(features(y) [, t]) for a 2-D (or ``dim``-D) state.

    Weights start as in ode_demo, N(0, 0.1²) and zero biases, so the initial field is small and
    the initial trajectory stays near y0.
    """

    def __init__(self, field: str, features: str = "y", time_input: bool = False, dim: int = 2) -> None:
        super().__init__()
        try:
            self.net = FIELDS.get(field)(dim + int(time_input), dim)
            self.features = FEATURES.get(features)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.time_input = time_input
        for m in self.net.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.1)
                nn.init.zeros_(m.bias)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """y (B, D); t a scalar or (B, 1) of absolute times → dy/dt (B, D)."""
        h = self.features(y)
        if self.time_input:
            h = torch.cat([h, t.reshape(-1, 1).expand(len(y), 1).to(y.dtype)], dim=1)
        return self.net(h)


class TimeAugmented(nn.Module):
    """d[y, t]/dτ = [f(t, y), 1]: the absolute time rides along in the state (last column).

    Every Runge–Kutta method integrates dt/dτ = 1 exactly, so the extra component has zero error
    estimate; as one more entry of the solver's RMS error norm it loosens the error control of a
    2-D state by √(3/2).
    """

    def __init__(self, field: LearnedField) -> None:
        super().__init__()
        self.field = field

    def forward(self, tau: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        y, t = z[:, :-1], z[:, -1:]  # (B, D), (B, 1)
        return torch.cat([self.field(t, y), torch.ones_like(t)], dim=1)


class DynamicsModel(nn.Module):
    """A learned field inside an :class:`ODEBlock`, so NFE is counted by the project's counters."""

    def __init__(self, field: LearnedField, solver: SolverSettings) -> None:
        super().__init__()
        self.ode = ODEBlock(TimeAugmented(field) if field.time_input else field, solver)

    @property
    def field(self) -> LearnedField:
        func = self.ode.func
        return func.field if isinstance(func, TimeAugmented) else func

    def forward(self, y0: torch.Tensor, t0: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        """States at elapsed times ``tau`` (T,) from ``y0`` (B, D) at absolute times ``t0`` (B,) → (T, B, D)."""
        if not self.field.time_input:
            return self.ode.trajectory(y0, tau)  # autonomous: the start time does not matter
        z0 = torch.cat([y0, t0.reshape(-1, 1).to(y0.dtype)], dim=1)
        return self.ode.trajectory(z0, tau)[..., :-1]
