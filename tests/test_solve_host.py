"""odenet's fast Runge–Kutta stage arithmetic against torchdiffeq's own solvers."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import odenet
from odenet.solve import SolverSettings
from odenet.solve.host import FAST_METHODS, FastRKMixin, method_name, torchdiffeq_method
from odenet.solve.torchdiffeq_api import BASE_SOLVERS


class Field(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(4, 4, dtype=torch.float64) * 0.7)

    def forward(self, t, x):
        return torch.tanh(x @ self.w) * torch.cos(3 * t) - 0.1 * x


def solve(method: str, fast: bool, adjoint: bool = False, tol: float = 1e-6, t=None):
    torch.manual_seed(0)
    field = Field()
    block = odenet.ODEBlock(field, SolverSettings(method=method, rtol=tol, atol=tol, adjoint=adjoint, fast_rk=fast))
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    out = block(x) if t is None else block.trajectory(x, t)
    out.square().sum().backward()
    stats = odenet.read_nfe(torch.nn.Sequential(block))
    return out.detach(), x.grad, field.w.grad, stats


@pytest.mark.parametrize("method", sorted(FAST_METHODS))
@pytest.mark.parametrize("adjoint", [False, True])
def test_same_solution_gradients_and_counts_as_torchdiffeq(method, adjoint):
    ours, theirs = solve(method, True, adjoint), solve(method, False, adjoint)
    for a, b in zip(ours[:3], theirs[:3]):
        assert torch.allclose(a, b, rtol=1e-8, atol=1e-9)  # float64: only the summation order differs
    assert ours[3] == theirs[3]  # every NFE and step counter identical


def test_trajectory_interpolates_like_torchdiffeq():
    t = torch.linspace(0, 2, 9, dtype=torch.float64)
    ours, theirs = solve("dopri5", True, t=t), solve("dopri5", False, t=t)
    assert ours[0].shape == (9, 5, 4) and torch.allclose(ours[0], theirs[0], rtol=1e-10, atol=1e-12)
    assert ours[3] == theirs[3]


def test_odenet_float32_agrees_with_torchdiffeq_to_rounding():
    torch.manual_seed(0)
    model = odenet.create_backbone("odenet", in_channels=1, num_classes=10, width=16)
    x = torch.randn(8, 1, 28, 28)
    outputs = []
    for fast in (True, False):
        block = model.features
        block.configure(dataclasses.replace(block.solver, fast_rk=fast))
        odenet.reset_nfe(model)
        outputs.append((model(x), odenet.read_nfe(model)["nfe_forward"]))
    assert outputs[0][1] == outputs[1][1]
    assert torch.allclose(outputs[0][0], outputs[1][0], rtol=1e-4, atol=1e-5)


def test_fixed_grid_methods_are_left_to_torchdiffeq():
    assert torchdiffeq_method(SolverSettings(method="rk4", steps=2)) == "rk4"
    assert torchdiffeq_method(SolverSettings(method="dopri5")) == "odenet-dopri5"
    assert torchdiffeq_method(SolverSettings(method="dopri5", fast_rk=False)) == "dopri5"


def test_the_fast_solvers_run_odenets_stage_arithmetic():
    # Otherwise the comparisons above would compare torchdiffeq with itself.
    from torchdiffeq._impl.odeint import SOLVERS

    for method, fast in FAST_METHODS.items():
        assert method_name(method) == fast
        solver = SOLVERS[fast]
        assert solver._runge_kutta_step is FastRKMixin._runge_kutta_step
        assert solver._adaptive_step is FastRKMixin._adaptive_step
        assert solver.tableau is BASE_SOLVERS[method].tableau and BASE_SOLVERS[method] is SOLVERS[method]
