"""Solves stepped from the host: torchdiffeq's ``odeint`` / ``odeint_adjoint`` with odenet's settings,
failures and fast Runge–Kutta stage arithmetic.

:func:`odeint_solve` is the one call an ODE block makes: it turns :class:`SolverSettings` into
torchdiffeq's arguments (:func:`odeint_options`, :func:`adjoint_kwargs`), picks the fast twin of an
adaptive method (:func:`torchdiffeq_method`) and turns torchdiffeq's failed assertions into
:class:`SolverError`.

The fast twins (``odenet-<method>``, added to torchdiffeq's table the first time one is asked for;
importing this module changes nothing) keep torchdiffeq's step control — initial step selection,
error norm, accept/reject, step-size update, the ``max_num_steps`` / underflow / non-finite checks
and the step callbacks: :meth:`FastRKMixin._adaptive_step` is torchdiffeq 0.2.5's
``RKAdaptiveStepsizeODESolver._adaptive_step`` with three marked lines changed — the stage
arithmetic (:func:`odenet.solve.tableau.runge_kutta_step`), an interpolant built only for the step
that crosses an output time (torchdiffeq builds it for every step; 20-odd tensor ops), and the
accepted-step hook (:func:`on_accepted_steps`), through which a regulariser can read each accepted
step's error estimate without the solver knowing it.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from odenet.solve import torchdiffeq_api as td
from odenet.solve.settings import ADAPTIVE_SOLVERS, SolverSettings, as_solver_error, grid_steps
from odenet.solve.tableau import Tableau, runge_kutta_step, step_from, tableau

# --------------------------------------------------------------------------- torchdiffeq's arguments


def odeint_options(settings: SolverSettings) -> dict:
    """torchdiffeq ``options`` of the forward solve."""
    if settings.adaptive:
        return {} if settings.max_num_steps is None else {"max_num_steps": settings.max_num_steps}
    steps_per_unit = settings.steps / settings.t1
    # An explicit grid rather than ``step_size``: torchdiffeq builds the grid from
    # ceil(T / step_size + 1), which floating-point error can turn into one extra
    # zero-length step (and 4 extra RK4 evaluations) for step sizes like 1/3.
    return {"grid_constructor": lambda func, y0, t: torch.linspace(
        float(t[0]), float(t[-1]), grid_steps(float(t[-1]) - float(t[0]), steps_per_unit) + 1,
        dtype=t.dtype, device=t.device)}


def adjoint_kwargs(settings: SolverSettings) -> dict:
    """torchdiffeq ``odeint_adjoint``'s arguments of the backward solve."""
    options = odeint_options(settings)
    if settings.seminorm:
        options["norm"] = "seminorm"
    return {"adjoint_rtol": settings.adjoint_rtol or settings.rtol,
            "adjoint_atol": settings.adjoint_atol or settings.atol, "adjoint_options": options}


def torchdiffeq_method(settings: SolverSettings) -> str:
    """The name torchdiffeq runs: the fast twin of an adaptive RK method unless ``fast_rk`` is off."""
    return method_name(settings.method) if settings.fast_rk and settings.adaptive else settings.method


def odeint_solve(func: Callable, y0, t: torch.Tensor, settings: SolverSettings, *,
                 adjoint_params: tuple[torch.Tensor, ...] | None = None, first_step: torch.Tensor | None = None,
                 norm: Callable | None = None):
    """``odeint(func, y0, t)`` with ``settings``; by the adjoint when ``adjoint_params`` are given.

    Args:
        adjoint_params: the parameters the adjoint differentiates; None solves directly.
        first_step: the first step size of an adaptive solve (None: torchdiffeq chooses it).
        norm: the error norm of an adaptive solve (None: torchdiffeq's RMS norm of the whole state).

    Raises:
        SolverError: the forward solve failed (step underflow, ``max_num_steps``, non-finite state).
    """
    options = odeint_options(settings)
    if first_step is not None:
        options["first_step"] = first_step
    if norm is not None:
        options["norm"] = norm
    kwargs = {"rtol": settings.rtol, "atol": settings.atol, "method": torchdiffeq_method(settings),
              "options": options}
    try:
        if adjoint_params is not None:
            return td.odeint_adjoint(func, y0, t, adjoint_params=adjoint_params, **adjoint_kwargs(settings),
                                     **kwargs)
        return td.odeint(func, y0, t, **kwargs)
    except AssertionError as exc:
        error = as_solver_error(exc, settings, "forward")
        if error is None:
            raise
        raise error from None


# --------------------------------------------------------------------------- the accepted-step hook


@dataclass(frozen=True)
class AcceptedStep:
    """What the solver knows of one accepted step, for subscribers of :func:`on_accepted_steps`.

    Attributes:
        error: the embedded local error estimate (the state's shape; differentiable in a direct solve).
        error_ratio: the error the step controller compares with 1: ``norm(error / (atol + rtol ·
            max(|y0|, |y1|)))`` (torchdiffeq's ``_compute_error_ratio``).
        dt: the step size.
        norm: the solve's error norm.
    """

    error: torch.Tensor
    error_ratio: torch.Tensor
    dt: torch.Tensor
    norm: Callable


_SUBSCRIBER: contextvars.ContextVar[Callable[[AcceptedStep], None] | None] = contextvars.ContextVar(
    "odenet_accepted_step", default=None)


