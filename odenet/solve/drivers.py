"""Drivers of the device-side step control (:mod:`odenet.solve.control`): a solve as a :class:`Problem`,
its result as one :class:`Solution`, its failures found by one :func:`host_check`.

* :func:`solve_on_device` — batch-shared control: the same accept/reject sequence and step sizes as
  torchdiffeq's solve, with the host checking for the end (and failures) only every k steps.
* :func:`solve_per_sample` — one error norm per image: each image gets the step sizes, accept/reject
  decisions and NFE that a batch-of-1 solve of it takes (torchdiffeq's path, including the 2
  evaluations of ``_select_initial_step``), while the field is still called once per stage on all
  images that are still running, with a time per image. Finished images leave the batch
  (compaction), so late rounds cost only the images still being solved.

The CUDA-graph drivers (:mod:`odenet.solve.graphs`) return the same :class:`Solution`.

Exactness of per-image solves: in float64, and in float32 for a batch of one, counts and outputs
equal a batch-of-1 solve's bit for bit. In float32 a batched convolution rounds differently from a
batch-of-1 one (other kernel blocking; GroupNorm and the norms here are batch-invariant), so a
borderline accept/reject can flip: none in 16 images × 3 tolerances with dopri5 on a test field,
some with dopri8 at tol 1e-5, where rounding dominates the error estimate. The field must accept a
per-sample ``t`` broadcasting against the state, shaped (B, 1, ..., 1).

Why not torchode 1.0.1 (it has per-sample t and dt, and per-sample ``n_steps``/``n_accepted``): it
does not reproduce torchdiffeq's per-sample counts, and cannot be configured to. It clips every step
to end exactly at t1 (torchdiffeq steps past t1 and interpolates back); its ``IntegralController``
accepts ``ratio < 1`` (torchdiffeq: ``<= 1``), lets accepted steps shrink and bounds the ratio below
by 1e-38; its initial step caps h0 at t1 - t0 and its RMS norm rounds differently; and it evaluates
the field on every image at every step (finished images are masked, not dropped). Measured (float64,
dopri5, each image alone in both libraries): on dx/dt = cos(40 t)·x·w over [0, 2] (rejections
happen), 0 of 12 image × tolerance solves (tol 1e-3…1e-6) had torchdiffeq's (accepted, rejected,
NFE), e.g. (14, 6, 122) vs torchode's (14, 4, 110); on a width-8 ODE-Net field (no rejections) the
counts agreed for 24 of 24 but outputs differed by up to 0.36 at tol 1e-1 (the clipped last step).
Here they agree exactly (tests/test_per_sample.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from odenet.solve.control import FieldCalls, RKState, StepControl, solution_at, start, step
from odenet.solve.settings import SolverError, SolverSettings
from odenet.solve.tableau import Tableau, tableau


@dataclass
class StepRecord:
    """One attempted step: where it started, its size, whether it was kept."""

    t: float
    dt: float
    accepted: bool


@dataclass
class Solution:
    """What every device-side driver returns.

    Attributes:
        y: the states at the end (B, ...).
        nfe_forward: evaluations torchdiffeq makes for the solve, 2 + stages × steps before the end
            (what an ODE block's counter reads): an int for a batch-shared solve, (B,) per image.
        steps_accepted, steps_rejected: likewise an int, or (B,) per image.
        field_calls: batched field calls actually computed (including masked steps after the end).
        rows_evaluated: images evaluated summed over those calls (the real work when batches shrink).
        host_checks: how many times the host waited for the device.
        trace: the attempted steps before the end, when asked for (batch-shared solves).
    """

    y: torch.Tensor
    nfe_forward: int | torch.Tensor
    steps_accepted: int | torch.Tensor
    steps_rejected: int | torch.Tensor
    field_calls: int
    rows_evaluated: int
    host_checks: int
    trace: list[StepRecord] | None = None


@dataclass
class Problem:
    """A solve of ``y0`` over [t0, t_end] in the pieces :func:`~odenet.solve.control.start` and
    :func:`~odenet.solve.control.step` take."""

    field: FieldCalls
    tableau: Tableau
    control: StepControl
    t0: torch.Tensor  # float64, () or (B,)
    t_end: torch.Tensor  # float64 ()
    settings: SolverSettings

    @classmethod
    def create(cls, func: Callable, settings: SolverSettings, y0: torch.Tensor, t: torch.Tensor, *,
               per_sample: bool, autocast: torch.dtype | None = None) -> Problem:
        """The solve of ``y0`` by ``func`` over ``t = [t0, t_end]`` (a (2,) tensor) with ``settings``.

        Raises:
            ValueError: the solver is not adaptive, or a per-sample state has no batch dimension.
        """
        tab = tableau(settings.method)
        if per_sample and y0.dim() < 2:
            raise ValueError(f"per-sample solving needs a (B, ...) state, got shape {tuple(y0.shape)}")
        control = StepControl.create(settings.rtol, settings.atol, tab.order, y0, per_sample=per_sample,
                                     max_num_steps=settings.max_num_steps)
        t = t.to(control.rtol.dtype)  # odeint: the times in the solver's time dtype
        t0 = t[0].expand(y0.shape[0]).clone() if per_sample else t[0]
        return cls(FieldCalls(func, autocast), tab, control, t0, t[1], settings)

    def start(self, y0: torch.Tensor) -> RKState:
        return start(self.field, self.tableau, self.control, y0, self.t0, self.t_end)

    def step(self, s: RKState) -> RKState:
        return step(self.field, self.tableau, self.control, s, self.t_end)

    def nfe(self, steps):
        """Evaluations torchdiffeq counts for ``steps`` attempted steps (int or (B,))."""
        return 2 + self.tableau.stages * steps


def host_check(s: RKState, settings: SolverSettings, rows: torch.Tensor | None = None) -> int:
    """The drivers' one host synchronisation: how many solves are done.

    Raises:
        SolverError: a solve failed as torchdiffeq's would; per image, the message names the images
            (``rows``: each state row's image in the batch; default the rows themselves).
    """
    done, failure = torch.stack([s.done.sum(), s.failure.max()]).tolist()
    if not failure:
        return done
    if s.failure.dim() == 0:
        raise SolverError.from_code(failure, settings)
    failed = s.failure != 0
    images = (rows if rows is not None else torch.arange(len(failed), device=failed.device))[failed]
    raise SolverError.from_code(int(s.failure[failed][0]), settings, images.tolist())


@torch.no_grad()
def solve_on_device(problem: Problem, y0: torch.Tensor, *, check_every: int = 8, trace: bool = False) -> Solution:
    """Solve with batch-shared step control held on the device.

    Args:
        problem: a batch-shared :class:`Problem` (``per_sample=False``).
        y0: the initial state (B, ...).
        check_every: steps between host checks; steps past the end are masked no-ops.
        trace: record each attempted step (syncs once at the end).

    Raises:
        SolverError: the solve failed as torchdiffeq's would.
    """
    if check_every < 1:
        raise ValueError(f"check_every must be >= 1, got {check_every}")
    s = problem.start(y0)
    records, checks = [], 0
    while True:
        for _ in range(check_every):
            before, s = s, problem.step(s)
            if trace:
                records.append((before, s))
        checks += 1
        if host_check(s, problem.settings):
            break
    return Solution(y=solution_at(s, problem.t_end), nfe_forward=problem.nfe(int(s.steps)),
                    steps_accepted=int(s.accepted), steps_rejected=int(s.rejected),
                    field_calls=problem.field.calls, rows_evaluated=problem.field.rows, host_checks=checks,
                    trace=_records(records) if trace else None)


def _records(pairs: list[tuple[RKState, RKState]]) -> list[StepRecord]:
    """The steps taken before the end, as torchdiffeq's step callbacks see them (t0, dt, accepted)."""
    return [StepRecord(t=float(before.t), dt=float(torch.where(torch.isfinite(before.dt), before.dt, 0.0)),
                       accepted=bool(after.accepted > before.accepted))
            for before, after in pairs if not bool(before.done)]


@torch.no_grad()
def solve_per_sample(problem: Problem, y0: torch.Tensor) -> Solution:
    """Solve each image of ``y0`` with its own adaptive step control (a per-sample :class:`Problem`).

    Returns (B,) counts; ``rows_evaluated`` equals ``nfe_forward.sum()``, since a finished image is
    never evaluated again, and ``host_checks`` is the number of rounds (steps of the batch).

    Raises:
        SolverError: an image's solve failed as its batch-of-1 solve would (max_num_steps, step
            underflow, non-finite state); the message names the images.
    """
    state = problem.start(y0)
    rows = torch.arange(y0.shape[0], device=y0.device)  # each active row's image in y0
    y = torch.empty_like(y0)
    steps = torch.zeros(y0.shape[0], dtype=torch.int64, device=y0.device)
    accepted, rejected = torch.zeros_like(steps), torch.zeros_like(steps)
    rounds = 0
    while rows.numel():
        state = problem.step(state)
        rounds += 1
        if host_check(state, problem.settings, rows):  # the round's one host check
            finished = state.done.nonzero().squeeze(1)
            ended = state.select(finished)
            images = rows[finished]
            y[images] = solution_at(ended, problem.t_end)
            steps[images], accepted[images], rejected[images] = ended.steps, ended.accepted, ended.rejected
            running = (~state.done).nonzero().squeeze(1)
            state, rows = state.select(running), rows[running]
    return Solution(y=y, nfe_forward=problem.nfe(steps), steps_accepted=accepted, steps_rejected=rejected,
                    field_calls=problem.field.calls, rows_evaluated=problem.field.rows, host_checks=rounds)
