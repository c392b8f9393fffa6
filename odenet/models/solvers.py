"""Solvers: their names, their settings, their failures, and the one rule of which options apply.

Every entry point that takes solver options (train.py, the train-time grid, eval.py and the
dynamics experiments) resolves them through :func:`resolve_solver_options`, and the grid drops
options that do not apply to a grid point through :func:`inapplicable_fields` — the same rule,
written once. A backbone that fixes its solver (rknet: direct RK4) says so on its registry
entry with a :class:`SolverConstraint`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torchdiffeq._impl.odeint import SOLVERS as TORCHDIFFEQ_SOLVERS

from odenet.errors import ConfigError, RunFailure
from odenet.registry import closest

ADAPTIVE_SOLVERS = ("adaptive_heun", "bosh3", "dopri5", "dopri8", "fehlberg2")
FIXED_SOLVERS = ("euler", "explicit_adams", "heun2", "heun3", "implicit_adams", "midpoint", "rk4")
SOLVERS = tuple(sorted(s for s in ADAPTIVE_SOLVERS + FIXED_SOLVERS if s in TORCHDIFFEQ_SOLVERS))
DEFAULT_STEPS = 6  # fixed-step solvers (and rknet) when --steps is not given
FIRST_STEPS = ("auto", "reuse")


def is_adaptive(method: str) -> bool:
    return method in ADAPTIVE_SOLVERS


# --------------------------------------------------------------------------- failures

# The ways torchdiffeq gives up on a solve; it reports them as AssertionError.
SOLVER_FAILURES = ("underflow in dt", "max_num_steps exceeded", "non-finite values in state")


class SolverError(RunFailure):
    """An ODE solve failed: the step size underflowed, the step budget ran out, or the state blew up.

    Attributes:
        reason: torchdiffeq's message (first line).
        solver: the settings of the block that failed.
        phase: "forward" (the block's solve) or "backward" (the adjoint solve).
    """

    def __init__(self, reason: str, solver: "SolverSettings", phase: str) -> None:
        super().__init__(f"{reason} in the {phase} solve ({solver.describe()})")
        self.reason, self.solver, self.phase = reason, solver, phase


def as_solver_error(exc: AssertionError, solver: "SolverSettings", phase: str) -> SolverError | None:
    """torchdiffeq's AssertionError → SolverError, or None when the assertion is not a solver failure."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    if any(text.startswith(reason) for reason in SOLVER_FAILURES):
        return SolverError(text[:200], solver, phase)
    return None


# --------------------------------------------------------------------------- settings

@dataclass(frozen=True)
class SolverSettings:
    """How an ODE block integrates over t ∈ [0, t1].

    Attributes:
        method: a torchdiffeq method; adaptive ones use ``rtol``/``atol``, fixed-grid ones ``steps``.
        adjoint: backpropagate by solving the adjoint ODE (O(1) memory in the number of
            steps) instead of through the solver's operations.
        adjoint_rtol, adjoint_atol: tolerances of the adjoint solve; ``None`` = forward ones.
        seminorm: measure the adjoint's error on the state and adjoint only, not on the
            parameter integrals (Kidger et al. 2021, "Hey, that's not an ODE"), which
            usually cuts backward NFE.
        max_num_steps: adaptive solvers give up after this many steps (a guard against
            runaway stiffness) with torchdiffeq's "max_num_steps exceeded" error. torchdiffeq
            counts per output interval: per solve for a classifier's [0, t1], per gap between
            observation times for :meth:`ODEBlock.trajectory`.
        steps: number of equal steps of a fixed-grid solver over [0, t1]. The step size
            t1 / steps is what is kept: a solve over another interval (a trajectory in
            :meth:`ODEBlock.trajectory`, or the adjoint's solve of each gap between
            observation times) takes ceil(length × steps / t1) equal steps.
        fast_rk: adaptive Runge–Kutta methods use :mod:`odenet.models.fast_rk` (torchdiffeq's
            step control with cheaper stage arithmetic); False runs torchdiffeq's own solver.
        first_step: "auto" (torchdiffeq's ``_select_initial_step``: one trial evaluation per solve)
            or "reuse": start from the last accepted step size of the block's previous solve
            (torchdiffeq's ``first_step`` option), saving that evaluation.
    """

    method: str = "dopri5"
    rtol: float = 1e-3
    atol: float = 1e-3
    adjoint: bool = False
    adjoint_rtol: float | None = None
    adjoint_atol: float | None = None
    seminorm: bool = False
    max_num_steps: int | None = None
    steps: int | None = None
    t1: float = 1.0
    fast_rk: bool = True
    first_step: str = "auto"

    def __post_init__(self) -> None:
        if self.first_step not in FIRST_STEPS:
            raise ValueError(f"first_step must be one of {', '.join(FIRST_STEPS)}, got {self.first_step!r}")
        if self.method not in SOLVERS:
            raise ValueError(f"unknown solver {self.method!r}; valid solvers: {', '.join(SOLVERS)}")
        for name in ("rtol", "atol", "adjoint_rtol", "adjoint_atol", "t1"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number, got {value}")
        if not is_adaptive(self.method) and (self.steps is None or self.steps < 1):
            raise ValueError(f"fixed-step solver {self.method!r} needs steps >= 1 (--steps N), got {self.steps}")
        if self.max_num_steps is not None and self.max_num_steps < 1:
            raise ValueError(f"max_num_steps must be >= 1, got {self.max_num_steps}")
        if self.seminorm and not (self.adjoint and is_adaptive(self.method)):
            raise ValueError("seminorm changes the error norm of an adaptive adjoint solve; use it with --adjoint "
                             "and an adaptive solver")

    def describe(self) -> str:
        if is_adaptive(self.method):
            text = f"{self.method}, rtol {self.rtol:g}, atol {self.atol:g}"
            text += f", max_num_steps {self.max_num_steps}" if self.max_num_steps else ""
        else:
            text = f"{self.method}, {self.steps} steps"
        return text + (", adjoint" if self.adjoint else "")

    def options(self) -> dict:
        """torchdiffeq ``options`` for the forward solve."""
        if is_adaptive(self.method):
            return {} if self.max_num_steps is None else {"max_num_steps": self.max_num_steps}
        steps_per_unit = self.steps / self.t1
        # An explicit grid rather than ``step_size``: torchdiffeq builds the grid from
        # ceil(T / step_size + 1), which floating-point error can turn into one extra
        # zero-length step (and 4 extra RK4 evaluations) for step sizes like 1/3.
        return {"grid_constructor": lambda func, y0, t: torch.linspace(
            float(t[0]), float(t[-1]), grid_steps(float(t[-1]) - float(t[0]), steps_per_unit) + 1,
            dtype=t.dtype, device=t.device)}

    def adjoint_kwargs(self) -> dict:
        options = self.options()
        if self.seminorm:
            options["norm"] = "seminorm"
        return {"adjoint_rtol": self.adjoint_rtol or self.rtol, "adjoint_atol": self.adjoint_atol or self.atol,
                "adjoint_options": options}


def grid_steps(length: float, steps_per_unit: float) -> int:
    """Equal steps of a fixed-grid solve over an interval of ``length`` (either sign): at least one,
    and an exact multiple is not rounded up by floating-point noise (1 × 3 / 1 → 3, not 4)."""
    x = abs(length) * steps_per_unit
    nearest = round(x)
    return max(1, nearest if abs(x - nearest) <= 1e-6 * max(1.0, x) else math.ceil(x))


# --------------------------------------------------------------------------- the applicability rule

# Solver options of a config (train.py's names; the dynamics experiments have all but t1 and fast_rk).
# The ODE blocks' dynamics beyond the solver: regularisers (odenet.models.regularizers), ANODE's augmented
# channels, the first step size. train.py has them; the dynamics experiments do not.
DYNAMICS_FIELDS = ("kinetic_reg", "jacobian_reg", "error_reg", "steer", "augment_dim", "first_step")
SOLVER_FIELDS = ("solver", "tol", "rtol", "atol", "adjoint", "adjoint_tol", "seminorm", "max_num_steps", "steps",
                 "t1", "fast_rk") + DYNAMICS_FIELDS
# Adaptive solvers only: tolerances, their error norm and estimates, their first step.
TOLERANCE_FIELDS = ("tol", "rtol", "atol", "adjoint_tol", "seminorm", "max_num_steps", "fast_rk", "error_reg",
                    "first_step")
ADJOINT_ONLY_FIELDS = ("adjoint_tol", "seminorm")
DIRECT_ONLY_FIELDS = ("error_reg",)  # ERNODE differentiates the forward solve's error estimates


@dataclass(frozen=True)
class SolverConstraint:
    """What a backbone fixes of its ODE blocks' solver (rknet: direct RK4); kept on its registry entry.

    Attributes:
        method: the only solver it runs.
        adjoint: whether the adjoint is allowed.
        own_fields: the solver options a user may still set.
        instead: what to use for anything else (ends the error message).
    """

    name: str
    method: str
    adjoint: bool = False
    own_fields: tuple[str, ...] = ("steps", "t1")
    instead: str = "--backbone odenet --solver ..."

    def check(self, settings: SolverSettings) -> None:
        """Raise ValueError unless ``settings`` is what the backbone runs."""
        if settings.method != self.method or (settings.adjoint and not self.adjoint):
            raise ValueError(f"{self.name} is fixed-step {self.method.upper()} with direct backpropagation; for "
                             f"other solvers or the adjoint use {self.instead}")


def inapplicable_fields(ode: bool, solver: str | None, adjoint: bool,
                        constraint: SolverConstraint | None = None) -> tuple[str, ...]:
    """Solver options that do not apply to this kind of run: given explicitly they are refused
    (:func:`resolve_solver_options`); the grid leaves them out of points where they do not apply."""
    if not ode:
        return SOLVER_FIELDS
    if constraint is not None:
        return tuple(f for f in SOLVER_FIELDS if f not in constraint.own_fields)
    if not is_adaptive(solver or "dopri5"):
        return TOLERANCE_FIELDS
    return ("steps",) + (DIRECT_ONLY_FIELDS if adjoint else ADJOINT_ONLY_FIELDS)


def resolve_solver_options(values: Mapping[str, Any], explicit: set[str], *, ode: bool = True,
                           constraint: SolverConstraint | None = None,
                           default_steps: int | None = DEFAULT_STEPS) -> dict[str, Any]:
    """The changes that make a config's solver options say what will run.

    Args:
        values: the config's options (``SOLVER_FIELDS`` it has; others are ignored).
        explicit: names set by a YAML file or a flag (an option that does not apply is refused
            only when given; a default that does not apply is blanked).
        ode: whether the model has ODE blocks at all.
        constraint: the backbone's fixed solver, if any.
        default_steps: steps of a fixed-step solver without ``steps``; None makes ``steps`` required.

    Raises:
        ConfigError: an unknown solver, or an option given explicitly that does not apply.
    """
    fields = [f for f in SOLVER_FIELDS if f in values]
    if not ode:
        _reject_explicit(values, explicit, fields, f"{values.get('backbone', 'this model')} has no ODE block")
        return dict.fromkeys(fields)
    changes: dict[str, Any] = {}
    solver = values["solver"]
    if constraint is not None:
        if solver != constraint.method and "solver" in explicit:
            raise ConfigError(f"{constraint.name} is fixed-step {constraint.method.upper()}; drop --solver, or use "
                              f"--backbone odenet --solver {solver}")
        if values.get("adjoint") and not constraint.adjoint:
            raise ConfigError(f"{constraint.name} backpropagates directly through {constraint.method.upper()}; drop "
                              f"--adjoint, or use --backbone odenet --solver {constraint.method} --adjoint")
        changes["solver"] = solver = constraint.method
    if solver not in SOLVERS:
        raise ConfigError(f"unknown --solver {solver!r}{closest(str(solver), list(SOLVERS))}; valid: "
                          f"{', '.join(SOLVERS)}")
    adjoint = bool(values.get("adjoint"))
    if is_adaptive(solver):
        if values.get("seminorm") and not adjoint:
            raise ConfigError("--seminorm controls the adjoint solve's error; add --adjoint or drop --seminorm")
        _reject_explicit(values, explicit, ["steps"], f"{solver} chooses its own steps; set --tol instead")
        rtol, atol = values.get("rtol") or values.get("tol"), values.get("atol") or values.get("tol")
        if rtol is None or atol is None:
            raise ConfigError(f"{solver} needs a tolerance; give --tol (or --rtol and --atol)")
        changes.update(steps=None, rtol=rtol, atol=atol)
        if not adjoint:
            _reject_explicit(values, explicit, ["adjoint_tol"], "there is no adjoint solve without --adjoint")
            changes["adjoint_tol"] = None
        elif values.get("error_reg"):
            raise ConfigError("--error-reg differentiates the forward solve's error estimates, which the adjoint "
                              "does not backpropagate through; drop --adjoint or --error-reg")
        if values.get("error_reg") and values.get("fast_rk") is False:
            raise ConfigError("--error-reg reads the error estimates of odenet's fast RK solvers; drop --no-fast-rk")
        return changes
    _reject_explicit(values, explicit, [f for f in TOLERANCE_FIELDS if f in values],
                     f"{solver} is a fixed-step solver; set --steps instead")
    steps = values.get("steps") or default_steps
    if steps is None:
        raise ConfigError(f"fixed-step solver {solver} needs --steps N (steps per unit of time)")
    changes.update({f: None for f in TOLERANCE_FIELDS if f in values}, steps=steps)
    return changes


def _reject_explicit(values: Mapping[str, Any], explicit: set[str], names, why: str) -> None:
    """Refuse options given explicitly with a value that would do something (``--no-seminorm`` is harmless)."""
    given = [_flag(n) for n in names if n in explicit and values.get(n) not in (None, False)]
    if given:
        raise ConfigError(f"{', '.join(given)} does not apply: {why}")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")
