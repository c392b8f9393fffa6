"""The ODE block: a residual stack replaced by dx/dt = f(t, x) solved with torchdiffeq.

Every evaluation of f and every solver step is tallied here, by phase, so the numbers a
run reports are exact rather than estimated:

* ``nfe_forward``  — evaluations while the block's forward solve runs (training or eval),
  including the two evaluations adaptive solvers spend choosing the first step size
  (f(t0, x0) and one trial evaluation, torchdiffeq's ``_select_initial_step``).
* ``nfe_backward`` — evaluations made after the forward solve returned, i.e. by the adjoint
  ODE solved during ``loss.backward()``. Always 0 with direct backpropagation.
* ``nfe_backprop`` — forward evaluations that direct backpropagation differentiates through:
  those recorded with autograd on and reachable from the block's output. A rejected step's
  evaluations are not (torchdiffeq restarts from the step's y0 and f0, and computes the next
  step size under ``no_grad``), so they are left out; the two evaluations of
  ``_select_initial_step`` are in (f0 is the first step's k1, and the trial evaluation shapes
  the first step size, which is not computed under ``no_grad``), the trial one only if the
  first step is accepted. 0 with the adjoint (its forward solve runs under ``no_grad``) and in
  evaluation. tests/test_measure.py checks it against a walk of the loss's autograd graph.

Phases are told apart by where the call happens (inside or outside ``ODEBlock.forward``),
not by a flag a training loop must remember to set, so evaluation passes cannot leak into
training counts and nothing depends on call order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from odenet.models.regularizers import (NO_REGULARIZATION, REG_KEYS, IntegralsField, Regularization, initial_state,
                                        recording_step_errors, state_norm, steer_end_time)
from odenet.solve.drivers import Problem
from odenet.solve.host import odeint_solve
from odenet.solve.settings import SolverSettings, expand_tol


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
        self.values_only = False  # set by IntegralsField when its inner graph is for a vjp only
        self.start_solve()

    def start_solve(self) -> None:
        """Forget the step bookkeeping of an earlier solve (called as each forward solve starts)."""
        self._step_recorded = 0  # evaluations with autograd on since the current step began
        self._initial_recorded = 0  # ... made before the first step (choosing the first step size)
        self._steps_begun = 0
        self.last_dt: torch.Tensor | None = None  # the last accepted step of this forward solve (first_step reuse)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.solving_forward:
            self.stats.nfe_forward += 1
            recorded = torch.is_grad_enabled() and not self.values_only
            self.stats.nfe_backprop += recorded
            self._step_recorded += recorded
        else:
            self.stats.nfe_backward += 1
        if self.autocast is None:
            return self.func(t, x)
        # Mixed precision: the field in low precision, the solver's state, stages and error
        # estimate in the state's dtype (float32), so step-size control is unaffected.
        with torch.autocast(x.device.type, dtype=self.autocast):
            return self.func(t, x).to(x.dtype)

    def callback_step(self, t0, y0, dt) -> None:
        # torchdiffeq calls this as a step begins, before any of the step's evaluations.
        if self.solving_forward:
            if self._steps_begun == 0:
                self._initial_recorded = self._step_recorded
            self._steps_begun += 1
            self._step_recorded = 0
        self.stats.steps_attempted += 1

    def callback_step_adjoint(self, t0, y0, dt) -> None:
        self.stats.steps_attempted_backward += 1


class _CountedAdaptiveField(_CountedField):
    def callback_accept_step(self, t0, y0, dt) -> None:
        self.stats.steps_accepted += 1
        if self.solving_forward:
            self.last_dt = dt.detach()

    def callback_reject_step(self, t0, y0, dt) -> None:
        self.stats.steps_rejected += 1
        # Nothing this step evaluated reaches the loss: the solver retries from (y0, f0) with a
        # step size computed under no_grad. A rejected first step also cuts off the initial
        # step-size trial (every initial evaluation but f0, which stays the next step's k1).
        drop = self._step_recorded + (max(self._initial_recorded - 1, 0) if self._steps_begun == 1 else 0)
        self.stats.nfe_backprop -= drop
        self._step_recorded = 0

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
        regularization: the dynamics regularisers of training solves (:mod:`odenet.models.regularizers`);
            their unweighted values of the last solve are in :attr:`reg_values`.
    """

    def __init__(self, func: nn.Module, solver: SolverSettings | None = None,
                 regularization: Regularization | None = None, **solver_kw) -> None:
        super().__init__()
        self.func = func
        self.stats = SolverStats()
        self.autocast: torch.dtype | None = None
        self.regularization = regularization or NO_REGULARIZATION
        self.reg_values: dict[str, torch.Tensor] = {}  # reg_kinetic, reg_jacobian, reg_error of the last solve
        self.register_buffer("t", torch.zeros(2), persistent=False)
        # ``--first-step reuse``: the last accepted step size of the last *training* solve (NaN: none yet).
        # A buffer, so a checkpoint carries it; evaluation reads it and never writes it, so the same
        # checkpoint gives the same NFE on the same images in any process and in any order.
        self.register_buffer("first_step", torch.full((), math.nan, dtype=torch.float64))
        self.configure(solver if solver is not None else SolverSettings(**solver_kw))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints written before the first step was kept have none: as if no training solve had run.
        state_dict.setdefault(prefix + "first_step", torch.full((), math.nan, dtype=torch.float64))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def configure(self, solver: SolverSettings) -> None:
        """Replace the solver settings (the one place they change after construction)."""
        self.solver = solver
        self.t[1] = solver.t1  # (2,) integration interval [0, t1], kept on the block's device
        counted = (_CountedAdaptiveField if solver.adaptive else _CountedField)(
            self.func, self.stats, self.autocast)
        integrals = IntegralsField(counted, self.regularization.jacobian > 0) if self.regularization.integrals \
            else None
        # Not registered as submodules: state-dict keys stay ``func.*`` and the wrappers own no parameters.
        object.__setattr__(self, "_counted", counted)
        object.__setattr__(self, "_integrals", integrals)

    def set_autocast(self, dtype: torch.dtype | None) -> None:
        """Evaluate the field under autocast to ``dtype`` (e.g. torch.bfloat16); None = full precision."""
        self.autocast = dtype
        self.configure(self.solver)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, ...) → the state at t1, same shape (at STEER's random end time in training)."""
        t = self.t
        b = self.regularization.steer
        if b > 0 and self.training and torch.is_grad_enabled():
            t = torch.stack([t[0], steer_end_time(self.solver.t1, b, t)])
        return self.trajectory(x, t)[-1]

    def trajectory(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The states at the times ``t`` (1-D, increasing or decreasing, ``t[0]`` the initial time).

        Returns a (len(t), *x.shape) tensor. Counted like ``forward``; fixed-grid solvers keep
        the step size t1 / steps over [t[0], t[-1]] (see :class:`SolverSettings`) and interpolate
        the times in between.
        """
        s, reg = self.solver, self.regularization
        training_solve = self.training and torch.is_grad_enabled()
        reuse = s.first_step == "reuse" and s.adaptive and bool(torch.isfinite(self.first_step))
        func, y0, norm = self._counted, x, None
        if self._integrals is not None:
            func, y0 = self._integrals, initial_state(x)
            norm = state_norm  # step-size control sees x only (see odenet.models.regularizers)
            if self._integrals.jacobian:
                self._integrals.probe = torch.randn_like(x)  # one Hutchinson probe per solve
        # Without autograd the adjoint's forward pass is exactly the direct solve.
        adjoint_params = tuple(self.func.parameters()) if s.adjoint and torch.is_grad_enabled() else None
        self._counted.solving_forward = True
        self._counted.start_solve()
        try:
            with recording_step_errors() if reg.error > 0 else contextlib.nullcontext([]) as errors:
                out = odeint_solve(func, y0, t, s, adjoint_params=adjoint_params, norm=norm,
                                   first_step=self.first_step if reuse else None)  # reuse: no trial evaluation
        finally:
            self._counted.solving_forward = False
        if training_solve and s.adaptive and self._counted.last_dt is not None:
            self.first_step.copy_(self._counted.last_dt)
        self.reg_values = {}  # this solve's, or none: never an earlier solve's values
        if self._integrals is None and reg.error == 0:
            return out
        if self._integrals is not None:
            out, kinetic, jacobian = out
            self.reg_values["reg_kinetic"] = kinetic[-1].mean()
            if self._integrals.jacobian:  # not estimated otherwise: no value rather than a false 0
                self.reg_values["reg_jacobian"] = jacobian[-1].mean()
        if reg.error > 0:
            self.reg_values["reg_error"] = torch.stack(errors).sum() if errors else x.new_zeros(())
        return out

    def extra_repr(self) -> str:
        return f"solver={self.solver}" + ("" if self.autocast is None else f", autocast={self.autocast}")


def block_problem(block: ODEBlock, x: torch.Tensor, *, per_sample: bool) -> Problem:
    """The block's solve of ``x`` over its [0, t1] for the device-side drivers (:mod:`odenet.solve.drivers`).

    Raises:
        ValueError: the block's solver is not adaptive, or a per-sample state has no batch dimension.
    """
    return Problem.create(block.func, block.solver, x, block.t, per_sample=per_sample, autocast=block.autocast)


def ode_blocks(model: nn.Module) -> dict[str, ODEBlock]:
    return {name: m for name, m in model.named_modules() if isinstance(m, ODEBlock)}


def read_nfe(model: nn.Module) -> dict:
    """The solver counters of every ODE block in ``model`` since their last :func:`reset_nfe`.

    Returns:
        ``{}`` for a model without ODE blocks; otherwise the counters of
        :class:`SolverStats` summed over blocks (``nfe_forward``, ``nfe_backward``,
        ``nfe_backprop``, ``steps_accepted``, ``steps_rejected`` and their ``_backward``
        twins) plus ``"blocks"``: the same counters per block, keyed by module name.
    """
    blocks = ode_blocks(model)
    if not blocks:
        return {}
    per_block = {name: block.stats.as_dict() for name, block in blocks.items()}
    total = {key: sum(stats[key] for stats in per_block.values()) for key in STAT_KEYS}
    total["blocks"] = per_block
    return total


def reset_nfe(model: nn.Module) -> None:
    """Zero the counters of every ODE block; callers reset before each training step and each
    evaluation batch so that no count leaks across batches or phases."""
    for block in ode_blocks(model).values():
        block.stats.reset()


def take_nfe(model: nn.Module) -> dict:
    """:func:`read_nfe`, then :func:`reset_nfe`: the counts of the phase that just ended."""
    stats = read_nfe(model)
    reset_nfe(model)
    return stats


def set_solver(model: nn.Module, **changes) -> None:
    """Change the solver settings of every ODE block (e.g. a test-time tolerance sweep).

    ``changes`` are :class:`SolverSettings` fields; ``tol`` sets ``rtol`` and ``atol`` together (unless they
    are given too).
    """
    if "tol" in changes:
        changes["rtol"], changes["atol"] = expand_tol(changes.pop("tol"), changes.get("rtol"), changes.get("atol"))
    for block in ode_blocks(model).values():
        block.configure(dataclasses.replace(block.solver, **changes))


def set_regularization(model: nn.Module, regularization: Regularization) -> None:
    """Give every ODE block of ``model`` these dynamics regularisers (the one place they are set)."""
    for block in ode_blocks(model).values():
        block.regularization = regularization
        block.configure(block.solver)


@contextlib.contextmanager
def regularization_off(model: nn.Module):
    """Solve ``model``'s ODE blocks without their integrated regularisers (kinetic, Jacobian, error) inside the
    ``with``, restored after: what the model computes once deployed. Steps and outputs are unchanged (the
    step control sees x only), so a timing inside measures the solve of x alone. The counting wrappers
    (NFE, ``--first-step reuse``'s last step) are kept as they are."""
    blocks = ode_blocks(model)
    saved = {name: (block.regularization, block._integrals) for name, block in blocks.items()}
    try:
        for block in blocks.values():
            block.regularization = dataclasses.replace(block.regularization, kinetic=0.0, jacobian=0.0, error=0.0)
            object.__setattr__(block, "_integrals", None)
        yield
    finally:
        for name, block in blocks.items():
            block.regularization = saved[name][0]
            object.__setattr__(block, "_integrals", saved[name][1])


def regularization_terms(model: nn.Module) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
    """The weighted penalty of every ODE block's last solve (None without regularisers) and the
    unweighted values summed over blocks (``reg_kinetic``, ``reg_jacobian``, ``reg_error``)."""
    penalty, values = None, {}
    for block in ode_blocks(model).values():
        weights = {"reg_kinetic": block.regularization.kinetic, "reg_jacobian": block.regularization.jacobian,
                   "reg_error": block.regularization.error}
        for key in REG_KEYS:
            if key in block.reg_values:
                value = block.reg_values[key]
                values[key] = values[key] + value if key in values else value
                term = weights[key] * value
                penalty = term if penalty is None else penalty + term
    return penalty, values
