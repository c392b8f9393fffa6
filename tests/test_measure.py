"""Exactness of the measurements: NFE per phase, solver steps, saved-tensor memory."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import odenet
from odenet.train.step import evaluate, train_step
from odenet.measure import SavedTensorMeter
from odenet.solve import SolverSettings


def odenet_model(width: int = 16, **solver) -> torch.nn.Module:
    torch.manual_seed(0)
    return odenet.create_backbone("odenet", in_channels=1, num_classes=10, width=width,
                                  solver=SolverSettings(**solver))


def batch(n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 28, 28, generator=gen), torch.randint(0, 10, (n,), generator=gen)


def step(model, adjoint_images=None, seed: int = 0) -> dict:
    images, labels = batch(seed=seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    return train_step(model, images, labels, optimizer, list(model.parameters()))


@pytest.mark.parametrize("steps", [1, 3, 7])
def test_rk4_with_n_steps_costs_exactly_4n_forward_evaluations(steps):
    row = step(odenet_model(method="rk4", steps=steps))
    assert (row["nfe_forward"], row["nfe_backward"], row["nfe_backprop"]) == (4 * steps, 0, 4 * steps)
    assert (row["steps_accepted"], row["steps_rejected"]) == (steps, 0)


@pytest.mark.parametrize("steps", [1, 3, 7])
def test_adjoint_rk4_backward_solve_costs_4n_evaluations(steps):
    """The adjoint integrates the augmented system back over the same n-step grid: 4n more."""
    row = step(odenet_model(method="rk4", steps=steps, adjoint=True))
    assert (row["nfe_forward"], row["nfe_backward"], row["nfe_backprop"]) == (4 * steps, 4 * steps, 0)
    assert row["steps_accepted_backward"] == steps


@pytest.mark.parametrize("adjoint", [False, True])
def test_dopri5_evaluations_are_two_for_the_first_step_plus_six_per_attempted_step(adjoint):
    """dopri5 is FSAL: 6 new evaluations per attempt, plus f(t0, x0) and one trial evaluation
    torchdiffeq spends choosing the first step. The counters must agree with each other."""
    row = step(odenet_model(rtol=1e-4, atol=1e-4, adjoint=adjoint))
    assert row["nfe_forward"] == 2 + 6 * (row["steps_accepted"] + row["steps_rejected"])
    if adjoint:
        assert row["nfe_backward"] == 2 + 6 * (row["steps_accepted_backward"] + row["steps_rejected_backward"])
    else:
        assert row["nfe_backward"] == 0 and row["nfe_backprop"] == row["nfe_forward"]


def test_dopri5_nfe_rises_as_the_tolerance_tightens():
    nfe = [step(odenet_model(rtol=tol, atol=tol))["nfe_forward"] for tol in (1e-1, 1e-3, 1e-5)]
    assert nfe[0] < nfe[1] < nfe[2]


def test_evaluation_does_not_leak_into_the_next_training_step():
    images, labels = batch(n=16, seed=1)
    test_loader = [batch(n=16, seed=2)]
    results = []
    for with_eval in (False, True):
        model = odenet_model(rtol=1e-3, atol=1e-3)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        params = list(model.parameters())
        train_step(model, images, labels, optimizer, params)
        if with_eval:
            ev = evaluate(model, test_loader, torch.device("cpu"))
            assert ev["nfe_forward"] > 0
        results.append(train_step(model, images, labels, optimizer, params))
    assert results[0]["nfe_forward"] == results[1]["nfe_forward"]
    assert results[0]["nfe_forward"] == 2 + 6 * (results[1]["steps_accepted"] + results[1]["steps_rejected"])


def test_evaluation_counts_forward_only_per_batch():
    model = odenet_model(method="rk4", steps=2, adjoint=True)
    loader = [batch(n=4, seed=s) for s in range(3)]
    ev = evaluate(model, loader, torch.device("cpu"))
    assert (ev["nfe_forward"], ev["nfe_forward_min"], ev["nfe_forward_max"]) == (8, 8, 8)
    assert ev["images"] == 12 and "nfe_backward" not in ev
    assert odenet.read_nfe(model)["nfe_forward"] == 0  # evaluation leaves the counters reset


def test_read_nfe_sums_blocks_and_reports_each():
    torch.manual_seed(0)
    model = odenet.create_backbone("odenet18", in_channels=3, num_classes=10,
                                   solver=SolverSettings(method="euler", steps=2))
    model(torch.randn(2, 3, 32, 32))
    stats = odenet.read_nfe(model)
    assert stats["nfe_forward"] == 8 and len(stats["blocks"]) == 4
    assert all(b["nfe_forward"] == 2 for b in stats["blocks"].values())
    assert odenet.read_nfe(model) == stats  # reading changes nothing
    odenet.reset_nfe(model)
    assert odenet.read_nfe(model)["nfe_forward"] == 0 and all(b["nfe_forward"] == 0
                                                              for b in odenet.read_nfe(model)["blocks"].values())
    assert odenet.read_nfe(odenet.create_backbone("resnet", in_channels=1, num_classes=10)) == {}


def test_saved_tensor_meter_counts_each_storage_once_and_skips_parameters():
    w = torch.nn.Parameter(torch.randn(1000))
    x = torch.randn(1000, requires_grad=True)
    with SavedTensorMeter(exclude=[w]) as meter:
        y = x.exp()  # saves its result: 4000 bytes
        z = (x * x).sum()  # saves x twice: 4000 bytes, once
        _ = (y * w).sum()  # saves y (already counted) and w (a parameter)
    assert meter.bytes == 8000
    with SavedTensorMeter() as meter, torch.no_grad():
        x.exp()
    assert meter.bytes == 0
    del z


def test_act_mem_is_flat_in_nfe_with_the_adjoint_and_grows_without():
    mem = {}
    for adjoint in (False, True):
        for tol in (1e-1, 1e-5):
            row = step(odenet_model(rtol=tol, atol=tol, adjoint=adjoint))
            mem[adjoint, tol] = (row["act_mem_mb"], row["nfe_forward"])
    (loose, nfe_loose), (tight, nfe_tight) = mem[True, 1e-1], mem[True, 1e-5]
    assert nfe_tight > 2 * nfe_loose
    assert abs(tight - loose) / loose < 0.03
    assert mem[False, 1e-5][0] > 2 * mem[False, 1e-1][0]
    assert mem[False, 1e-1][0] > 2 * loose


def test_resnet_act_mem_grows_with_depth():
    x, y = batch()
    mem = []
    for depth in (2, 4, 8):
        model = odenet.create_backbone("resnet", in_channels=1, num_classes=10, depth=depth)
        with SavedTensorMeter(exclude=model.parameters()) as meter:
            loss = F.cross_entropy(model(x), y)
        mem.append(meter.bytes)
        del loss
    assert mem[1] - mem[0] > 0
    assert mem[2] - mem[1] == pytest.approx(2 * (mem[1] - mem[0]), rel=1e-6)  # linear in depth


def test_meter_counts_only_what_the_graph_still_holds_at_exit():
    x = torch.randn(1000, requires_grad=True)
    with SavedTensorMeter() as kept:
        y = x.exp()  # the graph of y is alive at exit: its saved result counts
    with SavedTensorMeter() as dropped:
        x.exp().sum()  # this graph is freed before exit: nothing is held for a backward
    assert (kept.bytes, dropped.bytes) == (4000, 0)
    del y


def test_train_step_reports_every_measurement():
    row = step(odenet_model(rtol=1e-3, atol=1e-3, adjoint=True))
    for key in ("loss", "acc", "nfe_forward", "nfe_backward", "nfe_backprop", "steps_accepted", "steps_rejected",
                "act_mem_mb", "time_step_ms", "time_forward_ms", "time_backward_ms"):
        assert key in row
    assert row["time_step_ms"] >= row["time_forward_ms"] + row["time_backward_ms"]
    assert 0 <= row["acc"] <= 1 and row["loss"] > 0
    assert "peak_mem_mb" not in row  # CUDA-only quantity: absent on CPU, never a fake zero


def test_counting_is_unaffected_by_copying_the_model():
    model = odenet_model(method="rk4", steps=2)
    clone = copy.deepcopy(model)
    clone(batch()[0])
    assert odenet.read_nfe(model)["nfe_forward"] == 0 and odenet.read_nfe(clone)["nfe_forward"] == 8


def test_trajectory_returns_every_requested_time_and_counts_like_forward():
    class Rotation(torch.nn.Module):
        def forward(self, t, y):
            return torch.stack([-y[..., 1], y[..., 0]], dim=-1)

    block = odenet.ODEBlock(Rotation(), rtol=1e-7, atol=1e-7)
    t = torch.linspace(0, 1.5, 7)
    ys = block.trajectory(torch.tensor([[1.0, 0.0]]), t)
    assert ys.shape == (7, 1, 2)
    assert torch.allclose(ys[:, 0, 0], torch.cos(t), atol=1e-5) and torch.allclose(ys[:, 0, 1], torch.sin(t), atol=1e-5)
    stats = odenet.read_nfe(torch.nn.Sequential(block))
    assert stats["nfe_forward"] == 2 + 6 * (stats["steps_accepted"] + stats["steps_rejected"])


def test_training_steps_do_not_accumulate_tensors():
    """Regression: saved-tensor hooks that kept outputs alongside their grad_fn leaked graph branches
    backward never visits (the solver's step-size control) — tens of MB per step on a GPU."""
    import gc

    model = odenet_model(rtol=1e-3, atol=1e-3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    images, labels = batch()

    def live() -> int:
        gc.collect()
        return sum(1 for o in gc.get_objects() if torch.is_tensor(o))

    train_step(model, images, labels, optimizer, list(model.parameters()))
    before = live()
    for _ in range(4):
        train_step(model, images, labels, optimizer, list(model.parameters()))
    assert live() == before


class Oscillating(torch.nn.Module):
    """dx/dt = cos(40 t) x: a field whose step-size control rejects steps at tol 1e-3."""

    def forward(self, t, x):
        return torch.cos(40 * t) * x


def test_rejected_forward_steps_are_counted_as_rejected():
    block = odenet.ODEBlock(Oscillating(), SolverSettings(rtol=1e-3, atol=1e-3))
    block(torch.ones(3, 2, dtype=torch.float64))
    stats = odenet.read_nfe(torch.nn.Sequential(block))
    assert (stats["steps_accepted"], stats["steps_rejected"]) == (7, 6)
    assert stats["nfe_forward"] == 2 + 6 * 13


def test_evaluation_reports_the_smallest_and_largest_batch_nfe():
    model = torch.nn.Sequential(odenet.ODEBlock(Oscillating(), SolverSettings(rtol=1e-3, atol=1e-3)))
    labels = torch.arange(4)
    loader = [(scale * torch.ones(4, 10), labels) for scale in (1e-6, 1e3)]  # atol-bound: tiny states step less
    per_batch = [evaluate(model, [b], torch.device("cpu"))["nfe_forward"] for b in loader]
    ev = evaluate(model, loader, torch.device("cpu"))
    assert per_batch[0] != per_batch[1]
    assert (ev["nfe_forward_min"], ev["nfe_forward_max"]) == (min(per_batch), max(per_batch))
    assert ev["nfe_forward"] == sum(per_batch) / 2


def test_a_forward_pass_outside_a_step_does_not_count_in_the_step():
    model = odenet_model(rtol=1e-3, atol=1e-3)
    images, labels = batch(n=16, seed=1)
    model(images)  # e.g. a user's own forward pass before training: its evaluations belong to no step
    row = train_step(model, images, labels, torch.optim.SGD(model.parameters(), lr=0.01), list(model.parameters()))
    assert row["nfe_forward"] == 2 + 6 * (row["steps_accepted"] + row["steps_rejected"])


def test_adjoint_act_mem_is_activations_only_so_it_scales_with_the_batch():
    # Parameters do not grow with the batch; counting them would break the proportion.
    mem = [step_on(odenet_model(method="rk4", steps=2, adjoint=True), n)["act_mem_mb"] for n in (8, 16)]
    assert mem[1] / mem[0] == pytest.approx(2, rel=1e-3)


def step_on(model, n: int) -> dict:
    images, labels = batch(n=n)
    return train_step(model, images, labels, torch.optim.SGD(model.parameters(), lr=0.01), list(model.parameters()))


def test_the_meters_exit_work_is_timed_apart_from_the_forward_pass(monkeypatch):
    import types

    import odenet.measure

    # A virtual CPU clock that moves only when the meter counts: the test reads where the meter's
    # time lands, free of the machine's load.
    now = [0.0]
    monkeypatch.setattr(odenet.measure, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))
    count = SavedTensorMeter._count

    def slow_count(self):  # the meter's summing, made to take 1000 s
        now[0] += 1000.0
        return count(self)

    model = odenet_model(rtol=1e-3, atol=1e-3)
    images, labels = batch()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    quick = train_step(model, images, labels, optimizer, list(model.parameters()))
    monkeypatch.setattr(SavedTensorMeter, "_count", slow_count)
    slow = train_step(model, images, labels, optimizer, list(model.parameters()))
    assert slow["act_mem_mb"] == quick["act_mem_mb"] > 0
    assert slow["time_meter_ms"] == 1e6
    assert slow["time_forward_ms"] == slow["time_backward_ms"] == slow["time_step_ms"] == 0.0
