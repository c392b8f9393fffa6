"""eval.py: what a sweep measures at which batch, its timing repeats, its printout, and bad input."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import make_mnist_folder
from odenet.cli import eval_main, train_main
from odenet.evaluate import sweep as sweep_module
from odenet.evaluate.probes import act_mem_mb
from odenet.evaluate.sweep import DOPRI8_NOTE, EvalConfig, sweep_checkpoint, sweep_notes, timing_summary
from odenet.models import create_backbone


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny ODE-Net trained at batch 16 whose evaluation used 1 test batch of 32 (of 64 test images)."""
    root = tmp_path_factory.mktemp("eval-inputs")
    make_mnist_folder(root / "data" / "FashionMNIST" / "raw")
    argv = ["--backbone", "odenet", "--dataset", "fashion-mnist", "--data-dir", str(root / "data"), "--epochs", "1",
            "--batch-size", "16", "--test-batch-size", "32", "--limit-train-batches", "2", "--limit-test-batches",
            "1", "--tol", "1e-2", "--out-dir", str(root / "runs"), "--run-name", "odenet", "--no-progress"]
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("ODENET_DATA", raising=False)
        assert train_main(argv) == 0
    return root / "runs" / "odenet"


def test_the_default_sweep_evaluates_what_training_evaluated_and_says_so(run, capsys):
    out = run.parent / "sweep-default"
    assert eval_main(["--checkpoint", str(run / "last.pt"), "--tols", "1e-1", "--out", str(out),
                      "--no-tensorboard", "--timing-repeats", "2"]) == 0
    meta = json.loads((out / "sweep.json").read_text())["meta"]
    assert (meta["images"], meta["batch_size"], meta["limited"], meta["train_test_images"]) == (32, 32, False, 32)
    assert meta["act_mem_batch_size"] == 16  # the training batch, not the test batch
    assert meta["timing"] == {"warmup": 1, "repeats": 2} and meta["notes"] == []
    printed = capsys.readouterr().out
    assert "[1/3] dopri5 tol 0.1: acc" in printed and "[3/3] dopri5 tol 0.0001" in printed  # progress
    table = printed[printed.index("solver  "):].splitlines()
    assert "time_ms median (min-max)" in table[0] and "images" in table[0] and "batch" in table[0]
    assert len(table) == 2 + 3 + 1 and table[2].split()[:2] == ["dopri5", "0.1"]  # + the "sweep written" line
    assert table[2].split()[-2:] == ["32", "32"]


def test_a_limited_sweep_is_marked_limited(run):
    meta, rows = sweep_checkpoint(EvalConfig(checkpoint=str(run / "last.pt"), tols=[1e-1], batch_size=8,
                                             limit_test_batches=2, timing_repeats=1))
    assert (meta["images"], meta["batch_size"], meta["limited"], meta["train_test_images"]) == (16, 8, True, 32)


def test_act_mem_is_measured_at_the_training_batch_size(run):
    meta, rows = sweep_checkpoint(EvalConfig(checkpoint=str(run / "last.pt"), tols=[1e-1], timing_repeats=1))
    state = torch.load(run / "last.pt", weights_only=True)
    model = create_backbone("odenet", in_channels=1, num_classes=10)
    model.load_state_dict(state["model"])
    model.eval()
    from odenet.data import build_loaders
    data = build_loaders("fashion-mnist", batch_size=16, test_batch_size=32, data_dir=run.parent.parent / "data")
    images, labels = next(iter(data.test))
    first = images[:16].clone(), labels[:16].clone()  # own storage: a view would be counted as all 32 images
    for row in rows:
        sweep_module.apply_setting(model, sweep_module.Setting("dopri5", tol=row["tol"]))
        assert row["act_mem_mb"] == act_mem_mb(model, *first) < act_mem_mb(model, images, labels)


