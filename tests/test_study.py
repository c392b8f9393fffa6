"""The study's options (issue 11): regularisers through the ODE block and training, the fast recipe, stem-only."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import odenet
from odenet.cli import train_main
from odenet.models.ode import ODEBlock, regularization_terms, set_regularization
from odenet.models.regularizers import Regularization
from odenet.solve import SolverSettings
from odenet.run.metrics import read_metrics
from odenet.train.config import parse_train_args
from odenet.train.optim import build_optimizer, build_schedule
from odenet.train.step import train_step


class Diagonal(torch.nn.Module):
    def __init__(self, a: torch.Tensor) -> None:
        super().__init__()
        self.a = torch.nn.Parameter(a)

    def forward(self, t, x):
        return x * self.a


def block_of(a, **solver) -> ODEBlock:
    settings = SolverSettings(rtol=1e-9, atol=1e-9, **solver)
    return ODEBlock(Diagonal(a), settings)


def test_kinetic_energy_through_the_block_in_closed_form_and_the_steps_unchanged():
    a = torch.tensor([-0.5, 0.8], dtype=torch.float64)
    x0 = torch.tensor([[1.0, 2.0], [-1.0, 0.5]], dtype=torch.float64)
    plain = block_of(a)
    y = plain(x0)
    regularised = block_of(a)
    set_regularization(torch.nn.Sequential(regularised), Regularization(kinetic=1.0))
    assert torch.equal(regularised(x0), y)  # step-size control sees x only: the same steps, the same y
    assert regularised.stats.as_dict() == plain.stats.as_dict()
    # ∫₀¹ ½‖f‖²/D dt (RNODE's code: 0.5·mean(f²)), batch mean; f = a·x, x = x0·e^{at}.
    exact = 0.5 * (a * x0 ** 2 * (torch.exp(2 * a) - 1) / 2).mean(1).mean()
    assert regularised.reg_values["reg_kinetic"].item() == pytest.approx(exact.item(), rel=1e-6)


def test_penalty_is_the_weighted_sum_and_gradients_reach_the_field_under_the_adjoint():
    torch.manual_seed(0)
    block = block_of(torch.tensor([0.3, -0.2], dtype=torch.float64), adjoint=True)
    model = torch.nn.Sequential(block)
    set_regularization(model, Regularization(kinetic=0.5, jacobian=0.25))
    out = model(torch.randn(4, 2, dtype=torch.float64, requires_grad=True))
    penalty, values = regularization_terms(model)
    assert penalty.item() == pytest.approx(0.5 * values["reg_kinetic"].item() + 0.25 * values["reg_jacobian"].item())
    # A diagonal field's Jacobian is diag(a): the Hutchinson estimate is ε²·a² averaged, its mean ‖a‖²/D.
    (out.sum() + penalty).backward()
    assert torch.isfinite(block.func.a.grad).all() and block.func.a.grad.abs().sum() > 0
    assert odenet.read_nfe(model)["nfe_backward"] > 0


def test_error_regulariser_is_differentiable_with_direct_backprop():
    torch.manual_seed(1)
    block = ODEBlock(Diagonal(torch.tensor([2.0, -3.0])), SolverSettings(rtol=1e-4, atol=1e-4))
    set_regularization(torch.nn.Sequential(block), Regularization(error=1.0))
    block(torch.randn(3, 2))
    error = block.reg_values["reg_error"]
    assert error.item() > 0 and error.requires_grad
    error.backward()
    assert block.func.a.grad.abs().sum() > 0


def test_steer_draws_the_training_end_time_and_evaluates_at_t1():
    block = block_of(torch.tensor([1.0], dtype=torch.float64))
    set_regularization(torch.nn.Sequential(block), Regularization(steer=0.5))
    x = torch.ones(1, 1, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(0)
    ends = [math.log(block(x).item()) for _ in range(20)]  # x(T) = e^T for f = x
    assert all(0.5 - 1e-6 <= e <= 1.5 + 1e-6 for e in ends) and max(ends) - min(ends) > 0.3
    block.eval()
    assert math.log(block(x).item()) == pytest.approx(1.0, abs=1e-7)


def test_first_step_reuse_saves_the_trial_evaluation():
    field = Diagonal(torch.tensor([0.7, -1.3]))
    x = torch.randn(5, 2)
    auto = ODEBlock(field, SolverSettings(rtol=1e-5, atol=1e-5))
    reuse = ODEBlock(field, SolverSettings(rtol=1e-5, atol=1e-5, first_step="reuse"))
    for block in (auto, reuse):
        block(x)
        block.stats.reset()
        block(x)
    a, r = auto.stats.as_dict(), reuse.stats.as_dict()
    assert a["nfe_forward"] == 2 + 6 * (a["steps_accepted"] + a["steps_rejected"])
    assert r["nfe_forward"] == 1 + 6 * (r["steps_accepted"] + r["steps_rejected"])


def test_reuse_evaluates_from_the_checkpoints_first_step_in_any_process_and_any_order(tmp_path):
    import subprocess
    import sys

    torch.manual_seed(0)
    settings = SolverSettings(rtol=1e-3, atol=1e-3, first_step="reuse")
    model = odenet.create_backbone("odenet", in_channels=1, num_classes=10, width=8, solver=settings)
    x = torch.randn(6, 1, 28, 28)
    assert torch.isnan(model.features.first_step)  # no training solve yet
    model(x).sum().backward()  # a training solve remembers its last accepted step size
    remembered = model.features.first_step.clone()
    assert torch.isfinite(remembered)
    torch.save({"model": model.state_dict(), "x": x}, tmp_path / "ckpt.pt")
    model.eval()
    counts = []
    with torch.no_grad():
        for images in (x, 3 * x, x):  # an evaluation of other images in between changes nothing
            odenet.reset_nfe(model)
            model(images)
            counts.append(odenet.read_nfe(model)["nfe_forward"])
    assert counts[0] == counts[2] and torch.equal(model.features.first_step, remembered)
    code = ("import sys, torch, odenet\nfrom odenet.solve import SolverSettings\n"
            f"state = torch.load({str(tmp_path / 'ckpt.pt')!r})\n"
            "m = odenet.create_backbone('odenet', in_channels=1, num_classes=10, width=8, solver=SolverSettings("
            "rtol=1e-3, atol=1e-3, first_step='reuse'))\n"
            "m.load_state_dict(state['model']); m.eval()\n"
            "with torch.no_grad():\n    m(state['x'])\nprint(odenet.read_nfe(m)['nfe_forward'])\n")
    fresh = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
             for _ in range(2)]
    assert fresh == [str(counts[0])] * 2


def test_a_checkpoint_from_before_the_first_step_was_kept_still_loads():
    model = odenet.create_backbone("odenet", in_channels=1, num_classes=10, width=8)
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("first_step")}
    model.load_state_dict(state)  # strict: the missing first step is filled in as "none yet"
    assert torch.isnan(model.features.first_step)


def test_stem_only_and_anode_share_the_stem_and_anodes_head_reads_the_augmented_state():
    stem_only = odenet.create_backbone("stem-only", in_channels=1, num_classes=10)
    anode = odenet.create_backbone("odenet", in_channels=1, num_classes=10, augment_dim=4)
    plain = odenet.create_backbone("odenet", in_channels=1, num_classes=10)
    shapes = lambda m, part: [p.shape for p in getattr(m, part).parameters()]  # noqa: E731
    assert shapes(stem_only, "stem") == shapes(plain, "stem") == shapes(anode, "stem")
    assert shapes(stem_only, "head") == shapes(plain, "head")
    assert list(stem_only.features.parameters()) == []
    block = next(m for m in anode.modules() if isinstance(m, ODEBlock))
    assert block.func.conv1.conv.weight.shape[:2] == (68, 69)  # the field is 64 + 4 channels wide
    # ANODE's head reads the whole augmented state (Dupont et al.'s ConvODENet), all 68 channels.
    assert anode.head[-1].weight.shape == (10, 68) and anode.features(torch.randn(2, 64, 6, 6)).shape[1] == 68
    assert anode(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_train_step_logs_the_cross_entropy_and_minimises_the_total():
    torch.manual_seed(2)
    model = odenet.create_backbone("odenet", in_channels=1, num_classes=10, width=8,
                                   solver=SolverSettings(rtol=1e-2, atol=1e-2))
    set_regularization(model, Regularization(kinetic=0.1))
    x, y = torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    row = train_step(model, x, y, optimizer, list(model.parameters()), label_smoothing=0.2)
    with torch.no_grad():
        logits = model(x)
    assert row["loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
    smoothed = F.cross_entropy(logits, y, label_smoothing=0.2).item()
    assert row["loss_total"] == pytest.approx(smoothed + 0.1 * row["reg_kinetic"], rel=1e-4)


def test_gradient_clipping_bounds_the_update():
    torch.manual_seed(3)
    model = odenet.create_backbone("stem-only", in_channels=1, num_classes=10, width=8)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    train_step(model, torch.randn(8, 1, 28, 28) * 50, torch.arange(8), optimizer, list(model.parameters()),
               grad_clip=1e-3)
    step = torch.sqrt(sum(((p - b) ** 2).sum() for p, b in zip(model.parameters(), before)))
    assert step.item() <= 1e-3 * (1 + 1e-4)


@pytest.mark.parametrize("schedule", ["cosine", "onecycle"])
def test_warmup_then_anneal(schedule):
    cfg = parse_train_args(["--schedule", schedule, "--warmup-epochs", "1", "--epochs", "4", "--lr", "0.4",
                            "--optimizer", "adamw"])
    model = torch.nn.Linear(2, 2)
    optimizer = build_optimizer(model.parameters(), cfg)
    schedule_ = build_schedule(optimizer, cfg, steps_per_epoch=10)
    rates = []
    for _ in range(40):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule_.after_step()
    assert isinstance(optimizer, torch.optim.AdamW)
    assert rates[0] == pytest.approx(0.4 / 25) and rates[10] == pytest.approx(0.4)
    assert all(a <= b for a, b in zip(rates[:10], rates[1:11]))  # warm-up rises
    assert all(a >= b for a, b in zip(rates[10:], rates[11:]))  # then anneals
    assert rates[-1] < 0.01 * 0.4


@pytest.mark.parametrize("argv, message", [
    (["--backbone", "resnet", "--kinetic-reg", "0.1"], "--kinetic-reg does not apply: resnet has no ODE block"),
    (["--adjoint", "--error-reg", "0.1"], "--error-reg differentiates the forward solve"),
    (["--solver", "rk4", "--error-reg", "0.1"], "--error-reg does not apply: rk4 is a fixed-step solver"),
    (["--error-reg", "0.1", "--no-fast-rk"], "--error-reg reads the error estimates of odenet's fast RK"),
    (["--steer", "1.5"], "--steer 1.5 must be below --t1 1"),
    (["--backbone", "odenet18", "--augment-dim", "2"], "--augment-dim widens the odenet backbone"),
    (["--schedule", "step", "--warmup-epochs", "1"], "--warmup-epochs applies to --schedule cosine or onecycle"),
    (["--label-smoothing", "1"], "--label-smoothing must be in [0, 1)"),
    (["--grad-clip", "0"], "--grad-clip must be a positive number"),
    (["--first-step", "guess"], "unknown --first-step 'guess'"),
    (["--kinetic-reg", "-1"], "--kinetic-reg must be 0 or a positive number"),
])
def test_study_options_refused_where_they_do_not_apply(argv, message, capsys, tmp_path):
    assert train_main([*argv, "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_a_regularised_run_logs_its_values(tmp_path):
    assert train_main(["--dataset", "mnist-5k", "--epochs", "1", "--limit-train-batches", "2", "--limit-test-batches",
                       "1", "--batch-size", "8", "--test-batch-size", "16", "--kinetic-reg", "0.01",
                       "--jacobian-reg", "0.01", "--tol", "0.1", "--no-progress", "--out-dir", str(tmp_path),
                       "--run-name", "r"]) == 0
    rows = read_metrics(tmp_path / "r" / "metrics.jsonl")
    train = [r for r in rows if r["split"] == "train"]
    test = [r for r in rows if r["split"] == "test"]
    for r in train:
        assert r["loss_total"] == pytest.approx(r["loss"] + 0.01 * (r["reg_kinetic"] + r["reg_jacobian"]), rel=1e-5)
    assert test[0]["reg_kinetic"] > 0 and test[0]["reg_jacobian"] > 0


def test_a_checkpoint_of_the_earlier_version_resumes(tmp_path):
    """Its config lacks the study's options: it ran as their defaults do now, so it resumes unchanged."""
    common = ["--dataset", "mnist-5k", "--limit-train-batches", "1", "--limit-test-batches", "1", "--batch-size", "8",
              "--test-batch-size", "16", "--tol", "0.1", "--no-progress", "--out-dir", str(tmp_path)]
    assert train_main([*common, "--epochs", "1", "--run-name", "old"]) == 0
    last = tmp_path / "old" / "last.pt"
    state = torch.load(last, weights_only=True)
    for key in ("optimizer", "schedule", "warmup_epochs", "label_smoothing", "grad_clip", "kinetic_reg",
                "jacobian_reg", "error_reg", "steer", "augment_dim", "first_step"):
        del state["config"][key]
    torch.save(state, last)
    assert train_main([*common, "--epochs", "2", "--resume", str(last)]) == 0
    assert [r["epoch"] for r in read_metrics(tmp_path / "old" / "metrics.jsonl") if r["split"] == "test"] == [1, 2]


