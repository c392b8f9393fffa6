"""The ODE block: a residual stack replaced by dx/dt = f(t, x) solved with torchdiffeq.

Every evaluation of f and every solver step is tallied here, by phase, so the numbers a
run reports are exact rather than estimated:

* ``nfe_forward``  — evaluations while the block's forward solve runs (training or eval),
  including the two evaluations adaptive solvers spend choosing the first step size
  (f(t0, x0) and one trial evaluation, torchdiffeq's ``_select_initial_step``).
* ``nfe_backward`` — evaluations made after the forward solve returned, i.e. by the adjoint
  ODE solved during ``loss.backward()``. Always 0 with direct backpropagation.
* ``nfe_backprop`` — forward evaluations recorded with autograd on, i.e. the evaluations
  direct backpropagation differentiates through. 0 with the adjoint (its forward solve runs
  under ``no_grad``) and in evaluation.

Phases are told apart by where the call happens (inside or outside ``ODEBlock.forward``),
not by a flag a training loop must remember to set, so evaluation passes cannot leak into
training counts and nothing depends on call order.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn
from torchdiffeq import odeint, odeint_adjoint
from torchdiffeq._impl.odeint import SOLVERS as TORCHDIFFEQ_SOLVERS

ADAPTIVE_SOLVERS = ("adaptive_heun", "bosh3", "dopri5", "dopri8", "fehlberg2")
FIXED_SOLVERS = ("euler", "explicit_adams", "heun2", "heun3", "implicit_adams", "midpoint", "rk4")
SOLVERS = tuple(sorted(s for s in ADAPTIVE_SOLVERS + FIXED_SOLVERS if s in TORCHDIFFEQ_SOLVERS))


def is_adaptive(method: str) -> bool:
    return method in ADAPTIVE_SOLVERS


# The ways torchdiffeq gives up on a solve; it reports them as AssertionError.
SOLVER_FAILURES = ("underflow in dt", "max_num_steps exceeded", "non-finite values in state")


class SolverError(RuntimeError):
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

    def __post_init__(self) -> None:
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

    def torchdiffeq_method(self) -> str:
        """The name of the solver torchdiffeq runs for ``method``."""
        from odenet.models.fast_rk import FAST_METHODS

        return FAST_METHODS.get(self.method, self.method) if self.fast_rk else self.method

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


@dataclass
class SolverStats:
    """Counters of one ODE block since its last reset (see the module docstring)."""

    nfe_forward: int = 0
    nfe_backward: int = 0
    nfe_backprop: int = 0
    steps_attempted: int = 0
    steps_accepted: int = 0
    steps_rejected: int = 0
    steps_attempted_backward: int = 0
    steps_accepted_backward: int = 0
    steps_rejected_backward: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters users see; fixed-grid solvers accept every step they attempt."""
        fwd_judged = self.steps_accepted + self.steps_rejected
        bwd_judged = self.steps_accepted_backward + self.steps_rejected_backward
        return {
            "nfe_forward": self.nfe_forward,
            "nfe_backward": self.nfe_backward,
            "nfe_backprop": self.nfe_backprop,
            "steps_accepted": self.steps_accepted if fwd_judged else self.steps_attempted,
            "steps_rejected": self.steps_rejected,
            "steps_accepted_backward": self.steps_accepted_backward if bwd_judged else self.steps_attempted_backward,
            "steps_rejected_backward": self.steps_rejected_backward,
        }

    def reset(self) -> None:
        for field in dataclasses.fields(self):
            setattr(self, field.name, 0)


STAT_KEYS = tuple(SolverStats().as_dict())


class _CountedField(nn.Module):
    """Calls the field and tallies the call and torchdiffeq's step callbacks into ``stats``.

    torchdiffeq looks the callbacks up by name on the function it integrates (>= 0.2.1) and
    warns about ones a solver does not call, so fixed-grid solvers get this class (steps
    only) and adaptive ones :class:`_CountedAdaptiveField` (accepted/rejected too).
    """

    def __init__(self, func: nn.Module, stats: SolverStats, autocast: torch.dtype | None = None) -> None:
        super().__init__()
        self.func = func
        self.stats = stats
        self.autocast = autocast
        self.solving_forward = False

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.solving_forward:
            self.stats.nfe_forward += 1
            self.stats.nfe_backprop += torch.is_grad_enabled()
        else:
            self.stats.nfe_backward += 1
        if self.autocast is None:
            return self.func(t, x)
        # Mixed precision: the field in low precision, the solver's state, stages and error
        # estimate in the state's dtype (float32), so step-size control is unaffected.
        with torch.autocast(x.device.type, dtype=self.autocast):
            return self.func(t, x).to(x.dtype)

    def callback_step(self, t0, y0, dt) -> None:
        self.stats.steps_attempted += 1

    def callback_step_adjoint(self, t0, y0, dt) -> None:
        self.stats.steps_attempted_backward += 1


