"""Per-sample adaptive solving: each image integrated with its own step-size control, batched.

An adaptive solver steps a batch together under one error norm, so at evaluation the hardest
image sets every image's cost. Here each image gets the step sizes, accept/reject decisions and
NFE that a batch-of-1 solve of it through :class:`odenet.models.ODEBlock` would take (same
:class:`~odenet.models.SolverSettings`, torchdiffeq's path incl. the 2 evaluations of
``_select_initial_step``), while the field is still called once per stage on all images that are
still running, with a time per image. Finished images leave the batch (compaction), so late rounds
cost only the images still being solved. The step rule is :mod:`odenet.models.device_rk`'s, with
a per-sample norm (``dt`` of shape (B,)); this module only drives it.

The field must accept a per-sample ``t`` broadcasting against the state, shaped (B, 1, ..., 1):
:class:`odenet.models.layers.ConvODEField` does (``torch.addcmul(conv, t, bias_map)``).

Exactness: in float64, and in float32 for a batch of one, counts and outputs equal a batch-of-1
ODEBlock solve's bit for bit. In float32 a batched convolution rounds differently from a
batch-of-1 one (other kernel blocking; GroupNorm and the norms here are batch-invariant), so a
borderline accept/reject can flip: none in 16 images × 3 tolerances with dopri5 on a test field,
some with dopri8 at tol 1e-5, where rounding dominates the error estimate.

Why not torchode 1.0.1 (it has per-sample t and dt, and per-sample ``n_steps``/``n_accepted``):
it does not reproduce torchdiffeq's per-sample counts, and cannot be configured to.

* It clips every step to end exactly at t1 (``AutoDiffAdjoint``: ``dt = clamp(dt, t_min - t,
  t_max - t)``, in the solver loop, not the controller); torchdiffeq steps past t1 and
  interpolates back.
* Its ``IntegralController`` accepts ``ratio < 1`` (torchdiffeq: ``<= 1``), lets accepted steps
  shrink (factor always clamped to [0.2, 10]; torchdiffeq's ``_optimal_step_size`` uses
  dfactor = 1 below ratio 1), and bounds the ratio below by 1e-38.
* Its initial step caps h0 at t1 - t0, its RMS norm is ``vector_norm(y / sqrt(n))`` (another
  rounding), and it wants a (B, features) state.
* It evaluates the field on every image at every step (finished images are masked, not dropped),
  so a batch costs the hardest image's NFE in compute, whatever the per-sample counters say.

Measured (float64, dopri5, each image alone in both libraries): on dx/dt = cos(40 t)·x·w over
[0, 2] (rejections happen), 0 of 12 image × tolerance solves (tol 1e-3…1e-6) had torchdiffeq's
(accepted, rejected, NFE), e.g. (14, 6, 122) vs torchode's (14, 4, 110); on a width-8 ODE-Net
field (no rejections) the counts agreed for 24 of 24 but outputs differed by up to 0.36 at
tol 1e-1 (the clipped last step). Here they agree exactly (tests/test_per_sample.py).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from odenet.models.device_rk import failure_message, solution_at, start, step
from odenet.models.device_solve import block_problem
from odenet.models.ode import ode_blocks
from odenet.models.solvers import SolverError


@dataclass
class PerSampleSolution:
    """What :func:`solve_per_sample` returns.

    Attributes:
        y: the states at t1 (B, ...).
        nfe_forward: (B,) evaluations of each image, as a batch-of-1 ODEBlock solve counts them.
        steps_accepted, steps_rejected: (B,) each image's steps.
        field_calls: batched field calls made (one per stage per round, plus 2 to start).
        rows_evaluated: images evaluated summed over those calls; equals ``nfe_forward.sum()``,
            since a finished image is never evaluated again.
        rounds: steps taken by the batch, i.e. host checks.
    """

    y: torch.Tensor
    nfe_forward: torch.Tensor
    steps_accepted: torch.Tensor
    steps_rejected: torch.Tensor
    field_calls: int
    rows_evaluated: int
    rounds: int


@torch.no_grad()
def solve_per_sample(block: nn.Module, x: torch.Tensor) -> PerSampleSolution:
    """Solve an ODEBlock's problem for each image of ``x`` with its own adaptive step control.

    The block's own counters (``read_nfe``) are left untouched: the counts come back as data.

    Args:
        block: an :class:`odenet.models.ODEBlock` with an adaptive solver (``dopri5``, ``bosh3``,
            ``adaptive_heun``, ``fehlberg2``, ``dopri8``), whose field takes a per-sample t.
        x: the initial states (B, ...).

    Raises:
        ValueError: the solver is fixed-grid, or ``x`` has no batch dimension.
        odenet.models.solvers.SolverError: an image's solve failed as its batch-of-1 solve would
            (max_num_steps, step underflow, non-finite state); the message names the images.
    """
    field, tab, control, t0, t_end = block_problem(block, x, per_sample=True)
    state = start(field, tab, control, x, t0, t_end)
    rows = torch.arange(x.shape[0], device=x.device)  # each active row's image in x
    y = torch.empty_like(x)
    steps = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
    accepted, rejected = torch.zeros_like(steps), torch.zeros_like(steps)
    rounds = 0
    while rows.numel():
        state = step(field, tab, control, state, t_end)
        rounds += 1
        # The round's one host check: how many images finished, and did any fail.
        n_done, n_failed = torch.stack([state.done.sum(), (state.failure != 0).sum()]).tolist()
        if n_failed:
            _raise_failure(block, state, rows)
        if n_done:
            finished = state.done.nonzero().squeeze(1)
            ended = state.select(finished)
            images = rows[finished]
            y[images] = solution_at(ended, t_end)
            steps[images], accepted[images], rejected[images] = ended.steps, ended.accepted, ended.rejected
            running = (~state.done).nonzero().squeeze(1)
            state, rows = state.select(running), rows[running]
    return PerSampleSolution(y=y, nfe_forward=2 + tab.stages * steps, steps_accepted=accepted,
                             steps_rejected=rejected, field_calls=field.calls, rows_evaluated=field.rows,
                             rounds=rounds)


def _raise_failure(block: nn.Module, state, rows: torch.Tensor) -> None:
    failed = state.failure != 0
    code = int(state.failure[failed][0])
    images = rows[failed].tolist()
    raise SolverError(failure_message(code, images), block.solver, "forward")


class PerSampleBlock(nn.Module):
    """Stands in for an ODE block: the same problem solved per image; keeps the last solve's counts."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block
        self.last = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.last = solve_per_sample(self.block, x)
        return self.last.y


@contextmanager
def per_sample_blocks(model: nn.Module):
    """Swap every ODE block of ``model`` for a :class:`PerSampleBlock` (restored on exit); yields them by name."""
    swapped = {}
    for name, block in ode_blocks(model).items():
        parent, _, child = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        swapped[name] = (owner, child, block, PerSampleBlock(block))
        setattr(owner, child, swapped[name][3])
    try:
        yield {name: s[3] for name, s in swapped.items()}
    finally:
        for owner, child, block, _ in swapped.values():
            setattr(owner, child, block)