def test_the_sweep_times_the_model_without_its_training_regularisers(tmp_path, capsys):
    """A sweep measures the deployed ODE-Net: same NFE and accuracy, no regulariser integrals in its passes."""
    from odenet.cli import eval_main
    import json

    common = ["--dataset", "mnist-5k", "--epochs", "1", "--limit-train-batches", "2", "--limit-test-batches", "1",
              "--batch-size", "8", "--test-batch-size", "16", "--tol", "0.1", "--no-progress", "--out-dir",
              str(tmp_path)]
    assert train_main([*common, "--kinetic-reg", "0.01", "--jacobian-reg", "0.01", "--run-name", "r"]) == 0
    test = [r for r in read_metrics(tmp_path / "r" / "metrics.jsonl") if r["split"] == "test"][0]
    assert test["reg_jacobian"] > 0  # training's own evaluation does report them
    assert eval_main(["--checkpoint", str(tmp_path / "r" / "last.pt"), "--tols", "0.1", "--timing-repeats", "1",
                      "--no-tensorboard"]) == 0
    rows = json.loads((tmp_path / "r" / "sweep.json").read_text())["rows"]
    row = next(r for r in rows if r["tol"] == 0.1)
    assert not any(k.startswith("reg_") for r in rows for k in r)
    assert row["nfe_forward"] == test["nfe_forward"] and row["acc"] == test["acc"]
    assert row["act_mem_mb"] > 0  # the training-graph probe keeps the regularisers (training memory)
