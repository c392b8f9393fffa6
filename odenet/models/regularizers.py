"""Regularisers of an ODE block's dynamics: the study's levers for cheaper solves, at their papers' definitions.

* RNODE (Finlay et al. 2020, "How to train your neural ODE", eqs. 5–6): the kinetic energy and the
  Jacobian's Frobenius norm, integrated as extra states beside x. The constants are those of the
  authors' code (cfinlay/ffjord-rnode at 02c6e2c, ``lib/layers/wrappers/cnf_regularization.py``:
  ``quadratic_cost = 0.5*dx.pow(2).mean(dim=-1)``; ``lib/layers/odefunc.py``: ``sqjacnorm =
  e_dzdx.pow(2).mean(dim=1)``), so a λ of their scripts (0.01, 0.01) means the same here:

      R_K = ∫₀ᵀ ½ ‖f(t, x)‖² / D dt        R_J = ∫₀ᵀ ‖εᵀ∇ₓf(t, x)‖² / D dt,

  per sample, then the mean over the batch (their ``torch.mean(rs)``); D is the number of elements
  of x. The Frobenius norm is a Hutchinson estimate, E_ε ‖εᵀ∇ₓf‖² = ‖∇ₓf‖²_F for ε ~ N(0, I), one
  Gaussian probe per solve (one vector-Jacobian product per evaluation). The paper writes the
  integrands without ½ and without /D (λ_paper ∫‖f‖² dt): λ here = 2·D·λ_paper for the kinetic term and
  D·λ_paper for the Jacobian term. TayNODE's RNODE baseline (easy-neural-ode ``--reg_type fin``) has
  mean(f²) without ½: λ here = 2·λ there.
* ERNODE (Pal et al. 2021, "Opening the blackbox", eq. 7): R_E = Σⱼ rⱼ·|Δtⱼ| over the accepted steps
  of the forward solve, rⱼ the step's error ratio — the RMS over the batch's state of the embedded
  error estimate divided by atol + rtol·max(|y₀|, |y₁|), the number the step controller compares with
  1 (torchdiffeq's ``_compute_error_ratio``; OrdinaryDiffEq's ``integrator.EEst``, which the authors'
  code regularises: avik-pal/RegNeuralDE.jl at 345925c, ``experiments/mnist_node.jl``,
  ``save_func(u, t, integrator) = integrator.EEst * integrator.dt``). Accepted steps have rⱼ ≤ 1, so
  0 ≤ R_E ≤ t1. The authors' MNIST code takes the *mean* of those values with one more entry at t0
  (EEst = 1 there): R_code = (Δt₀ + R_E) / (N_accepted + 1); a λ of theirs corresponds to λ here ≈
  λ_code / (N_accepted + 1). It needs odenet's fast RK (whose accepted-step hook,
  :func:`odenet.solve.host.on_accepted_steps`, exposes the ratio) and direct backpropagation (the
  adjoint's forward solve is not differentiated).
* STEER (Ghosh et al. 2020, "STEER: Simple temporal regularization", §3; arnabgho/steer's
  ``odeint_stochastic_end_v3``): the end time of each training solve (one per batch) is drawn from
  U(t1 − b, t1 + b); evaluation integrates to t1.

Step-size control sees x only: the integrals are left out of the error norm, so a regularised
block takes exactly the steps the same block takes without them (torchdiffeq's default mixed
norm would include them and change NFE for reasons unrelated to the dynamics of x; ffjord-rnode
gives them tolerances of 1e20 for the same reason).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from odenet.solve.host import AcceptedStep, on_accepted_steps
from odenet.solve.torchdiffeq_api import _rms_norm


@dataclass(frozen=True)
class Regularization:
    """The weights of the regularisers of one ODE block (0 = off).

    Attributes:
        kinetic: λK of RNODE's kinetic energy.
        jacobian: λJ of RNODE's Jacobian Frobenius norm.
        error: λE of ERNODE's local-error regulariser.
        steer: STEER's half-width b of the training end time's interval (0 < b < t1).
    """

    kinetic: float = 0.0
    jacobian: float = 0.0
    error: float = 0.0
    steer: float = 0.0

    @property
    def integrals(self) -> bool:
        """Whether the solve carries RNODE's integrals as extra states."""
        return self.kinetic > 0 or self.jacobian > 0

    @property
    def active(self) -> bool:
        return self.integrals or self.error > 0 or self.steer > 0