class _CountedAdaptiveField(_CountedField):
    def callback_accept_step(self, t0, y0, dt) -> None:
        self.stats.steps_accepted += 1

    def callback_reject_step(self, t0, y0, dt) -> None:
        self.stats.steps_rejected += 1

    def callback_accept_step_adjoint(self, t0, y0, dt) -> None:
        self.stats.steps_accepted_backward += 1

    def callback_reject_step_adjoint(self, t0, y0, dt) -> None:
        self.stats.steps_rejected_backward += 1


class ODEBlock(nn.Module):
    """Maps x to the solution at t1 of dx/dt = func(t, x), x(0) = x.

    Args:
        func: an ``nn.Module`` called as ``func(t, x)``; its parameters are the ones the
            adjoint differentiates.
        solver: how to integrate; change it later only through :func:`set_solver`.
    """

    def __init__(self, func: nn.Module, solver: SolverSettings | None = None, **solver_kw) -> None:
        super().__init__()
        self.func = func
        self.stats = SolverStats()
        self.autocast: torch.dtype | None = None
        self.register_buffer("t", torch.zeros(2), persistent=False)
        self.configure(solver if solver is not None else SolverSettings(**solver_kw))

    def configure(self, solver: SolverSettings) -> None:
        """Replace the solver settings (the one place they change after construction)."""
        self.solver = solver
        self.t[1] = solver.t1  # (2,) integration interval [0, t1], kept on the block's device
        counted = _CountedAdaptiveField if is_adaptive(solver.method) else _CountedField
        # Not registered as a submodule: state-dict keys stay ``func.*`` and the wrapper owns no parameters.
        object.__setattr__(self, "_counted", counted(self.func, self.stats, self.autocast))

    def set_autocast(self, dtype: torch.dtype | None) -> None:
        """Evaluate the field under autocast to ``dtype`` (e.g. torch.bfloat16); None = full precision."""
        self.autocast = dtype
        self.configure(self.solver)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, ...) → the state at t1, same shape."""
        return self.trajectory(x, self.t)[-1]

    def trajectory(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The states at the times ``t`` (1-D, increasing or decreasing, ``t[0]`` the initial time).

        Returns a (len(t), *x.shape) tensor. Counted like ``forward``; fixed-grid solvers keep
        the step size t1 / steps over [t[0], t[-1]] (see :class:`SolverSettings`) and interpolate
        the times in between.
        """
        s = self.solver
        kwargs = {"rtol": s.rtol, "atol": s.atol, "method": s.torchdiffeq_method(), "options": s.options()}
        self._counted.solving_forward = True
        try:
            if s.adjoint and torch.is_grad_enabled():
                return odeint_adjoint(self._counted, x, t, adjoint_params=tuple(self.func.parameters()),
                                      **s.adjoint_kwargs(), **kwargs)
            # Without autograd the adjoint's forward pass is exactly this solve.
            return odeint(self._counted, x, t, **kwargs)
        except AssertionError as exc:
            error = as_solver_error(exc, s, "forward")
            if error is None:
                raise
            raise error from None
        finally:
            self._counted.solving_forward = False

    def extra_repr(self) -> str:
        return f"solver={self.solver}" + ("" if self.autocast is None else f", autocast={self.autocast}")


def ode_blocks(model: nn.Module) -> dict[str, ODEBlock]:
    return {name: m for name, m in model.named_modules() if isinstance(m, ODEBlock)}


def read_nfe(model: nn.Module, *, reset: bool = True) -> dict:
    """Read (and by default reset) the solver counters of every ODE block in ``model``.

    Returns:
        ``{}`` for a model without ODE blocks; otherwise the counters of
        :class:`SolverStats` summed over blocks (``nfe_forward``, ``nfe_backward``,
        ``nfe_backprop``, ``steps_accepted``, ``steps_rejected`` and their ``_backward``
        twins) plus ``"blocks"``: the same counters per block, keyed by module name.
        Reset after each training step and each evaluation batch so that no count leaks
        across batches or phases.
    """
    blocks = ode_blocks(model)
    if not blocks:
        return {}
    per_block = {name: block.stats.as_dict() for name, block in blocks.items()}
    if reset:
        for block in blocks.values():
            block.stats.reset()
    total = {key: sum(stats[key] for stats in per_block.values()) for key in STAT_KEYS}
    total["blocks"] = per_block
    return total


def set_solver(model: nn.Module, **changes) -> None:
    """Change the solver settings of every ODE block (e.g. a test-time tolerance sweep).

    ``changes`` are :class:`SolverSettings` fields; ``tol`` sets ``rtol`` and ``atol`` together.
    """
    if "tol" in changes:
        tol = changes.pop("tol")
        changes.update(rtol=tol, atol=tol)
    for block in ode_blocks(model).values():
        block.configure(dataclasses.replace(block.solver, **changes))
