"""Backbone registry: shapes, gradients, published parameter counts, shared stem and head."""

from __future__ import annotations

import pytest
import torch

import odenet
from odenet.models import backbone_entry
from odenet.solve import SolverSettings


def make(name: str, **kw) -> torch.nn.Module:
    cifar = backbone_entry(name).family == "cifar"
    return odenet.create_backbone(name, in_channels=3 if cifar else 1, num_classes=10,
                                  image_size=32 if cifar else 28, **kw)


def sample(name: str, batch: int = 2) -> torch.Tensor:
    size = (3, 32, 32) if backbone_entry(name).family == "cifar" else (1, 28, 28)
    return torch.randn(batch, *size, generator=torch.Generator().manual_seed(0))


def test_registry_lists_all_backbones_and_rejects_unknown_names():
    assert odenet.list_backbones() == ["mlp", "odenet", "odenet-mlp", "odenet18", "resnet", "resnet18", "rknet",
                                      "stem-only"]
    with pytest.raises(ValueError, match=r"unknown backbone 'resnet50'.*valid backbones: mlp, odenet, odenet-mlp, odenet18"):
        odenet.create_backbone("resnet50", in_channels=1, num_classes=10)


@pytest.mark.parametrize("name", odenet.list_backbones())
def test_forward_shape_finite_and_every_parameter_gets_a_gradient(name):
    torch.manual_seed(0)
    model = make(name)
    model.train()
    out = model(sample(name, batch=4))
    assert out.shape == (4, 10) and bool(torch.isfinite(out).all())
    out.logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert missing == []


@pytest.mark.parametrize("name, expected", [("mlp", 238_510), ("resnet", 576_778), ("odenet", 208_266),
                                            ("rknet", 208_266), ("resnet18", 11_173_962)])
def test_parameter_counts_match_the_published_architectures(name, expected):
    assert sum(p.numel() for p in make(name).parameters()) == expected


@pytest.mark.parametrize("pair", [("resnet", "odenet"), ("resnet", "rknet"), ("resnet18", "odenet18")])
def test_conv_backbones_share_stem_and_head(pair):
    a, b = (make(n) for n in pair)
    for part in ("stem", "head"):
        shapes = lambda m: [(k, tuple(v.shape)) for k, v in getattr(m, part).state_dict().items()]  # noqa: E731
        assert shapes(a) == shapes(b)
        assert type(getattr(a, part)) is type(getattr(b, part))


def test_odenet18_replaces_each_stages_stride1_blocks_by_one_ode_block():
    blocks = odenet.models.ode.ode_blocks(make("odenet18"))
    assert list(blocks) == ["features.0.0", "features.1.1", "features.2.1", "features.3.1"]


def test_rknet_refuses_anything_but_direct_rk4():
    with pytest.raises(ValueError, match="rknet is fixed-step RK4"):
        make("rknet", solver=SolverSettings(method="dopri5"))


class SmoothField(torch.nn.Module):
    """A smooth (tanh) field: adaptive solvers converge fast on it, unlike the ReLU conv field."""

    def __init__(self, dim: int = 3) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(dim, dim, dtype=torch.float64) * 0.5)

    def forward(self, t, x):
        return torch.tanh(x @ self.w) * (1 + t)


def relative_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def block_grads(block: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    block.zero_grad()
    block(x).square().sum().backward()
    return torch.cat([p.grad.flatten() for p in block.parameters()])


def test_adjoint_and_direct_gradients_agree_at_tight_tolerance():
    """(They differ at loose tolerances: direct backprop through an adaptive solver also
    differentiates the step-size choice, and the two solve different discretisations.)"""
    torch.manual_seed(0)
    field = SmoothField()
    x = torch.randn(4, 3, dtype=torch.float64)
    direct = block_grads(odenet.ODEBlock(field, rtol=1e-10, atol=1e-10).double(), x)
    adjoint_block = odenet.ODEBlock(field, rtol=1e-10, atol=1e-10, adjoint=True).double()
    adjoint = block_grads(adjoint_block, x)
    assert relative_gap(adjoint, direct) < 1e-7
    assert odenet.read_nfe(adjoint_block)["nfe_backward"] > 0


def test_adjoint_and_direct_gradients_converge_together_for_the_odenet_model():
    """The ReLU/GroupNorm field is not smooth, so the adjoint's backward re-integration
    differs from the forward trajectory by more than RK4's h^4; the gap must still shrink
    as the grid is refined (measured: 0.7% at 20 steps, 0.04% at 100)."""
    x = sample("odenet").double()
    gaps = []
    for steps in (20, 100):
        torch.manual_seed(0)
        direct = make("odenet", width=8, solver=SolverSettings(method="rk4", steps=steps)).double()
        adjoint = make("odenet", width=8, solver=SolverSettings(method="rk4", steps=steps, adjoint=True)).double()
        adjoint.load_state_dict(direct.state_dict())
        gaps.append(relative_gap(block_grads(adjoint, x), block_grads(direct, x)))
    assert gaps[1] < 1e-3 and gaps[1] < gaps[0] / 5


def test_ode_block_gradient_matches_finite_differences():
    torch.manual_seed(0)
    block = odenet.ODEBlock(SmoothField(), method="dopri5", rtol=1e-10, atol=1e-10, adjoint=True).double()
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda inp: block(inp), (x,), eps=1e-6, atol=1e-5)


