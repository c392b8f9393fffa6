"""torchdiffeq's adaptive Runge–Kutta solvers with cheaper stage arithmetic: same methods, same step control.

torchdiffeq 0.2.x keeps the stages k_1..k_s in one (..., s) tensor and forms each combination
y0 + Σ_j k_j·(β_ij·dt) as ``torch.sum(k[..., :i+1] * (beta_i * dt), dim=-1)``: a multiply into
an (..., i+1) temporary and a reduction over its last, strided dimension. Measured on 2 CPU
cores (ODE-Net, batch 128, dopri5 at tol 1e-3), those sums and products took 28% of the
solve — as much as half the time of the convolutions. Here the stages are a list, each
combination is a chain of fused multiply-adds with the tableau's coefficients as Python
numbers (zeros skipped), and the interpolation polynomial of a step (20-odd tensor ops) is
only built for the step that is actually interpolated — the one crossing an output time.

Everything else — initial step selection, error norm, accept/reject, step-size update, the
``max_num_steps`` / underflow / non-finite checks and the step callbacks — is torchdiffeq's
own code, copied from ``RKAdaptiveStepsizeODESolver._adaptive_step`` (torchdiffeq 0.2.5) with
only the stage arithmetic replaced. Results agree with torchdiffeq's to floating-point rounding
(summation order differs); see tests/test_fast_rk.py.

The solvers are added to torchdiffeq's solver table as ``odenet-<method>`` (new keys only,
nothing of torchdiffeq is replaced) by :func:`register`, which :func:`method_name` calls the
first time a fast method is asked for — importing this module changes nothing.
"""

from __future__ import annotations

import torch
from torchdiffeq._impl import rk_common
from torchdiffeq._impl.interp import _interp_fit
from torchdiffeq._impl.misc import Perturb, _compute_error_ratio, _optimal_step_size
from torchdiffeq._impl.odeint import SOLVERS

from odenet.models.regularizers import record_step_error
from odenet.models.solvers import ADAPTIVE_SOLVERS


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


def combine(ks: list[torch.Tensor], coefficients: list[float]) -> torch.Tensor | None:
    """Σ_j c_j · k_j with Python-number coefficients, zeros skipped; None if all are zero."""
    total = None
    for c, k in zip(coefficients, ks):
        if c == 0.0:
            continue
        total = k * c if total is None else torch.add(total, k, alpha=c)
    return total


def step_from(y0: torch.Tensor, dt: torch.Tensor, ks: list[torch.Tensor], coefficients: list[float]):
    """y0 + dt · Σ_j c_j k_j (one fused multiply-add on top of the combination)."""
    total = combine(ks, coefficients)
    return y0 if total is None else torch.addcmul(y0, total, dt)


