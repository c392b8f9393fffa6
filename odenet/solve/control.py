"""Adaptive Runge–Kutta step control held in tensors: no host synchronisation inside a step.

torchdiffeq's ``RKAdaptiveStepsizeODESolver._adaptive_step`` decides in Python: ``assert t0 + dt > t0``,
``if accept_step`` and ``while next_t > rk_state.t1`` each read a device value on the host, so on a
GPU every step waits for the previous one to finish. Here the same decisions are tensors: a step is
computed for every row, and ``torch.where`` keeps or discards it. A solve can then run k steps
between host checks; a step taken after the solve has finished changes nothing (it is masked).

One rule, two shapes. The step control is written once, for a time ``t`` and step size ``dt`` of
shape ``()`` — one error norm over the whole batch, exactly torchdiffeq's control — or of shape
``(B,)`` — one norm per sample, each image controlled as if it were solved alone. The drivers that
run it (batch-shared, per image, CUDA graphs) are in :mod:`odenet.solve.drivers` and
:mod:`odenet.solve.graphs`. The formulas are torchdiffeq 0.2.5's, named where they are mirrored:

* start: ``RKAdaptiveStepsizeODESolver._before_integrate`` — f(t0, y0) then
  ``_select_initial_step`` (one more evaluation), with its two ``if`` branches as ``torch.where``;
* step: ``_adaptive_step`` with the stage arithmetic of :mod:`odenet.solve.tableau` (shared with the
  host-side solver), ``_compute_error_ratio`` (called as is), ``accept = ratio <= 1`` and
  ``_optimal_step_size`` with its branches as ``torch.where``;
* failures: ``_advance``'s ``max_num_steps`` check, the underflow and non-finite-state checks,
  recorded as codes (:data:`odenet.solve.settings.FAILURE_REASONS`) and raised at the next host check;
* output: the step that crossed t1 is interpolated there (``_interp_fit``, called as is, and
  ``_interp_evaluate``, mirrored without its assertion because that assertion syncs).

The time-like values (t, dt) are float64 and the field sees ``t`` in the state's dtype, nudged one
float below the step's end for stages at its end (``Perturb.PREV``), as torchdiffeq does.
``step_t``/``jump_t``, ``min_step``/``max_step`` and ``first_step`` are not supported: odenet never
sets them. NFE of a solve is ``2 + stages × steps`` (accepted and rejected steps cost the same), and
:class:`FieldCalls` counts the evaluations actually computed, which with masking includes the no-op
steps after the end.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch

from odenet.solve.settings import MAX_STEPS, NO_FAILURE, NON_FINITE, UNDERFLOW
from odenet.solve.tableau import Tableau, column, runge_kutta_step, step_from
from odenet.solve.torchdiffeq_api import _compute_error_ratio, _interp_fit, _rms_norm

# --------------------------------------------------------------------------- the control


@dataclass(frozen=True)
class StepControl:
    """Tolerances and torchdiffeq's step-size constants, as tensors on the state's device.

    Made once per solve: creating tensors inside a step would copy from the host (and is not
    allowed while a CUDA graph is captured).

    Attributes:
        per_sample: one error norm per sample (dt of shape (B,)) instead of one over the batch.
    """

    rtol: torch.Tensor
    atol: torch.Tensor
    safety: torch.Tensor
    ifactor: torch.Tensor
    dfactor: torch.Tensor
    one: torch.Tensor
    exponent: torch.Tensor
    tiny: torch.Tensor  # torchdiffeq's 1e-6 fallback step in _select_initial_step, in the state's dtype
    max_num_steps: int
    order: int
    per_sample: bool

    @classmethod
    def create(cls, rtol: float, atol: float, order: int, like: torch.Tensor, *, per_sample: bool,
               max_num_steps: int | None = None) -> StepControl:
        """Constants of RKAdaptiveStepsizeODESolver.__init__ (safety 0.9, ifactor 10, dfactor 0.2)."""
        t_dtype = torch.promote_types(torch.float64, like.abs().dtype)  # torchdiffeq's time dtype
        as_t = functools.partial(torch.as_tensor, dtype=t_dtype, device=like.device)
        return cls(rtol=as_t(rtol), atol=as_t(atol), safety=as_t(0.9), ifactor=as_t(10.0), dfactor=as_t(0.2),
                   one=torch.ones((), dtype=t_dtype, device=like.device),
                   exponent=torch.tensor(order, dtype=t_dtype, device=like.device).reciprocal(),
                   tiny=torch.tensor(1e-6, dtype=like.dtype, device=like.device),
                   max_num_steps=2 ** 31 - 1 if max_num_steps is None else max_num_steps,
                   order=order, per_sample=per_sample)

    def norm(self, x: torch.Tensor) -> torch.Tensor:
        """torchdiffeq's ``_rms_norm``: over the whole batch, or over each sample's elements."""
        if not self.per_sample:
            return _rms_norm(x)
        return x.abs().pow(2).flatten(1).mean(1).sqrt()  # (B,): _rms_norm of each sample

    def all_finite(self, x: torch.Tensor) -> torch.Tensor:
        return torch.isfinite(x).flatten(1).all(1) if self.per_sample else torch.isfinite(x).all()


# --------------------------------------------------------------------------- the field's calls


class FieldCalls:
    """Calls an ODE field as torchdiffeq's ``_PerturbFunc`` does, and counts the calls.

    Attributes:
        calls: field evaluations computed (one per batched call).
        rows: samples evaluated (the state's first dim), summed over calls: the real work when
            per-sample batches shrink.
    """

    def __init__(self, func: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 autocast: torch.dtype | None = None) -> None:
        self.func = func
        self.autocast = autocast
        self.calls = 0
        self.rows = 0

    def __call__(self, t: torch.Tensor, y: torch.Tensor, before: bool = False) -> torch.Tensor:
        """f(t, y); ``before``: at the float just below t (torchdiffeq's ``Perturb.PREV``)."""
        self.calls += 1
        self.rows += y.shape[0]
        t = t.to(y.abs().dtype)  # _PerturbFunc: the field sees t in the state's dtype
        if before:
            t = torch.nextafter(t, t - 1)
        t = column(t, y)  # (B, 1, ..., 1) per sample, or a scalar
        if self.autocast is None:
            return self.func(t, y)
        # As ODEBlock's counted field: the field in low precision, the solver's arithmetic in full.
        # No weight-cast cache: it is cleared when this region exits anyway, and a cached cast
        # would be stale memory inside a captured CUDA graph.
        with torch.autocast(y.device.type, dtype=self.autocast, cache_enabled=False):
            return self.func(t, y).to(y.dtype)


# --------------------------------------------------------------------------- the state


@dataclass
class RKState:
    """A batch of solves between steps; every field is a tensor whose first dim is the batch
    when step control is per sample (shape (B,) for the scalars), shape () otherwise.

    Attributes:
        y, f: the state at ``t`` and the field there (B, ...).
        t, dt: time reached and next step size (float64).
        done: ``t`` has reached the end; further steps change nothing.
        failure: a failure code of :data:`odenet.solve.settings.FAILURE_REASONS`, or NO_FAILURE.
        steps, accepted, rejected: steps attempted / accepted / rejected while not done.
        seg_t0, seg_dt, seg_y0, seg_f0, seg_ymid: the step that crossed the end (its
            interpolation data; its end is ``t``, ``y``, ``f``).
    """

    y: torch.Tensor
    f: torch.Tensor
    t: torch.Tensor
    dt: torch.Tensor
    done: torch.Tensor
    failure: torch.Tensor
    steps: torch.Tensor
    accepted: torch.Tensor
    rejected: torch.Tensor
    seg_t0: torch.Tensor
    seg_dt: torch.Tensor
    seg_y0: torch.Tensor
    seg_f0: torch.Tensor
    seg_ymid: torch.Tensor

    def select(self, index: torch.Tensor) -> RKState:
        """The solves at ``index`` (per-sample state only)."""
        return RKState(**{f.name: getattr(self, f.name)[index] for f in dataclasses.fields(self)})

    def copy_(self, other: RKState) -> None:
        """Overwrite in place (a CUDA graph's static state)."""
        for f in dataclasses.fields(self):
            getattr(self, f.name).copy_(getattr(other, f.name))


def _first_failure(failure: torch.Tensor, happened: torch.Tensor, code: int) -> torch.Tensor:
    return torch.where((failure == NO_FAILURE) & happened, code, failure)


def start(field: FieldCalls, tab: Tableau, control: StepControl, y0: torch.Tensor, t0: torch.Tensor,
          t_end: torch.Tensor) -> RKState:
    """f(t0, y0) and the first step size: ``_before_integrate`` + ``_select_initial_step`` (2 NFE).

    Args:
        t0: float64, shape () for batch-shared control or (B,) per sample.
        t_end: float64 scalar, the end of the solve.
    """
    f0 = field(t0, y0)
    dt = _select_initial_step(field, control, t0, y0, f0, tab.order - 1)
    zero = torch.zeros_like(t0, dtype=torch.int64)
    return RKState(y=y0, f=f0, t=t0, dt=dt, done=~(t_end > t0), failure=zero.clone(), steps=zero.clone(),
                   accepted=zero.clone(), rejected=zero.clone(), seg_t0=t0, seg_dt=torch.zeros_like(t0),
                   seg_y0=y0, seg_f0=f0, seg_ymid=y0)


def _select_initial_step(field: FieldCalls, c: StepControl, t0: torch.Tensor, y0: torch.Tensor, f0: torch.Tensor,
                         order: int) -> torch.Tensor:
    """torchdiffeq's ``_select_initial_step`` (Hairer, Nørsett & Wanner, Sec. II.4) with its
    ``if`` branches as ``torch.where``, in the same dtypes: d0, d1, h0 in the state's dtype."""
    scale = c.atol + torch.abs(y0) * c.rtol
    d0 = c.norm(y0 / scale).abs()
    d1 = c.norm(f0 / scale).abs()
    h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), c.tiny, 0.01 * d0 / d1).abs()
    y1 = y0 + column(h0, y0) * f0
    f1 = field(t0 + h0, y1)  # t0 float64 + h0 float32 → float64, as in torchdiffeq
    d2 = torch.abs(c.norm((f1 - f0) / scale) / h0)
    d_max = torch.where(d2 > d1, d2, d1)  # Python's max(d1, d2): d1 unless d2 > d1
    h1 = torch.where((d1 <= 1e-15) & (d2 <= 1e-15), torch.max(c.tiny, h0 * 1e-3),
                     (0.01 / d_max) ** (1. / float(order + 1))).abs()
    return torch.min(100 * h0, h1).to(t0.dtype)


