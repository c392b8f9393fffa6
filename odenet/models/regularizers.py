"""Regularisers of an ODE block's dynamics: the study's levers for cheaper solves.

* RNODE (Finlay et al. 2020, "How to train your neural ODE", eqs. 5–6): the kinetic energy
  λK ∫₀ᵀ ‖f(t, x)‖² dt and the Jacobian norm λJ ∫₀ᵀ ‖∇ₓf(t, x)‖²_F dt, integrated as extra states
  beside x (as cfinlay/ffjord-rnode's ``RegularizedODEfunc`` does). The Frobenius norm is a
  Hutchinson estimate, E_ε ‖εᵀ∇ₓf‖² = ‖∇ₓf‖²_F for ε ~ N(0, I), with one Gaussian probe per solve
  (one vector-Jacobian product per evaluation). As in ffjord-rnode's code, both integrands are
  means over the state's elements (‖·‖² / D), so λ does not depend on the width of the state;
  the reported values are means over the batch.
* ERNODE (Pal et al. 2021, "Opening the blackbox", eq. 7): λE Σⱼ Eⱼ·|Δtⱼ| over the accepted steps
  of the forward solve, Eⱼ the RMS norm of step j's embedded local error estimate — the same
  estimate the step-size controller reads. It needs odenet's fast RK (whose accepted-step hook,
  :func:`odenet.solve.host.on_accepted_steps`, exposes the estimate)
  and direct backpropagation (the adjoint's forward solve is not differentiated).
* STEER (Ghosh et al. 2020, "STEER: Simple temporal regularization", §3): the end time of each
  training solve is drawn from U(t1 − b, t1 + b); evaluation integrates to t1.

Step-size control sees x only: the integrals are left out of the error norm, so a regularised
block takes exactly the steps the same block takes without them (torchdiffeq's default mixed
norm would include them and change NFE for reasons unrelated to the dynamics of x).
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
    """f(t, x) with RNODE's integrands: state (x, kinetic, jacobian) → (f, ‖f‖²/D, ‖εᵀ∇ₓf‖²/D), per sample.

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
            return f, _mean_square(f), torch.zeros_like(state[2])
        values_only = hasattr(self.func, "values_only") and not keep_graph
        if values_only:  # the graph below is for the vjp only: no evaluation of it is backpropagated
            self.func.values_only = True
        try:
            f, vjp = self._field_and_vjp(t, x, keep_graph)
        finally:
            if values_only:
                self.func.values_only = False
        return f, _mean_square(f), _mean_square(vjp)

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
    """Inside, every accepted step of odenet's fast RK solvers appends its Eⱼ·|Δtⱼ| to the yielded list."""
    sink: list[torch.Tensor] = []

    def record(step: AcceptedStep) -> None:
        sink.append(step.norm(step.error) * step.dt.abs())

    with on_accepted_steps(record):
        yield sink
