"""Device-side step control against torchdiffeq's own adaptive loop, and the CUDA-graph solvers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torchdiffeq import odeint

from odenet.models import ODEBlock, SolverError, SolverSettings, read_nfe
from odenet.models.layers import ConvODEField
from odenet.models.ode import block_problem
from odenet.models.per_sample_blocks import solve_block_per_sample
from odenet.solve.control import FieldCalls
from odenet.solve.drivers import solve_on_device as _solve_on_device
from odenet.solve.graphs import GraphedAdaptiveSolver, GraphedFixedGridSolver, fixed_grid_solve, solve_grid
from odenet.solve.tableau import tableau

ADAPTIVE = ("dopri5", "bosh3", "adaptive_heun", "fehlberg2", "dopri8")
TOL = {"dopri5": 1e-6, "dopri8": 1e-6, "bosh3": 1e-4, "adaptive_heun": 1e-4, "fehlberg2": 1e-4}  # ~50-600 steps


class Oscillating(nn.Module):
    """dx/dt = cos(40 t) · x · w: the step size must follow the oscillation, so steps get rejected."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.linspace(0.5, 2.0, 4, dtype=torch.float64))

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # x: (B, 4)
        return torch.cos(40 * t) * x * self.w


class Recorder(nn.Module):
    """The field with torchdiffeq's step callbacks, recording (t0, dt, accepted) as ODEBlock counts them."""

    def __init__(self, func: nn.Module) -> None:
        super().__init__()
        self.func = func
        self.steps: list[tuple[float, float, bool]] = []

    def forward(self, t, x):
        return self.func(t, x)

    def callback_accept_step(self, t0, y0, dt) -> None:
        self.steps.append((float(t0), float(dt), True))

    def callback_reject_step(self, t0, y0, dt) -> None:
        self.steps.append((float(t0), float(dt), False))


def solve_on_device(block: ODEBlock, x: torch.Tensor, **kwargs):
    return _solve_on_device(block_problem(block, x, per_sample=False), x, **kwargs)


def problem(method: str, t1: float = 2.0):
    torch.manual_seed(0)
    field = Oscillating()
    block = ODEBlock(field, SolverSettings(method=method, rtol=TOL[method], atol=TOL[method], t1=t1)).double()
    return field, block, torch.randn(3, 4, dtype=torch.float64)


