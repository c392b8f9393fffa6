"""eval.py: test-time sweeps of real (tiny) checkpoints."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from odenet.cli import eval_main, train_main
from odenet.evaluate.probes import FlopCounter
from odenet.evaluate.sweep import EvalConfig, sweep_checkpoint
from odenet.models import create_backbone


def train_tiny(tiny_fashion, tmp_path, backbone: str, *extra: str):
    out = tmp_path / "runs"
    argv = ["--backbone", backbone, "--dataset", "fashion-mnist", "--data-dir", str(tiny_fashion), "--epochs", "1",
            "--batch-size", "32", "--test-batch-size", "32", "--limit-train-batches", "2", "--out-dir", str(out),
            "--run-name", backbone, "--no-progress", *extra]
    assert train_main(argv) == 0
    return out / backbone


@pytest.fixture
def odenet_run(tiny_fashion, tmp_path):
    return train_tiny(tiny_fashion, tmp_path, "odenet", "--tol", "1e-2")


def test_eval_writes_every_file_and_nfe_rises_with_tighter_tolerance(odenet_run):
    code = eval_main(["--checkpoint", str(odenet_run / "last.pt"), "--tols", "1e-1,1e-2,1e-3,1e-4",
                      "--limit-test-batches", "1"])
    assert code == 0
    for name in ("sweep.csv", "sweep.json", "report.md", "report.html", "acc_vs_tol.png", "fig3a_nfe_vs_error.png"):
        assert (odenet_run / name).is_file(), name
    rows = json.loads((odenet_run / "sweep.json").read_text())["rows"]
    by_tol = {r["tol"]: r for r in rows}
    assert sorted(by_tol) == [1e-4, 1e-3, 1e-2, 1e-1]  # 1e-2 is the training tol; 1e-4 its 100x tighter
    assert by_tol[1e-4]["nfe_forward"] > by_tol[1e-1]["nfe_forward"]
    assert by_tol[1e-4]["ode_error"] < by_tol[1e-1]["ode_error"]
    for r in rows:
        assert r["nfe_forward_min"] <= r["nfe_forward"] <= r["nfe_forward_max"]
        assert r["nfe_forward"] == 2 + 6 * (r["steps_accepted"] + r["steps_rejected"])
        assert r["images"] == 32 and r["images_per_s"] > 0 and r["act_mem_mb"] > 0
    with (odenet_run / "sweep.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 4
    html = (odenet_run / "report.html").read_text()
    assert "data:image/png;base64," in html and "Is it still an ODE?" in html
    tags = EventAccumulator(str(odenet_run)).Reload().Tags()
    # The report's text goes to TensorBoard; sweeps keep their figures in report.html (run/tensorboard.py).
    assert any(tag.startswith("sweep") for tag in tags["tensors"]), tags["tensors"]


def test_flops_are_stem_and_head_plus_nfe_times_one_field_evaluation(odenet_run):
    meta, rows = sweep_checkpoint(EvalConfig(checkpoint=str(odenet_run / "last.pt"), tols=[1e-1, 1e-4],
                                             limit_test_batches=1))
    counter = FlopCounter(create_backbone("odenet", in_channels=1, num_classes=10), (1, 28, 28))
    # fvcore's conventions: a conv or linear layer = its multiply-adds, GroupNorm = 5 per element,
    # adaptive average pooling = 1 per input element. Stem: 3 convs (26², 13², 6² outputs) and 2
    # GroupNorms; head: GroupNorm, pooling and the 64→10 linear layer.
    convs = 1 * 64 * 9 * 26 ** 2 + 64 * 64 * 16 * 13 ** 2 + 64 * 64 * 16 * 6 ** 2
    norms = 5 * 64 * (26 ** 2 + 13 ** 2 + 6 ** 2)
    assert counter.base == convs + norms + 64 * 36 + 64 * 10
    # Field: two 3×3 convs of [t, x] (65 → 64 channels) at 6×6 and three GroupNorms.
    assert counter.field["features"] == 2 * 65 * 64 * 9 * 36 + 3 * 5 * 64 * 36
    for r in rows:
        assert r["flops"] == pytest.approx(counter.base + r["nfe_forward"] * counter.field["features"])


def test_fixed_step_solver_takes_steps(odenet_run):
    meta, rows = sweep_checkpoint(EvalConfig(checkpoint=str(odenet_run / "last.pt"), solvers=["rk4"], steps=[1, 3],
                                             limit_test_batches=1))
    assert [(r["steps"], r["nfe_forward"]) for r in rows] == [(1, 4), (3, 12)]
    assert meta["still_an_ode"] is None  # the training solver (dopri5) was not swept


def test_resnet_checkpoint_gives_one_row(tiny_fashion, tmp_path):
    run = train_tiny(tiny_fashion, tmp_path, "resnet")
    assert eval_main(["--checkpoint", str(run / "last.pt"), "--limit-test-batches", "1", "--no-tensorboard"]) == 0
    rows = json.loads((run / "sweep.json").read_text())["rows"]
    assert len(rows) == 1 and rows[0]["solver"] is None and rows[0]["flops"] > 0


@pytest.mark.parametrize("args, message", [
    (["--tols", "1e-1"], "asked of a resnet checkpoint, which has no ODE solver"),
])
def test_tolerances_asked_of_a_resnet(tiny_fashion, tmp_path, capsys, args, message):
    run = train_tiny(tiny_fashion, tmp_path, "resnet")
    assert eval_main(["--checkpoint", str(run / "last.pt"), *args]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("make, args, message", [
    (None, ["--tols", "1e-1"], "does not exist"),
    (lambda p: p.write_bytes(b"garbage"), ["--tols", "1e-1"], "is not a checkpoint (not a torch.save archive)"),
    (lambda p: p.write_bytes(b""), ["--tols", "1e-1"], "is empty (truncated)"),
    ("truncate", ["--tols", "1e-1"], "is truncated or corrupt"),
    ("valid", ["--tols", "0"], "--tols must be positive numbers, got 0.0"),
    ("valid", ["--tols", "1e-1", "--solvers", "dopri7"], "unknown solver 'dopri7'"),
    ("valid", ["--solvers", "rk4"], "takes --steps (e.g. --steps 2,4,8), not tolerances"),
])
def test_bad_input_is_one_sentence_and_exit_2(odenet_run, tmp_path, capsys, make, args, message):
    path = odenet_run / "last.pt"
    if make is None:
        path = tmp_path / "missing.pt"
    elif make == "truncate":
        path = tmp_path / "cut.pt"
        path.write_bytes((odenet_run / "last.pt").read_bytes()[:5000])
    elif callable(make):
        path = tmp_path / "bad.pt"
        make(path)
    assert eval_main(["--checkpoint", str(path), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_malicious_checkpoint_is_refused_without_running_code(tmp_path, capsys):
    class Evil:
        def __reduce__(self):
            return (exec, (f"open({str(tmp_path / 'pwned')!r}, 'w').write('x')",))

    path = tmp_path / "evil.pt"
    torch.save({"format": "odenet-checkpoint", "payload": Evil()}, path)
    assert eval_main(["--checkpoint", str(path), "--tols", "1e-1"]) == 2
    assert "refuses" in capsys.readouterr().err and not (tmp_path / "pwned").exists()


def test_training_atol_is_kept_in_the_sweep(tiny_fashion, tmp_path):
    from odenet.evaluate.sweep import Setting, apply_setting
    from odenet.models.ode import ode_blocks

    run = train_tiny(tiny_fashion, tmp_path, "odenet", "--tol", "1e-2", "--atol", "1e-4")
    meta, rows = sweep_checkpoint(EvalConfig(checkpoint=str(run / "last.pt"), tols=[1e-1], limit_test_batches=1))
    assert [(r["tol"], r["atol"]) for r in rows] == [(1e-1, 1e-3), (1e-2, 1e-4), (1e-4, 1e-6)]
    model = create_backbone("odenet", in_channels=1, num_classes=10)
    apply_setting(model, Setting("dopri5", tol=1e-2, atol=1e-4))
    (block,) = ode_blocks(model).values()
    assert (block.solver.rtol, block.solver.atol) == (1e-2, 1e-4)


def test_sweep_peak_mem_is_the_inference_peak(odenet_run, monkeypatch):
    import odenet.train.step as engine
    import odenet.evaluate.sweep as evaluation

    phase = {"now": "inference"}  # a CPU stand-in for CUDA's peak counter: a figure per phase
    fake_peak = lambda device: {"inference": 10.0, "probe": 500.0}[phase["now"]]  # noqa: E731
    for module in (engine, evaluation):
        monkeypatch.setattr(module, "peak_mem_mb", fake_peak, raising=False)
        monkeypatch.setattr(module, "reset_peak", lambda device: phase.update(now="inference"), raising=False)
    probe = evaluation.act_mem_mb

    def act_mem_probe(*args):
        phase["now"] = "probe"  # the probe keeps a training graph: its peak is not an inference figure
        return probe(*args)

    monkeypatch.setattr(evaluation, "act_mem_mb", act_mem_probe)
    meta, rows = sweep_checkpoint(EvalConfig(checkpoint=str(odenet_run / "last.pt"), tols=[1e-1],
                                             limit_test_batches=1))
    assert all(r["act_mem_mb"] > 0 for r in rows)
    assert [r["peak_mem_mb"] for r in rows] == [10.0] * 3


@pytest.mark.parametrize("amp", ["none", "bf16"])
def test_sweep_at_the_training_tolerance_reproduces_the_training_test_row(tiny_fashion, tmp_path, amp):
    from odenet.run.metrics import read_metrics

    run = train_tiny(tiny_fashion, tmp_path, "odenet", "--tol", "1e-2", "--amp", amp)
    (test,) = [r for r in read_metrics(run / "metrics.jsonl") if r["split"] == "test"]
    meta, rows = sweep_checkpoint(EvalConfig(checkpoint=str(run / "last.pt"), tols=[1e-1], reference_images=4))
    (at_train,) = [r for r in rows if r["tol"] == 1e-2]
    assert meta["config"]["amp"] == amp
    assert (at_train["acc"], at_train["nfe_forward"], at_train["images"]) == (test["acc"], test["nfe_forward"], 64)
    assert at_train["loss"] == pytest.approx(test["loss"], rel=1e-6)


def test_each_test_batch_is_compared_with_its_own_reference_solve(odenet_run):
    meta, rows = sweep_checkpoint(EvalConfig(checkpoint=str(odenet_run / "last.pt"), tols=[1e-1, 1e-4],
                                             limit_test_batches=2, reference_images=8))
    by_tol = {r["tol"]: r for r in rows}
    assert by_tol[1e-4]["images"] == 64  # two batches of 32
    # A reference solved for another batch's input would leave an O(1) error at any tolerance.
    assert by_tol[1e-4]["ode_error"] < 0.01 and by_tol[1e-1]["ode_error"] > by_tol[1e-4]["ode_error"]