@contextlib.contextmanager
def on_accepted_steps(callback: Callable[[AcceptedStep], None]) -> Iterator[None]:
    """Inside, the fast RK solvers call ``callback`` with every accepted step of every solve."""
    token = _SUBSCRIBER.set(callback)
    try:
        yield
    finally:
        _SUBSCRIBER.reset(token)


# --------------------------------------------------------------------------- the fast twins


class _LazyInterpolant(list):
    """The 5 interpolation coefficients of a step, computed on first access.

    torchdiffeq builds them after every accepted step but reads them only for the step that
    crosses an output time; as a list they stay usable by its ``_interp_evaluate``.
    """

    def __init__(self, build) -> None:
        super().__init__()
        self._build = build

    def _fill(self) -> None:
        if self._build is not None:
            self.extend(self._build())
            self._build = None

    def __getitem__(self, index):
        self._fill()
        return super().__getitem__(index)

    def __iter__(self):
        self._fill()
        return super().__iter__()

    def __len__(self) -> int:
        self._fill()
        return super().__len__()


class FastRKMixin:
    """Overrides the stage arithmetic of an ``RKAdaptiveStepsizeODESolver`` subclass."""

    method: str  # torchdiffeq's name of the method, set on each fast class

    @property
    def _tab(self) -> Tableau:
        return tableau(self.method)

    def _evaluate(self, t: torch.Tensor, y: torch.Tensor, at_end: bool) -> torch.Tensor:
        return self.func(t, y, perturb=td.Perturb.PREV if at_end else td.Perturb.NONE)

    def _runge_kutta_step(self, y0, f0, t0, dt, t1):
        """One RK step → (y1, f1, y1_error, stages)."""
        return runge_kutta_step(self._evaluate, self._tab, y0, f0, t0, dt, t1)

    def _interp_fit(self, y0, y1, k, dt):
        """Coefficients of the step's interpolating polynomial; ``k`` is the list of stages."""
        dt = dt.type_as(y0)
        y_mid = step_from(y0, dt, k, self._tab.mid)
        return td._interp_fit(y0, y1, y_mid, k[0], k[-1], dt)

    def _before_integrate(self, t):
        if self.step_t is not None or self.jump_t is not None:
            raise ValueError("odenet's fast RK solvers do not take the step_t / jump_t options; use --no-fast-rk")
        super()._before_integrate(t)

    # ----------------------------------------------------------------------------------------
    # torchdiffeq 0.2.5's RKAdaptiveStepsizeODESolver._adaptive_step, unchanged but for the three
    # marked lines (the stage computation, the lazily built interpolant, the accepted-step hook) and
    # without its step_t / jump_t branches (options odenet never sets; _before_integrate refuses them).
    def _adaptive_step(self, rk_state):
        y0, f0, _, t0, dt, interp_coeff = rk_state
        if not torch.isfinite(dt):
            dt = self.min_step
        dt = dt.clamp(self.min_step, self.max_step)
        self.func.callback_step(t0, y0, dt)
        t1 = t0 + dt
        assert t0 + dt > t0, 'underflow in dt {}'.format(dt.item())
        assert torch.isfinite(y0).all(), 'non-finite values in state `y`: {}'.format(y0)

        y1, f1, y1_error, k = self._runge_kutta_step(y0, f0, t0, dt, t1)  # odenet: stage arithmetic

        error_ratio = td._compute_error_ratio(y1_error, self.rtol, self.atol, y0, y1, self.norm)
        accept_step = error_ratio <= 1

        if dt > self.max_step:
            accept_step = False
        if dt <= self.min_step:
            accept_step = True

        if accept_step:
            self.func.callback_accept_step(t0, y0, dt)
            _publish(y1_error, error_ratio, dt, self.norm)  # odenet: the accepted-step hook
            t_next = t1
            y_next = y1
            interp_coeff = _LazyInterpolant(lambda: self._interp_fit(y0, y_next, k, dt))  # odenet: lazy
            f_next = f1
        else:
            self.func.callback_reject_step(t0, y0, dt)
            t_next = t0
            y_next = y0
            f_next = f0
        dt_next = td._optimal_step_size(dt, error_ratio, self.safety, self.ifactor, self.dfactor, self.order)
        dt_next = dt_next.clamp(self.min_step, self.max_step)
        return td._RungeKuttaState(y_next, f_next, t0, t_next, dt_next, interp_coeff)


def _publish(error: torch.Tensor, error_ratio: torch.Tensor, dt: torch.Tensor, norm: Callable) -> None:
    subscriber = _SUBSCRIBER.get()
    if subscriber is not None:
        subscriber(AcceptedStep(error=error, error_ratio=error_ratio, dt=dt, norm=norm))


FAST_METHODS: dict[str, str] = {name: f"odenet-{name}" for name in ADAPTIVE_SOLVERS}


@functools.cache
def method_name(method: str) -> str:
    """The torchdiffeq method name of ``method``'s fast twin, added to torchdiffeq's table on first use."""
    fast = FAST_METHODS[method]
    base = td.BASE_SOLVERS[method]  # every adaptive method is an RKAdaptiveStepsizeODESolver subclass
    td.add_solver(fast, type(f"Fast{base.__name__}", (FastRKMixin, base), {"method": method}))
    return fast