def test_time_is_the_median_of_repeated_passes_and_accuracy_and_nfe_do_not_change_between_them(run, monkeypatch):
    passes: list[dict] = []
    evaluate = sweep_module.evaluate

    def recording(*args, **kwargs):
        result = evaluate(*args, **kwargs)
        passes.append(dict(result))  # a copy: the sweep updates its first pass's dict into the row
        return result

    monkeypatch.setattr(sweep_module, "evaluate", recording)
    meta, rows = sweep_checkpoint(EvalConfig(checkpoint=str(run / "last.pt"), tols=[1e-1], timing_repeats=3,
                                             timing_warmup=2))
    assert meta["timing"] == {"warmup": 2, "repeats": 3} and len(passes) == 3 * len(rows)
    for row, group in zip(rows, (passes[i:i + 3] for i in range(0, len(passes), 3))):
        for key in ("acc", "loss", "nfe_forward", "steps_accepted", "steps_rejected", "images"):
            assert {p[key] for p in group} == {row[key]}, key
        times = sorted(p["time_ms"] for p in group)
        assert (row["time_ms_min"], row["time_ms"], row["time_ms_max"]) == tuple(times)


def test_time_is_noisy_when_its_passes_spread_by_more_than_a_fifth_of_the_median():
    steady = timing_summary([{"time_ms": t, "images_per_s": 1.0} for t in (10.0, 10.5, 11.0)])
    noisy = timing_summary([{"time_ms": t, "images_per_s": 1.0} for t in (10.0, 10.5, 13.0)])
    assert (steady["time_ms"], steady["time_noisy"], noisy["time_noisy"]) == (10.5, False, True)


def test_a_float32_dopri8_row_carries_the_reproducibility_note():
    model = create_backbone("odenet", in_channels=1, num_classes=10)
    assert sweep_notes([{"solver": "dopri5"}, {"solver": "dopri8"}], model) == [DOPRI8_NOTE]
    assert sweep_notes([{"solver": "dopri5"}], model) == []


def edit_config(**changes):
    def edit(state):
        state["config"].update(changes)
        for key, value in changes.items():
            if value is KeyError:
                del state["config"][key]
    return edit


@pytest.mark.parametrize("edit, args, code, message", [
    (None, ["--batch-size", "0"], 2, "--batch-size must be at least 1, got 0"),
    (None, ["--batch-size", "-1"], 2, "--batch-size must be at least 1, got -1"),
    (None, ["--reference-images", "0"], 2, "--reference-images must be at least 1"),
    (None, ["--limit-test-batches", "0"], 2, "--limit-test-batches must be at least 1"),
    (None, ["--timing-repeats", "0"], 2, "--timing-repeats must be at least 1"),
    (None, ["--tols", "1e-30"], 2, "--tols 1e-30 is below what the float32 model (machine epsilon 1.2e-7) can"),
    (None, ["--reference-tol", "1e-30"], 2, "--reference-tol 1e-30 is below what the float64 reference"),
    (edit_config(backbone="foo"), [], 2, "holds a config train.py refuses (unknown --backbone 'foo'"),
    (edit_config(rtol="abc"), [], 2, "rtol in the config of checkpoint"),
    (edit_config(colour="red"), [], 2, "holds a config with the unknown key 'colour'"),
    (edit_config(max_num_steps=1), ["--tols", "1e-4"], 3,  # the first setting (the training tol 1e-2) fails
     "setting dopri5 tol 0.01 of the sweep failed: max_num_steps exceeded"),
])
def test_bad_input_is_one_sentence_with_nothing_written(run, tmp_path, capsys, edit, args, code, message):
    checkpoint = run / "last.pt"
    if edit is not None:
        state = torch.load(checkpoint, weights_only=True)
        edit(state)
        checkpoint = tmp_path / "edited.pt"
        torch.save(state, checkpoint)
    out = tmp_path / "out"
    assert eval_main(["--checkpoint", str(checkpoint), "--out", str(out), "--timing-repeats", "1", *args]) == code
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert not out.exists() or not any(out.iterdir())
