"""What a solve is asked to do and how it can fail: the table of methods, :class:`SolverSettings`,
the one tol → (rtol, atol) expansion, and :class:`SolverError`. Torch-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from odenet.errors import RunFailure

# --------------------------------------------------------------------------- the methods

# The one table of the methods odenet runs: torchdiffeq's, by their torchdiffeq names.
# tests/test_solve.py checks that the installed torchdiffeq has every one of them.
ADAPTIVE_SOLVERS = ("adaptive_heun", "bosh3", "dopri5", "dopri8", "fehlberg2")
FIXED_SOLVERS = ("euler", "explicit_adams", "heun2", "heun3", "implicit_adams", "midpoint", "rk4")
SOLVERS = tuple(sorted(ADAPTIVE_SOLVERS + FIXED_SOLVERS))
DEFAULT_STEPS = 6  # fixed-step solvers (and rknet) when --steps is not given
FIRST_STEPS = ("auto", "reuse")


def is_adaptive(method: str) -> bool:
    return method in ADAPTIVE_SOLVERS


def expand_tol(tol: float | None, rtol: float | None = None, atol: float | None = None
               ) -> tuple[float | None, float | None]:
    """(rtol, atol) from ``--tol`` and the optional ``--rtol``/``--atol`` that override it: the one place
    a single tolerance becomes the two torchdiffeq takes."""
    return (tol if rtol is None else rtol), (tol if atol is None else atol)


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
            observation times for a trajectory.
        steps: number of equal steps of a fixed-grid solver over [0, t1]. The step size
            t1 / steps is what is kept: a solve over another interval (a trajectory, or the
            adjoint's solve of each gap between observation times) takes
            ceil(length × steps / t1) equal steps (:func:`grid_steps`).
        fast_rk: adaptive Runge–Kutta methods run :mod:`odenet.solve.host` (torchdiffeq's step
            control with cheaper stage arithmetic); False runs torchdiffeq's own solver.
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

    @property
    def adaptive(self) -> bool:
        return is_adaptive(self.method)

    def describe(self) -> str:
        if self.adaptive:
            text = f"{self.method}, rtol {self.rtol:g}, atol {self.atol:g}"
            text += f", max_num_steps {self.max_num_steps}" if self.max_num_steps else ""
        else:
            text = f"{self.method}, {self.steps} steps"
        return text + (", adjoint" if self.adjoint else "")


def grid_steps(length: float, steps_per_unit: float) -> int:
    """Equal steps of a fixed-grid solve over an interval of ``length`` (either sign): at least one,
    and an exact multiple is not rounded up by floating-point noise (1 × 3 / 1 → 3, not 4)."""
    x = abs(length) * steps_per_unit
    nearest = round(x)
    return max(1, nearest if abs(x - nearest) <= 1e-6 * max(1.0, x) else math.ceil(x))


# --------------------------------------------------------------------------- failures

# Why a solve stopped early, by code (the device-side control records codes in tensors); 0 = it did
# not. The reasons are torchdiffeq's own wording, which it raises as AssertionError.
NO_FAILURE, MAX_STEPS, UNDERFLOW, NON_FINITE = 0, 1, 2, 3
FAILURE_REASONS = {MAX_STEPS: "max_num_steps exceeded", UNDERFLOW: "underflow in dt",
                   NON_FINITE: "non-finite values in state"}


class SolverError(RunFailure):
    """An ODE solve failed: the step size underflowed, the step budget ran out, or the state blew up.

    Attributes:
        reason: torchdiffeq's message (first line), naming the images where known.
        solver: the settings of the solve that failed.
        phase: "forward" (the block's solve) or "backward" (the adjoint solve).
    """

    def __init__(self, reason: str, solver: SolverSettings, phase: str) -> None:
        super().__init__(f"{reason} in the {phase} solve ({solver.describe()})")
        self.reason, self.solver, self.phase = reason, solver, phase

    @classmethod
    def from_code(cls, code: int, solver: SolverSettings, images: list[int] | None = None) -> SolverError:
        """The failure a device-side solve recorded as ``code``, naming the images of the batch if given."""
        where = "" if images is None else f" for image(s) {images[:10]} of the batch"
        return cls(f"{FAILURE_REASONS[code]}{where}", solver, "forward")


def as_solver_error(exc: AssertionError, solver: SolverSettings, phase: str) -> SolverError | None:
    """torchdiffeq's AssertionError → SolverError, or None when the assertion is not a solver failure."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    if any(text.startswith(reason) for reason in FAILURE_REASONS.values()):
        return SolverError(text[:200], solver, phase)
    return None