def _optimal_step_size(c: StepControl, dt: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """torchdiffeq's ``_optimal_step_size`` with its branches as ``torch.where``: grow by at most
    ``ifactor``; an accepted step (ratio < 1) never shrinks, a rejected one by at most ``dfactor``."""
    dfactor = torch.where(ratio < 1, c.one, c.dfactor)
    r = ratio.type_as(dt)
    factor = torch.min(c.ifactor, torch.max(c.safety / r ** c.exponent, dfactor))
    return torch.where(ratio == 0, dt * c.ifactor, dt * factor)


def step(field: FieldCalls, tab: Tableau, control: StepControl, s: RKState, t_end: torch.Tensor) -> RKState:
    """One adaptive step of every solve that is not done; ``_adaptive_step`` without host syncs."""
    active = ~s.done
    # _advance: `assert n_steps < max_num_steps` before each step.
    failure = _first_failure(s.failure, active & (s.steps >= control.max_num_steps), MAX_STEPS)
    dt = torch.where(torch.isfinite(s.dt), s.dt, 0.0)  # `if not isfinite(dt): dt = min_step` (0)
    t1 = s.t + dt
    failure = _first_failure(failure, active & ~(t1 > s.t), UNDERFLOW)
    failure = _first_failure(failure, active & ~control.all_finite(s.y), NON_FINITE)

    y1, f1, y1_error, ks = runge_kutta_step(field, tab, s.y, s.f, s.t, dt, t1)
    ratio = _compute_error_ratio(y1_error, control.rtol, control.atol, s.y, y1, control.norm)
    good = ratio <= 1
    accept, reject = active & good, active & ~good
    crossed = accept & (t1 >= t_end)  # _advance's loop `while next_t > t1` ends with this step

    keep = column(accept, s.y)
    cross = column(crossed, s.y)
    dt_state = dt.to(s.y.dtype)
    return RKState(
        y=torch.where(keep, y1, s.y), f=torch.where(keep, f1, s.f), t=torch.where(accept, t1, s.t),
        dt=torch.where(active, _optimal_step_size(control, dt, ratio), s.dt),
        done=s.done | crossed, failure=failure,
        steps=s.steps + active, accepted=s.accepted + accept, rejected=s.rejected + reject,
        seg_t0=torch.where(crossed, s.t, s.seg_t0), seg_dt=torch.where(crossed, dt, s.seg_dt),
        seg_y0=torch.where(cross, s.y, s.seg_y0), seg_f0=torch.where(cross, s.f, s.seg_f0),
        seg_ymid=torch.where(cross, step_from(s.y, column(dt_state, s.y), ks, tab.mid), s.seg_ymid),
    )


def solution_at(s: RKState, t_end: torch.Tensor) -> torch.Tensor:
    """y(t_end) from the step that crossed it: ``_interp_fit`` + ``_interp_evaluate``."""
    dt = column(s.seg_dt.type_as(s.y), s.y)
    coefficients = _interp_fit(s.seg_y0, s.y, s.seg_ymid, s.seg_f0, s.f, dt)
    x = column(((t_end - s.seg_t0) / (s.t - s.seg_t0)).to(s.y.dtype), s.y)
    total = coefficients[0] + x * coefficients[1]
    x_power = x
    for coefficient in coefficients[2:]:
        x_power = x_power * x
        total = total + x_power * coefficient
    return torch.where(column(s.seg_dt > 0, s.y), total, s.y)  # a zero-length solve: y0