NO_REGULARIZATION = Regularization()
REG_KEYS = ("reg_kinetic", "reg_jacobian", "reg_error")


class IntegralsField(nn.Module):
    """f(t, x) with RNODE's integrands: state (x, kinetic, jacobian) → (f, ½‖f‖²/D, ‖εᵀ∇ₓf‖²/D), per sample.

    ``probe`` (ε, the shape of x) must be set before each solve when ``jacobian`` is on; the
    adjoint's backward solve reuses it, so both passes integrate the same estimate.
    """

    def __init__(self, func: nn.Module, jacobian: bool) -> None:
        super().__init__()
        self.func = func
        self.jacobian = jacobian
        self.probe: torch.Tensor | None = None
        # torchdiffeq finds step callbacks by name on the function it integrates: pass the inner one's on.
        for name in dir(func):
            if name.startswith("callback_"):
                setattr(self, name, getattr(func, name))

    def forward(self, t: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        x = state[0]  # (B, ...)
        keep_graph = torch.is_grad_enabled()  # False in the adjoint's forward solve: values only
        if not self.jacobian:
            f = self.func(t, x)
            return f, 0.5 * _mean_square(f), torch.zeros_like(state[2])
        values_only = hasattr(self.func, "values_only") and not keep_graph
        if values_only:  # the graph below is for the vjp only: no evaluation of it is backpropagated
            self.func.values_only = True
        try:
            f, vjp = self._field_and_vjp(t, x, keep_graph)
        finally:
            if values_only:
                self.func.values_only = False
        return f, 0.5 * _mean_square(f), _mean_square(vjp)

    def _field_and_vjp(self, t: torch.Tensor, x: torch.Tensor, keep_graph: bool):
        with torch.enable_grad():
            # Without an outer graph (the adjoint's forward solve, evaluation) x may still say
            # requires_grad (a view of the adjoint's input made under no_grad) without being on any
            # graph; differentiate with respect to a fresh leaf then.
            if not (keep_graph and x.requires_grad):
                x = x.detach().requires_grad_(True)
            f = self.func(t, x)
            (vjp,) = torch.autograd.grad(f, x, self.probe, create_graph=keep_graph)  # εᵀ ∇ₓf, shape of x
        if not keep_graph:
            f, vjp = f.detach(), vjp.detach()
        return f, vjp


def _mean_square(v: torch.Tensor) -> torch.Tensor:
    return v.pow(2).flatten(1).mean(1)  # (B,)


def state_norm(state: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """torchdiffeq's RMS norm of x alone: the error norm of a solve that carries RNODE's integrals."""
    return _rms_norm(state[0])


def initial_state(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    zeros = x.new_zeros(x.shape[0])
    return x, zeros, zeros.clone()


def steer_end_time(t1: float, b: float, like: torch.Tensor) -> torch.Tensor:
    """A training solve's end time, U(t1 − b, t1 + b) (STEER), from the global torch RNG (so resumes replay it)."""
    u = torch.rand((), dtype=like.dtype).to(like.device)
    return t1 + b * (2 * u - 1)


# --------------------------------------------------------------------------- ERNODE's error sum


@contextlib.contextmanager
def recording_step_errors() -> Iterator[list[torch.Tensor]]:
    """Inside, every accepted step of odenet's fast RK solvers appends its rⱼ·|Δtⱼ| (ERNODE) to the yielded list."""
    sink: list[torch.Tensor] = []

    def record(step: AcceptedStep) -> None:
        sink.append(step.error_ratio * step.dt.abs())

    with on_accepted_steps(record):
        yield sink
