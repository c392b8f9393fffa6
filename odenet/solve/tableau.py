"""An adaptive Runge–Kutta method as Python numbers, and its stage arithmetic: one step, written once.

Both step controls use :func:`runge_kutta_step`: the host-side one (:mod:`odenet.solve.host`,
torchdiffeq's control, one step size per batch) and the device-side one (:mod:`odenet.solve.control`,
decisions in tensors, one step size per batch or per image). They differ only in how the field is
called, which the caller passes as ``evaluate(t, y, at_end)``.

Why Python numbers: torchdiffeq 0.2.x keeps the stages k_1..k_s in one (..., s) tensor and forms each
combination y0 + Σ_j k_j·(β_ij·dt) as ``torch.sum(k[..., :i+1] * (beta_i * dt), dim=-1)``: a multiply
into an (..., i+1) temporary and a reduction over its last, strided dimension. Measured on 2 CPU cores
(ODE-Net, batch 128, dopri5 at tol 1e-3), those sums and products took 28% of the solve. Here the
stages are a list and each combination is a chain of fused multiply-adds with the tableau's
coefficients as Python numbers (zeros skipped); results agree with torchdiffeq's to rounding
(summation order differs; tests/test_fast_rk.py).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch

from odenet.solve.torchdiffeq_api import BASE_SOLVERS, RKAdaptiveStepsizeODESolver


@dataclass(frozen=True)
class Tableau:
    """A torchdiffeq adaptive Runge–Kutta method as Python floats (no device round trips).

    Attributes:
        method: torchdiffeq's name (``dopri5``, ``bosh3``, ...).
        order: the solver's ``order``; the step-size exponent is 1 / order.
        alpha, beta, c_sol, c_error, mid: torchdiffeq's tableau and interpolation weights.
        fsal: first same as last — the last stage's input is the solution itself.
    """

    method: str
    order: int
    alpha: tuple[float, ...]
    beta: tuple[tuple[float, ...], ...]
    c_sol: tuple[float, ...]
    c_error: tuple[float, ...]
    mid: tuple[float, ...]
    fsal: bool

    @property
    def stages(self) -> int:
        """Field evaluations per step (accepted or rejected alike)."""
        return len(self.alpha)


def rk_methods() -> list[str]:
    """torchdiffeq's adaptive Runge–Kutta methods (the ones a :class:`Tableau` describes)."""
    return sorted(name for name, cls in BASE_SOLVERS.items()
                  if isinstance(cls, type) and issubclass(cls, RKAdaptiveStepsizeODESolver))


@functools.cache
def tableau(method: str) -> Tableau:
    """The tableau of torchdiffeq's solver ``method``, read from its solver class.

    Raises:
        ValueError: ``method`` is not one of torchdiffeq's adaptive Runge–Kutta solvers.
    """
    if method not in rk_methods():
        raise ValueError(f"{method!r} is not an adaptive Runge–Kutta method; valid: {', '.join(rk_methods())}")
    cls = BASE_SOLVERS[method]
    tab = cls.tableau  # the class attribute: CPU float64, no device synchronisation
    c_sol, beta = tab.c_sol.tolist(), tuple(tuple(b.tolist()) for b in tab.beta)
    return Tableau(method=method, order=cls.order, alpha=tuple(tab.alpha.tolist()), beta=beta,
                   c_sol=tuple(c_sol), c_error=tuple(tab.c_error.tolist()), mid=tuple(cls.mid.tolist()),
                   fsal=c_sol[-1] == 0 and tuple(c_sol[:-1]) == beta[-1])


def column(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-sample (B,) value as (B, 1, ..., 1), broadcasting against a (B, ...) state; () stays ()."""
    return v if v.dim() == 0 else v.reshape(v.shape + (1,) * (like.dim() - v.dim()))


def combine(ks: list[torch.Tensor], coefficients: tuple[float, ...]) -> torch.Tensor | None:
    """Σ_j c_j · k_j with Python-number coefficients, zeros skipped; None if all are zero."""
    total = None
    for c, k in zip(coefficients, ks):
        if c == 0.0:
            continue
        total = k * c if total is None else torch.add(total, k, alpha=c)
    return total


def step_from(y0: torch.Tensor, dt: torch.Tensor, ks: list[torch.Tensor], coefficients: tuple[float, ...]):
    """y0 + dt · Σ_j c_j k_j (one fused multiply-add on top of the combination)."""
    total = combine(ks, coefficients)
    return y0 if total is None else torch.addcmul(y0, total, dt)


Evaluate = Callable[[torch.Tensor, torch.Tensor, bool], torch.Tensor]


def runge_kutta_step(evaluate: Evaluate, tab: Tableau, y0: torch.Tensor, f0: torch.Tensor, t0: torch.Tensor,
                     dt: torch.Tensor, t1: torch.Tensor):
    """One step of ``tab`` from (t0, y0, f0 = f(t0, y0)) → (y1, f1, error estimate, stages).

    The arithmetic of torchdiffeq's ``rk_common._runge_kutta_step``: stage times in the state's dtype, a
    stage at the step's end (alpha = 1) evaluated at ``t1`` with ``at_end`` set (torchdiffeq's
    ``Perturb.PREV``: t just below it), the last stage's input as the solution when first-same-as-last.

    Args:
        evaluate: ``evaluate(t, y, at_end)`` → f(t, y).
        t0, dt, t1: shape () (one step size for the batch) or (B,) (one per sample).
    """
    t_dtype = y0.abs().dtype
    t0, dt, t1 = t0.to(t_dtype), dt.to(t_dtype), t1.to(t_dtype)
    dt_col = column(dt, y0)
    ks = [f0]
    yi = y0
    for alpha_i, beta_i in zip(tab.alpha, tab.beta):
        # The stage time before the stage's state: the order in which autograd records them sets the
        # order in which a direct backward pass sums their gradients (and so its rounding).
        at_end = alpha_i == 1.0
        ti = t1 if at_end else t0 + alpha_i * dt
        yi = step_from(y0, dt_col, ks, beta_i)
        ks.append(evaluate(ti, yi, at_end))
    if not tab.fsal:
        yi = step_from(y0, dt_col, ks, tab.c_sol)
    error = combine(ks, tab.c_error)
    y1_error = error * dt_col if error is not None else torch.zeros_like(y0)
    return yi, ks[-1], y1_error, ks