@pytest.mark.parametrize("method", ADAPTIVE)
def test_same_steps_as_torchdiffeqs_adaptive_loop(method):
    field, block, x = problem(method)
    recorder = Recorder(field)
    with torch.no_grad():  # torchdiffeq's own solver, not odenet's fast twin
        expected = odeint(recorder, x, block.t, rtol=TOL[method], atol=TOL[method], method=method)[-1]
    ours = solve_on_device(block, x, check_every=4, trace=True)
    got = [(r.t, r.dt, r.accepted) for r in ours.trace]
    assert [a for *_, a in got] == [a for *_, a in recorder.steps]  # the same accept/reject sequence
    assert not all(a for *_, a in got)  # and it has rejections
    # Same step sizes; only the stage sums' rounding order differs (fast_rk's, as ODEBlock runs).
    torch.testing.assert_close(torch.tensor(got)[:, :2], torch.tensor(recorder.steps)[:, :2], rtol=1e-12, atol=0)
    # The solution too; it equals ODEBlock's bit for bit (next test). fehlberg2's large steps
    # amplify the summation-order rounding of fast_rk vs torchdiffeq to 1.5e-8 relative by t1.
    torch.testing.assert_close(ours.y, expected, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("method", ADAPTIVE)
def test_counts_equal_odeblocks(method):
    field, block, x = problem(method)
    with torch.no_grad():
        y = block(x)
    stats = read_nfe(block)
    ours = solve_on_device(block, x, check_every=4)
    assert (ours.nfe_forward, ours.steps_accepted, ours.steps_rejected) == (
        stats["nfe_forward"], stats["steps_accepted"], stats["steps_rejected"])
    assert torch.equal(ours.y, y)  # ODEBlock runs fast_rk's arithmetic, mirrored operation for operation


@pytest.mark.parametrize("check_every", [1, 3, 8])
def test_masked_steps_after_the_end_change_nothing_but_cost_evaluations(check_every):
    _, block, x = problem("dopri5")
    reference = solve_on_device(block, x, check_every=1)
    ours = solve_on_device(block, x, check_every=check_every)
    assert torch.equal(ours.y, reference.y) and ours.nfe_forward == reference.nfe_forward
    steps = ours.steps_accepted + ours.steps_rejected
    assert ours.host_checks == math.ceil(steps / check_every)
    # Real evaluations: 2 to start, 6 per step actually computed, masked no-op steps included.
    assert ours.field_calls == 2 + 6 * check_every * ours.host_checks >= ours.nfe_forward


def test_per_sample_and_shared_control_are_one_rule():
    # A batch of one: its own norm is the batch's norm, so both controls take identical steps.
    _, block, x = problem("dopri5")
    shared = solve_on_device(block, x[:1])
    alone = solve_block_per_sample(block, x[:1])
    assert torch.equal(shared.y, alone.y)
    assert (shared.nfe_forward, shared.steps_accepted, shared.steps_rejected) == (
        int(alone.nfe_forward), int(alone.steps_accepted), int(alone.steps_rejected))


def test_step_budget_is_enforced_like_torchdiffeq():
    field, _, x = problem("dopri5")
    block = ODEBlock(field, SolverSettings(rtol=1e-6, atol=1e-6, t1=2.0, max_num_steps=5)).double()
    with pytest.raises(SolverError, match="max_num_steps exceeded"):
        block(x)
    with pytest.raises(SolverError, match="max_num_steps exceeded"):
        solve_on_device(block, x)


def test_float32_conv_field_matches_odeblock():
    torch.manual_seed(0)
    block = ODEBlock(ConvODEField(8), SolverSettings(rtol=1e-3, atol=1e-3))
    x = torch.randn(4, 8, 6, 6)
    with torch.no_grad():
        y = block(x)
    stats = read_nfe(block)
    ours = solve_on_device(block, x)
    assert torch.equal(ours.y, y) and ours.nfe_forward == stats["nfe_forward"]


def test_tableaus_are_torchdiffeqs():
    assert tableau("dopri5").stages == 6 and tableau("dopri5").fsal and tableau("dopri5").order == 5
    assert [tableau(m).stages for m in ("bosh3", "adaptive_heun", "fehlberg2")] == [3, 1, 2]
    with pytest.raises(ValueError, match="not an adaptive Runge–Kutta method"):
        tableau("rk4")


@pytest.mark.parametrize("method, per_step", [("rk4", 4), ("euler", 1), ("midpoint", 2)])
def test_fixed_grid_solve_is_odeblocks(method, per_step):
    torch.manual_seed(0)
    block = ODEBlock(ConvODEField(8), SolverSettings(method=method, steps=3))
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        y = block(x)
        field = FieldCalls(block.func)
        ours = fixed_grid_solve(field, x, solve_grid(block.solver, x, block.t), method)
    assert torch.equal(ours, y)
    assert field.calls == read_nfe(block)["nfe_forward"] == 3 * per_step


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_cuda_graphs_say_clearly_that_they_need_cuda():
    _, block, x = problem("dopri5")
    with pytest.raises(RuntimeError, match="need a CUDA device"):
        GraphedAdaptiveSolver(block_problem(block, x, per_sample=False), x)


@pytest.mark.gpu
@pytest.mark.parametrize("per_sample", [False, True])
def test_graphed_adaptive_step_is_the_eager_device_solve(per_sample):
    torch.manual_seed(0)
    block = ODEBlock(ConvODEField(16), SolverSettings(rtol=1e-4, atol=1e-4)).cuda()
    x = torch.randn(8, 16, 6, 6, device="cuda")
    graphed = GraphedAdaptiveSolver(block_problem(block, x, per_sample=per_sample), x, check_every=4)
    ours = graphed(x)
    if per_sample:
        eager = solve_block_per_sample(block, x)
        assert torch.equal(ours.nfe_forward, eager.nfe_forward)
        torch.testing.assert_close(ours.y, eager.y, rtol=1e-4, atol=1e-5)  # masked vs compacted batches
    else:
        eager = solve_on_device(block, x, check_every=4)
        assert torch.equal(ours.y, eager.y) and ours.nfe_forward == eager.nfe_forward
        with torch.no_grad():
            y = block(x)
        assert ours.nfe_forward == read_nfe(block)["nfe_forward"]
        torch.testing.assert_close(ours.y, y, rtol=1e-4, atol=1e-5)
    again = graphed(x * 0.5)  # the graph is reusable with another input of the same shape
    assert again.y.shape == x.shape and torch.isfinite(again.y).all()


@pytest.mark.gpu
@pytest.mark.parametrize("method", ["rk4", "euler"])
def test_graphed_fixed_grid_solve_is_odeblocks(method):
    torch.manual_seed(0)
    block = ODEBlock(ConvODEField(16), SolverSettings(method=method, steps=4)).cuda()
    x = torch.randn(8, 16, 6, 6, device="cuda")
    with torch.no_grad():
        y = block(x)
    graphed = GraphedFixedGridSolver(block.func, block.solver, x, block.t)
    torch.testing.assert_close(graphed(x), y, rtol=1e-5, atol=1e-6)
    assert graphed.field_calls == read_nfe(block)["nfe_forward"]


def test_autocast_field_is_evaluated_like_odeblocks():
    torch.manual_seed(0)
    block = ODEBlock(ConvODEField(8), SolverSettings(rtol=1e-3, atol=1e-3))
    block.set_autocast(torch.bfloat16)
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        y = block(x)
    ours = solve_on_device(block, x)
    assert torch.equal(ours.y, y) and ours.nfe_forward == read_nfe(block)["nfe_forward"]
