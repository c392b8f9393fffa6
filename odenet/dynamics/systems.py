"""The true 2-D dynamical systems that the learned fields are fitted to, one registry entry each.

Each entry builds a :class:`System` (the field f(t, y), its initial state and time span) from a
seed; :func:`simulate` integrates it with torchdiffeq at tight tolerance (rtol 1e-7, atol 1e-9:
torchdiffeq's defaults, with which its ``examples/ode_demo.py`` makes its data) in float64.
These solves are data generation, not part of any model, so they call torchdiffeq directly and
are not NFE-counted.

States are row vectors, shape (B, 2), and matrices act from the right, ``y³ @ A``, as in
ode_demo (``torch.mm(true_y ** 3, true_A)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torchdiffeq import odeint

from odenet.config import ConfigError
from odenet.registry import Registry

TRUE_RTOL, TRUE_ATOL = 1e-7, 1e-9
TRUE_MAX_STEPS = 100_000
DTYPE = torch.float64


@dataclass(frozen=True)
class System:
    """A true system: dy/dt = func(t, y) from y0 at t_span[0] to t_span[1].

    Attributes:
        features: the learned-field input that suits it ("cubic" where the truth is linear in
            y³, ode_demo's choice; "y" otherwise), used when the user leaves ``--features auto``.
        time_dependent: f depends on t, so the learned field needs t as an input.
        info: the drawn constants (matrices, redraw count), saved with the run.
    """

    name: str
    func: nn.Module
    y0: torch.Tensor  # (1, 2)
    t_span: tuple[float, float]
    features: str = "y"
    time_dependent: bool = False
    info: dict = field(default_factory=dict)


SystemFactory = Callable[[int], System]
SYSTEMS: Registry[SystemFactory] = Registry("system")


def list_systems() -> list[str]:
    return SYSTEMS.names()


def build_system(name: str, seed: int = 0) -> System:
    """The registered system ``name``; ``seed`` draws the random ones (random-matrix, mlp-field).

    Raises:
        ConfigError: unknown name (the message lists the valid ones).
    """
    try:
        factory = SYSTEMS.get(name)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return factory(seed)


class CubicField(nn.Module):
    """dy/dt = y³ A (torchdiffeq's ode_demo system when A is the spiral matrix)."""

    def __init__(self, A: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("A", A.to(DTYPE))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (y ** 3) @ self.A


class SwitchingField(nn.Module):
    """dy/dt = σ(s)·A2(y − c) + σ(−s)·B2(y + c) with s = Σ y·c (column vectors, matrices on the
    left): a sigmoid switch between a spiral around c and one around −c."""

    def __init__(self, c: torch.Tensor, A2: torch.Tensor, B2: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("c", c.to(DTYPE))
        self.register_buffer("A2", A2.to(DTYPE))
        self.register_buffer("B2", B2.to(DTYPE))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        s = (y * self.c).sum(-1, keepdim=True)  # (B, 1)
        # y holds row vectors, so A2(y − c) is (y − c) A2ᵀ
        return torch.sigmoid(s) * ((y - self.c) @ self.A2.T) + torch.sigmoid(-s) * ((y + self.c) @ self.B2.T)


class TimeScaledMLP(nn.Module):
    """dy/dt = MLP(y·t): a random bias-free 2→25→50→10→2 ELU network fed the state times the time."""

    WIDTHS = (2, 25, 50, 10, 2)

    def __init__(self, generator: torch.Generator) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip(self.WIDTHS, self.WIDTHS[1:]):
            linear = nn.Linear(fan_in, fan_out, bias=False, dtype=DTYPE)
            # nn.Linear's own initialisation, U(±1/√fan_in), drawn from the explicit generator.
            bound = 1 / math.sqrt(fan_in)
            with torch.no_grad():
                linear.weight.copy_((torch.rand(fan_out, fan_in, generator=generator, dtype=DTYPE) * 2 - 1) * bound)
            layers += [linear, nn.ELU()]
        self.net = nn.Sequential(*layers[:-1])  # no activation after the last layer
        self.requires_grad_(False)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(y * t)


Y0 = torch.tensor([[2.0, 0.0]], dtype=DTYPE)
ODE_DEMO_SPAN = (0.0, 25.0)  # ode_demo: t = linspace(0, 25, 1000)


@SYSTEMS.register("spiral")
def spiral(seed: int) -> System:
    A = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]], dtype=DTYPE)
    return System("spiral", CubicField(A), Y0, ODE_DEMO_SPAN, features="cubic", info={"A": A.tolist()})


# y' = y³A can blow up in finite time when A's symmetric part has a positive eigenvalue: for
# V = Σ y⁴/4, dV/dt = y³ A (y³)ᵀ, which can then grow like V^{3/2}; from y0 = (2, 0) the first
# draw of randn(2, 2)/2 blows up for 9 of seeds 0-9. Draws are repeated from the same generator
# until V cannot grow (seeds 0-9 needed 91 draws in all, about 1 in 9 is kept).
MAX_DRAWS = 1000


@SYSTEMS.register("random-matrix")
def random_matrix(seed: int) -> System:
    generator = torch.Generator().manual_seed(seed)
    for draw in range(1, MAX_DRAWS + 1):
        A = torch.randn(2, 2, generator=generator, dtype=DTYPE) / 2
        if torch.linalg.eigvalsh((A + A.T) / 2).max() <= 0:
            return System("random-matrix", CubicField(A), Y0, ODE_DEMO_SPAN, features="cubic",
                          info={"A": A.tolist(), "draws": draw, "seed": seed})
    raise RuntimeError(f"no dissipative matrix in {MAX_DRAWS} draws")  # (8/9)^1000 ≈ 1e-51


@SYSTEMS.register("lotka-volterra")
def lotka_volterra(seed: int) -> System:
    a, b, c, d = 1.5, 1.0, 3.0, 1.0
    A = torch.tensor([[0.0, -b * c / d], [d * a / b, 0.0]], dtype=DTYPE)
    # Conservative (H = 3y₁⁴/4 + 1.5y₂⁴/4 is constant) with a period of about 0.7 at this amplitude:
    # t ∈ [0, 5] shows 7 cycles, where ode_demo's [0, 25] would pack 35 into the plots.
    return System("lotka-volterra", CubicField(A), Y0, (0.0, 5.0), features="cubic",
                  info={"A": A.tolist(), "abcd": [a, b, c, d]})


@SYSTEMS.register("nonlinear")
def nonlinear(seed: int) -> System:
    A2 = torch.tensor([[-0.1, -0.5], [0.5, -0.1]], dtype=DTYPE)
    B2 = torch.tensor([[0.2, 1.0], [-1.0, 0.2]], dtype=DTYPE)
    return System("nonlinear", SwitchingField(Y0, A2, B2), Y0, ODE_DEMO_SPAN,
                  info={"A2": A2.tolist(), "B2": B2.tolist()})


# The MLP's input y·t reaches |y|·15, where ELU is linear, so dy/dt ≈ t·M·y and many draws grow
# like exp(λt²/2), to 1e5 and beyond. Draws are repeated from the same generator until the
# trajectory stays within MLP_BOUND, the scale of the other systems (seeds 0-9 needed 44 draws).
MLP_BOUND = 5.0
MLP_MAX_DRAWS = 200


@SYSTEMS.register("mlp-field")
def mlp_field(seed: int) -> System:
    generator = torch.Generator().manual_seed(seed)
    y0 = torch.tensor([[1.0, 1.0]], dtype=DTYPE)
    for draw in range(1, MLP_MAX_DRAWS + 1):
        system = System("mlp-field", TimeScaledMLP(generator), y0, (-15.0, 15.0), time_dependent=True,
                        info={"draws": draw, "seed": seed})
        y = _solve(system, torch.linspace(*system.t_span, 200, dtype=DTYPE))
        if y is not None and y.abs().max() <= MLP_BOUND:
            return system
    raise RuntimeError(f"no bounded MLP field in {MLP_MAX_DRAWS} draws")


def _solve(system: System, t: torch.Tensor) -> torch.Tensor | None:
    """(len(t), 2) states, or None where the solve blows up or stalls."""
    try:
        with torch.no_grad():
            y = odeint(system.func, system.y0, t, rtol=TRUE_RTOL, atol=TRUE_ATOL, method="dopri5",
                       options={"max_num_steps": TRUE_MAX_STEPS})[:, 0]
    except (AssertionError, RuntimeError):  # torchdiffeq: "max_num_steps exceeded", "underflow in dt"
        return None
    return y if torch.isfinite(y).all() else None


@dataclass(frozen=True)
class Trajectory:
    """The true solution on an equally spaced grid of ``len(t)`` times (float32, like the models)."""

    t: torch.Tensor  # (N,)
    y: torch.Tensor  # (N, 2)

    @property
    def dt(self) -> float:
        return float(self.t[1] - self.t[0])


def simulate(system: System, data_size: int) -> Trajectory:
    """Integrate ``system`` on ``data_size`` equally spaced times over its span.

    Raises:
        ConfigError: the solution is not finite (cannot happen for the registered systems,
            whose random draws are screened, but a new entry could).
    """
    t = torch.linspace(*system.t_span, data_size, dtype=DTYPE)
    y = _solve(system, t)
    if y is None:
        raise ConfigError(f"system {system.name!r} blows up on t in {list(system.t_span)}; pick another "
                          f"--system-seed or system")
    return Trajectory(t.float(), y.float())


@torch.no_grad()
def true_field(system: System, t: float, y: torch.Tensor) -> torch.Tensor:
    """f(t, y) of the true system at the points ``y`` (M, 2), float32."""
    return system.func(torch.tensor(t, dtype=DTYPE), y.to(DTYPE)).float()
