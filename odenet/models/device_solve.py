"""The batch-shared device-side solve of an ODEBlock (:func:`solve_on_device`), and an ODEBlock's solve as
the pieces :mod:`odenet.models.device_rk` steps (:func:`block_problem`, also used per sample and by CUDA graphs)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, NoReturn

import torch
from torch import nn

from odenet.models.device_rk import (Field, RKState, StepControl, Tableau, failure_message, solution_at, start, step,
                                     tableau)
from odenet.models.solvers import SolverError


@dataclass
class StepRecord:
    """One attempted step: where it started, its size, whether it was kept."""

    t: float
    dt: float
    accepted: bool


@dataclass
class DeviceSolution:
    """The result of :func:`solve_on_device`.

    Attributes:
        y: the state at t1 (B, ...).
        nfe_forward: evaluations torchdiffeq makes for this solve: 2 + stages × steps before the end
            (what ODEBlock's counter reads).
        field_calls: evaluations actually computed, including masked steps after the end.
        steps_accepted, steps_rejected: as ODEBlock's counters.
        host_checks: how many times the host waited for the device.
        trace: the attempted steps (before the end), when asked for.
    """

    y: torch.Tensor
    nfe_forward: int
    field_calls: int
    steps_accepted: int
    steps_rejected: int
    host_checks: int
    trace: list[StepRecord] | None = None


class Problem(NamedTuple):
    """An ODEBlock's solve of one input, in the pieces :func:`start` and :func:`step` take."""

    field: Field
    tableau: Tableau
    control: StepControl
    t0: torch.Tensor  # float64, () or (B,)
    t_end: torch.Tensor  # float64 ()


def block_problem(block: nn.Module, x: torch.Tensor, *, per_sample: bool) -> Problem:
    """The solve of ``x`` by an ODEBlock over its [t[0], t[1]], with its solver settings.

    Raises:
        ValueError: the block's solver is not adaptive, or a per-sample state has no batch dimension.
    """
    settings = block.solver
    tab = tableau(settings.method)
    if per_sample and x.dim() < 2:
        raise ValueError(f"per-sample solving needs a (B, ...) state, got shape {tuple(x.shape)}")
    control = StepControl.create(settings.rtol, settings.atol, tab.order, x, per_sample=per_sample,
                                 max_num_steps=settings.max_num_steps)
    t = block.t.to(control.rtol.dtype)  # odeint: the block's (2,) buffer, cast to the solver's time dtype
    t0 = t[0].expand(x.shape[0]).clone() if per_sample else t[0]
    return Problem(Field(block.func, block.autocast), tab, control, t0, t[1])


@torch.no_grad()
def solve_on_device(block: nn.Module, x: torch.Tensor, *, check_every: int = 8,
                    trace: bool = False) -> DeviceSolution:
    """Solve an ODEBlock's problem with batch-shared step control held on the device.

    The same accept/reject sequence and step sizes as the block's torchdiffeq solve, with the
    host checking for the end (and failures) only every ``check_every`` steps.

    Args:
        block: an :class:`odenet.models.ODEBlock` with an adaptive solver.
        x: the initial state (B, ...).
        check_every: steps between host checks; steps past the end are masked no-ops.
        trace: record each attempted step (syncs once at the end).

    Raises:
        odenet.models.solvers.SolverError: the solve failed as torchdiffeq's would.
    """
    if check_every < 1:
        raise ValueError(f"check_every must be >= 1, got {check_every}")
    field, tab, control, t0, t_end = block_problem(block, x, per_sample=False)
    s = start(field, tab, control, x, t0, t_end)
    records, checks = [], 0
    while True:
        for _ in range(check_every):
            before, s = s, step(field, tab, control, s, t_end)
            if trace:
                records.append((before, s))
        checks += 1
        done, failure = torch.stack([s.done.long(), s.failure]).tolist()  # the host check
        if failure:
            _raise(block, failure_message(failure))
        if done:
            break
    return DeviceSolution(y=solution_at(s, t_end), nfe_forward=2 + tab.stages * int(s.steps),
                          field_calls=field.calls, steps_accepted=int(s.accepted), steps_rejected=int(s.rejected),
                          host_checks=checks, trace=_records(records) if trace else None)


def _records(pairs: list[tuple[RKState, RKState]]) -> list[StepRecord]:
    """The steps taken before the end, as torchdiffeq's step callbacks see them (t0, dt, accepted)."""
    return [StepRecord(t=float(before.t), dt=float(torch.where(torch.isfinite(before.dt), before.dt, 0.0)),
                       accepted=bool(after.accepted > before.accepted))
            for before, after in pairs if not bool(before.done)]


def _raise(block: nn.Module, reason: str) -> NoReturn:
    raise SolverError(reason, block.solver, "forward")