def test_set_solver_changes_every_block():
    model = make("odenet18")
    odenet.set_solver(model, tol=1e-5, method="bosh3")
    for block in odenet.models.ode.ode_blocks(model).values():
        assert (block.solver.method, block.solver.rtol, block.solver.atol) == ("bosh3", 1e-5, 1e-5)


@pytest.mark.parametrize("bad, message", [
    (dict(method="dopri6"), "unknown solver 'dopri6'"),
    (dict(rtol=0.0), "rtol must be a positive finite number"),
    (dict(atol=float("nan")), "atol must be a positive finite number"),
    (dict(method="rk4"), "needs steps >= 1"),
    (dict(seminorm=True), "seminorm"),
])
def test_solver_settings_reject_bad_values(bad, message):
    with pytest.raises(ValueError, match=message):
        SolverSettings(**bad)


@pytest.mark.parametrize("t", [0.0, 0.37, 1.0])
def test_time_conv_equals_the_concatenating_form(t):
    from odenet.models.layers import ConcatConv2d

    torch.manual_seed(0)
    layer = ConcatConv2d(5, 7).double()
    x = torch.randn(3, 5, 6, 4, dtype=torch.float64, requires_grad=True)
    tt = torch.tensor(t, dtype=torch.float64)
    reference = torch.nn.functional.conv2d(torch.cat([torch.ones_like(x[:, :1]) * tt, x], 1), layer.conv.weight,
                                           layer.conv.bias, padding=1)
    out = layer(tt, x)
    assert torch.allclose(out, reference, rtol=0, atol=1e-12)
    g_out, g_ref = (torch.autograd.grad(y.square().sum(), [x, layer.conv.weight, layer.conv.bias])
                    for y in (out, reference))
    assert all(torch.allclose(a, b, rtol=1e-12, atol=1e-12) for a, b in zip(g_out, g_ref))


@pytest.mark.parametrize("length, steps_per_unit, expected", [
    (1.0, 3, 3), (0.7, 3 / 0.7, 3), (-1.0, 6, 6), (2.0, 6, 12), (0.25, 10, 3), (1e-4, 10, 1)])
def test_grid_steps_keep_the_step_size_without_rounding_noise(length, steps_per_unit, expected):
    from odenet.solve.settings import grid_steps

    assert grid_steps(length, steps_per_unit) == expected


def test_fixed_step_trajectories_keep_the_step_size_forward_and_in_the_adjoint():
    torch.manual_seed(0)
    field = torch.nn.Linear(3, 3).double()
    settings = SolverSettings(method="rk4", steps=10, adjoint=True)

    class Field(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = field

        def forward(self, t, x):
            return torch.tanh(self.lin(x))

    block = odenet.ODEBlock(Field(), settings)
    x = torch.randn(4, 3, dtype=torch.float64)
    out = block.trajectory(x, torch.tensor([0.0, 0.5, 1.0, 2.0], dtype=torch.float64))
    out.square().sum().backward()
    stats = odenet.read_nfe(torch.nn.Sequential(block))
    # step size 1/10 over [0, 2]: 20 RK4 steps forward; the adjoint solves each gap (5 + 5 + 10 steps)
    assert (stats["steps_accepted"], stats["nfe_forward"]) == (20, 80)
    assert (stats["steps_accepted_backward"], stats["nfe_backward"]) == (20, 80)
    odenet.reset_nfe(torch.nn.Sequential(block))
    assert block(x).shape == x.shape and odenet.read_nfe(torch.nn.Sequential(block))["nfe_forward"] == 40
