"""``--per-sample-every N`` (issue 12.5): the per-image NFE of a fixed test subset during training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from odenet.cli import train_main
from odenet.models.ode import reset_nfe, take_nfe
from odenet.run.metrics import truncate_epoch_rows
from odenet.train.per_sample_view import first_images, per_sample_view
from odenet.train.step import flat_nfe

COMMON = ["--dataset", "mnist-5k", "--limit-train-batches", "2", "--batch-size", "8", "--test-batch-size", "300",
          "--limit-test-batches", "1", "--tol", "1e-2", "--no-progress"]


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_second_epoch_logs_1000_images_alone_and_batched(tmp_path, capsys):
    assert train_main([*COMMON, "--epochs", "3", "--per-sample-every", "2", "--out-dir", str(tmp_path),
                       "--run-name", "r"]) == 0
    out = capsys.readouterr().out
    logged = rows(tmp_path / "r" / "per_sample_train.jsonl")
    assert [r["epoch"] for r in logged] == [2]
    assert out.count("1,000 test images solved alone") == 1
    for r in logged:
        nfe = np.asarray(r["nfe_forward"])
        # 1,000 images although the test batches are 300 and the evaluation is limited to one of them
        assert r["images"] == len(nfe) == len(r["correct"]) == 1000
        assert r["nfe_forward_p50"] == np.quantile(nfe, 0.5) and r["nfe_forward_max"] == nfe.max()
        assert r["nfe_forward_mean"] == pytest.approx(nfe.mean())
        assert ((nfe - 2) % 6 == 0).all()  # dopri5: 2 to start, 6 per step (FSAL), accepted or not
    # TensorBoard: the histogram of exactly those values at the epoch's step, and the quantiles as scalars
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "r"), size_guidance={"histograms": 0, "scalars": 0})
    acc.Reload()
    hist = acc.Histograms("sample/nfe_forward")
    steps = [r["step"] for r in logged]
    assert [h.step for h in hist] == steps
    for h, r in zip(hist, logged):
        assert h.histogram_value.num == 1000 and h.histogram_value.sum == sum(r["nfe_forward"])
        assert h.histogram_value.max == r["nfe_forward_max"]
    assert [s.value for s in acc.Scalars("sample/nfe_forward_batched")] == pytest.approx(
        [r["nfe_forward_batched"] for r in logged])


def test_the_view_leaves_training_bit_for_bit_unchanged(tmp_path):
    """No random draws, no regulariser state, and --first-step reuse's remembered step restored."""
    common = [*COMMON, "--epochs", "2", "--first-step", "reuse", "--kinetic-reg", "0.01", "--jacobian-reg", "0.01",
              "--out-dir", str(tmp_path)]
    assert train_main([*common, "--run-name", "plain"]) == 0
    assert train_main([*common, "--per-sample-every", "1", "--run-name", "viewed"]) == 0
    losses = {name: [(r["loss"], r["nfe_forward"]) for r in map(json.loads, (tmp_path / name / "metrics.jsonl")
                                                               .read_text().splitlines()) if r["split"] == "train"]
              for name in ("plain", "viewed")}
    assert losses["plain"] == losses["viewed"] and len(losses["plain"]) == 4


def test_the_view_equals_each_image_solved_alone_and_the_batched_solve():
    torch.manual_seed(0)
    from odenet.data import build_loaders
    from odenet.models.backbones import create_backbone
    from odenet.solve import SolverSettings

    data = build_loaders("mnist-5k", batch_size=8, test_batch_size=7, seed=0)
    model = create_backbone("odenet", in_channels=1, num_classes=10, image_size=28,
                            solver=SolverSettings(method="dopri5", rtol=1e-4, atol=1e-4))
    with torch.no_grad():  # larger weights: a field that needs different step counts per image
        for p in model.parameters():
            p.mul_(3)
    batches = first_images(data.test, 20)
    assert [len(y) for _, y in batches] == [7, 7, 6]
    view = per_sample_view(model, batches, torch.device("cpu"))
    model.eval()
    alone, batched = [], 0.0
    with torch.no_grad():
        for images, labels in batches:
            reset_nfe(model)
            model(images)
            batched += flat_nfe(take_nfe(model))["nfe_forward"] * len(labels)
            for i in range(len(labels)):
                reset_nfe(model)
                model(images[i:i + 1])
                alone.append(flat_nfe(take_nfe(model))["nfe_forward"])
    assert view["nfe_forward"] == alone
    assert view["nfe_forward_batched"] == pytest.approx(batched / 20)
    assert len(set(alone)) > 1  # the images do differ


def test_a_resumed_run_keeps_the_rows_up_to_its_checkpoint(tmp_path):
    path = tmp_path / "per_sample_train.jsonl"
    path.write_text("".join(json.dumps({"epoch": e, "nfe_forward": [e]}) + "\n" for e in (1, 2, 3)) + '{"epo')
    truncate_epoch_rows(path, 2)
    assert [r["epoch"] for r in rows(path)] == [1, 2]
    truncate_epoch_rows(tmp_path / "absent.jsonl", 1)
    assert not (tmp_path / "absent.jsonl").exists()


@pytest.mark.parametrize("argv, message", [
    (["--backbone", "resnet"], "--per-sample-every needs an ODE backbone with an adaptive solver"),
    (["--solver", "rk4"], "--per-sample-every needs an ODE backbone with an adaptive solver"),
    (["--per-sample-every", "0"], "--per-sample-every must be at least 1"),
])
def test_refused_where_there_is_no_per_image_step_control(argv, message, tmp_path, capsys):
    assert train_main(["--per-sample-every", "1", *argv, "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_regularization_off_solves_x_alone():
    from odenet.models.ode import ODEBlock, regularization_off, set_regularization
    from odenet.models.regularizers import Regularization
    from odenet.solve import SolverSettings

    class Field(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor([0.5, -1.0, 2.0]))

        def forward(self, t, x):
            return torch.tanh(x * self.w)

    model = torch.nn.Sequential(ODEBlock(Field(), SolverSettings(rtol=1e-5, atol=1e-5)))
    set_regularization(model, Regularization(kinetic=0.1, jacobian=0.1))
    block, x = model[0], torch.randn(4, 3)
    with torch.no_grad():
        y = model(x)
    assert set(block.reg_values) >= {"reg_kinetic", "reg_jacobian"}
    block.reg_values = {}
    with torch.no_grad(), regularization_off(model):
        y_off = model(2 * x)
        assert block.reg_values == {} and block._integrals is None
    assert block._integrals is not None and block.regularization.kinetic == 0.1
    with torch.no_grad():
        y_on = model(x)
    with torch.no_grad(), regularization_off(model):
        assert torch.allclose(model(x), y_on, atol=1e-6)  # the same steps without the integrals
    with torch.no_grad():
        model(x)
    assert "reg_kinetic" in block.reg_values and y_off.shape == y.shape