class FastRKMixin:
    """Overrides the stage arithmetic of an ``RKAdaptiveStepsizeODESolver`` subclass."""

    _coefficients: dict  # per class: the tableau as Python floats

    @classmethod
    def _tableau_floats(cls) -> dict:
        if "_coefficients" not in cls.__dict__:
            tableau = cls.tableau  # the class attribute: CPU float64, no device synchronisation
            c_sol = tableau.c_sol.tolist()
            beta = [b.tolist() for b in tableau.beta]
            cls._coefficients = {
                "alpha": tableau.alpha.tolist(), "beta": beta, "c_sol": c_sol,
                "c_error": tableau.c_error.tolist(), "mid": cls.mid.tolist(),
                # First same as last: the last stage's input is the solution itself.
                "fsal": c_sol[-1] == 0 and c_sol[:-1] == beta[-1],
            }
        return cls._coefficients

    def _runge_kutta_step(self, y0, f0, t0, dt, t1):
        """One RK step → (y1, f1, y1_error, stages); the arithmetic of torchdiffeq's ``_runge_kutta_step``."""
        c = self._tableau_floats()
        t_dtype = y0.abs().dtype
        t0, dt, t1 = t0.to(t_dtype), dt.to(t_dtype), t1.to(t_dtype)
        ks = [f0]
        yi = y0
        for alpha_i, beta_i in zip(c["alpha"], c["beta"]):
            if alpha_i == 1.0:
                ti, perturb = t1, Perturb.PREV
            else:
                ti, perturb = t0 + alpha_i * dt, Perturb.NONE
            yi = step_from(y0, dt, ks, beta_i)
            ks.append(self.func(ti, yi, perturb=perturb))
        if not c["fsal"]:
            yi = step_from(y0, dt, ks, c["c_sol"])
        error = combine(ks, c["c_error"])
        y1_error = error * dt if error is not None else torch.zeros_like(y0)
        return yi, ks[-1], y1_error, ks

    def _interp_fit(self, y0, y1, k, dt):
        """Coefficients of the step's interpolating polynomial; ``k`` is the list of stages."""
        dt = dt.type_as(y0)
        y_mid = step_from(y0, dt, k, self._tableau_floats()["mid"])
        return _interp_fit(y0, y1, y_mid, k[0], k[-1], dt)

    # ----------------------------------------------------------------------------------------
    # torchdiffeq 0.2.5's RKAdaptiveStepsizeODESolver._adaptive_step, unchanged but for the three
    # marked lines (the stage computation, the lazily built interpolant, ERNODE's error record).
    def _adaptive_step(self, rk_state):
        y0, f0, _, t0, dt, interp_coeff = rk_state
        if not torch.isfinite(dt):
            dt = self.min_step
        dt = dt.clamp(self.min_step, self.max_step)
        self.func.callback_step(t0, y0, dt)
        t1 = t0 + dt
        assert t0 + dt > t0, 'underflow in dt {}'.format(dt.item())
        assert torch.isfinite(y0).all(), 'non-finite values in state `y`: {}'.format(y0)

        on_step_t = False
        if len(self.step_t):
            next_step_t = self.step_t[self.next_step_index]
            on_step_t = t0 < next_step_t < t0 + dt
            if on_step_t:
                t1 = next_step_t
                dt = t1 - t0

        on_jump_t = False
        if len(self.jump_t):
            next_jump_t = self.jump_t[self.next_jump_index]
            on_jump_t = t0 < next_jump_t < t0 + dt
            if on_jump_t:
                on_step_t = False
                t1 = next_jump_t
                dt = t1 - t0

        y1, f1, y1_error, k = self._runge_kutta_step(y0, f0, t0, dt, t1)  # odenet: stage arithmetic

        error_ratio = _compute_error_ratio(y1_error, self.rtol, self.atol, y0, y1, self.norm)
        accept_step = error_ratio <= 1

        if dt > self.max_step:
            accept_step = False
        if dt <= self.min_step:
            accept_step = True

        if accept_step:
            self.func.callback_accept_step(t0, y0, dt)
            record_step_error(y1_error, dt, self.norm)  # odenet: ERNODE's Σ Eⱼ|Δtⱼ| when a block records it
            t_next = t1
            y_next = y1
            interp_coeff = _LazyInterpolant(lambda: self._interp_fit(y0, y_next, k, dt))  # odenet: lazy
            if on_step_t:
                if self.next_step_index != len(self.step_t) - 1:
                    self.next_step_index += 1
            if on_jump_t:
                if self.next_jump_index != len(self.jump_t) - 1:
                    self.next_jump_index += 1
                f1 = self.func(t_next, y_next, perturb=Perturb.NEXT)
            f_next = f1
        else:
            self.func.callback_reject_step(t0, y0, dt)
            t_next = t0
            y_next = y0
            f_next = f0
        dt_next = _optimal_step_size(dt, error_ratio, self.safety, self.ifactor, self.dfactor, self.order)
        dt_next = dt_next.clamp(self.min_step, self.max_step)
        return rk_common._RungeKuttaState(y_next, f_next, t0, t_next, dt_next, interp_coeff)


FAST_METHODS: dict[str, str] = {name: f"odenet-{name}" for name in ADAPTIVE_SOLVERS}


def register() -> None:
    """Add the fast twin of every adaptive method to torchdiffeq's solver table (idempotent)."""
    for name, fast in FAST_METHODS.items():  # all of them RKAdaptiveStepsizeODESolver subclasses
        if fast not in SOLVERS:
            base = SOLVERS[name]
            SOLVERS[fast] = type(f"Fast{base.__name__}", (FastRKMixin, base), {})


def method_name(method: str) -> str:
    """The torchdiffeq method name of ``method``'s fast twin, registered on first use."""
    register()
    return FAST_METHODS[method]
