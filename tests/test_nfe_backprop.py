"""nfe_backprop counts exactly the forward evaluations that the loss's autograd graph reaches."""

from __future__ import annotations

import pytest
import torch

import odenet
from odenet.solve import ADAPTIVE_SOLVERS, SolverSettings


class RecordingOscillator(torch.nn.Module):
    """dx/dt = cos(40 t)·x·w, keeping every output tensor: step-size control rejects steps on it."""

    def __init__(self, frequency: float = 40.0) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))
        self.frequency = frequency
        self.outputs: list[torch.Tensor] = []

    def forward(self, t, x):
        out = torch.cos(self.frequency * t) * x * self.w
        self.outputs.append(out)
        return out


def reachable_outputs(loss: torch.Tensor, outputs: list[torch.Tensor]) -> int:
    """How many of ``outputs`` the backward pass from ``loss`` traverses (a walk of the autograd graph)."""
    seen, stack = set(), [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(fn for fn, _ in node.next_functions)
    return sum(out.grad_fn in seen for out in outputs)


@pytest.mark.parametrize("method", ADAPTIVE_SOLVERS)
@pytest.mark.parametrize("tol", [1e-3, 1e-6])
@pytest.mark.parametrize("fast_rk", [True, False])
def test_nfe_backprop_is_what_the_loss_reaches(method, tol, fast_rk):
    field = RecordingOscillator()
    block = odenet.ODEBlock(field, SolverSettings(method=method, rtol=tol, atol=tol, fast_rk=fast_rk))
    x = torch.ones(3, 2, dtype=torch.float64, requires_grad=True)
    loss = block(x).square().sum()
    stats = block.stats.as_dict()
    assert stats["steps_rejected"] > 0  # the field does force rejections
    assert stats["nfe_forward"] == len(field.outputs)
    assert stats["nfe_backprop"] == reachable_outputs(loss, field.outputs) < stats["nfe_forward"]


def test_a_rejected_first_step_also_cuts_off_the_initial_step_size_trial():
    # A huge first step (h0 from a tiny |f0|) on a fast oscillation: the first attempt is rejected.
    for frequency in (40.0, 400.0, 4000.0):
        field = RecordingOscillator(frequency)
        block = odenet.ODEBlock(field, SolverSettings(method="bosh3", rtol=1e-6, atol=1e-6))
        rejected_first = []
        reject = block._counted.callback_reject_step
        block._counted.callback_reject_step = lambda *a: (rejected_first.append(block.stats.steps_attempted == 1),
                                                          reject(*a))
        loss = block(torch.ones(3, 2, dtype=torch.float64, requires_grad=True)).sum()
        assert block.stats.nfe_backprop == reachable_outputs(loss, field.outputs)
        if rejected_first and rejected_first[0]:
            return
    pytest.fail("no frequency made the first step fail; the case is not exercised")


def test_the_odenet_model_under_a_training_step():
    torch.manual_seed(0)
    model = odenet.create_backbone("odenet", in_channels=1, num_classes=10, width=8,
                                   solver=SolverSettings(method="bosh3", rtol=1e-5, atol=1e-5))
    (block,) = odenet.models.ode.ode_blocks(model).values()
    outputs: list[torch.Tensor] = []
    block.func.register_forward_hook(lambda m, i, out: outputs.append(out))
    loss = model(torch.randn(4, 1, 28, 28)).logsumexp(1).sum()
    stats = odenet.read_nfe(model)
    assert stats["nfe_backprop"] == reachable_outputs(loss, outputs)
    assert stats["nfe_backprop"] == stats["nfe_forward"] - 3 * stats["steps_rejected"]
