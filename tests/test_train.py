"""train.py end to end on a tiny Fashion-MNIST written in the real format."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from odenet.cli import train_main
from odenet.run.metrics import read_metrics

TRAIN_KEYS = {"loss", "acc", "lr", "nfe_forward", "nfe_backward", "nfe_backprop", "steps_accepted", "steps_rejected",
              "act_mem_mb", "time_step_ms", "time_forward_ms", "time_backward_ms", "time_data_ms"}


def run(tiny_fashion, tmp_path, *extra: str, name: str = "run") -> tuple[int, object]:
    argv = ["--dataset", "fashion-mnist", "--data-dir", str(tiny_fashion), "--epochs", "1", "--batch-size", "32",
            "--test-batch-size", "32", "--limit-train-batches", "3", "--limit-test-batches", "1",
            "--out-dir", str(tmp_path / "runs"), "--run-name", name, "--no-progress", *extra]
    return train_main(argv), tmp_path / "runs" / name


def test_odenet_run_writes_metrics_events_checkpoints_and_summary(tiny_fashion, tmp_path):
    code, run_dir = run(tiny_fashion, tmp_path, "--backbone", "odenet", "--tol", "1e-3")
    assert code == 0
    rows = read_metrics(run_dir / "metrics.jsonl")
    train = [r for r in rows if r["split"] == "train"]
    test = [r for r in rows if r["split"] == "test"]
    assert [r["step"] for r in train] == [1, 2, 3] and all(r["epoch"] == 1 for r in rows)
    assert len(test) == 1 and test[0]["step"] == 3
    for row in train:
        assert TRAIN_KEYS <= set(row)
        assert row["nfe_backward"] == 0 and row["nfe_backprop"] == row["nfe_forward"]
        assert row["nfe_forward"] == 2 + 6 * (row["steps_accepted"] + row["steps_rejected"])
        assert 14 <= row["nfe_forward"] <= 80 and row["act_mem_mb"] > 0
    assert {"acc", "loss", "nfe_forward", "nfe_forward_min", "nfe_forward_max", "time_ms"} <= set(test[0])

    events = EventAccumulator(str(run_dir)).Reload()
    tags = set(events.Tags()["scalars"])
    assert {f"train/{k}" for k in TRAIN_KEYS} <= tags and "test/acc" in tags and "test/nfe_forward" in tags
    assert [e.value for e in events.Scalars("train/nfe_forward")] == [r["nfe_forward"] for r in train]

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    for name in ("last.pt", "best.pt"):
        state = torch.load(run_dir / name, weights_only=True)
        assert (state["epoch"], state["step"], state["config"]) == (1, 3, config)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["test"]["acc"] == test[0]["acc"] and summary["params"] == 208_266


def test_adjoint_run_counts_backward_evaluations_and_saves_less(tiny_fashion, tmp_path):
    _, direct = run(tiny_fashion, tmp_path, "--backbone", "odenet", name="direct")
    code, adjoint = run(tiny_fashion, tmp_path, "--backbone", "odenet", "--adjoint", name="adjoint")
    assert code == 0
    d = [r for r in read_metrics(direct / "metrics.jsonl") if r["split"] == "train"]
    a = [r for r in read_metrics(adjoint / "metrics.jsonl") if r["split"] == "train"]
    assert all(r["nfe_backward"] > 0 and r["nfe_backprop"] == 0 for r in a)
    assert max(r["act_mem_mb"] for r in a) < 0.5 * min(r["act_mem_mb"] for r in d)


def test_resnet_run_has_no_solver_and_no_nfe(tiny_fashion, tmp_path):
    code, run_dir = run(tiny_fashion, tmp_path, "--backbone", "resnet")
    assert code == 0
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert all("nfe_forward" not in r for r in rows) and all(r["act_mem_mb"] > 0 for r in rows if r["split"] == "train")
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["solver"] is None


def test_resume_continues_without_duplicated_rows(tiny_fashion, tmp_path):
    code, run_dir = run(tiny_fashion, tmp_path, "--backbone", "resnet", "--epochs", "1")
    assert code == 0
    code, _ = run(tiny_fashion, tmp_path, "--backbone", "resnet", "--epochs", "2", "--resume",
                  str(run_dir / "last.pt"))
    assert code == 0
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows if r["split"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert [r["epoch"] for r in rows if r["split"] == "test"] == [1, 2]
    assert torch.load(run_dir / "last.pt", weights_only=True)["epoch"] == 2


def test_refuses_to_overwrite_an_existing_run(tiny_fashion, tmp_path, capsys):
    assert run(tiny_fashion, tmp_path, "--backbone", "mlp")[0] == 0
    before = (tmp_path / "runs" / "run" / "metrics.jsonl").read_text()
    assert run(tiny_fashion, tmp_path, "--backbone", "mlp")[0] == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (tmp_path / "runs" / "run" / "metrics.jsonl").read_text() == before


@pytest.mark.parametrize("backbone", ["rknet", "mlp"])
def test_other_backbones_train(tiny_fashion, tmp_path, backbone):
    code, run_dir = run(tiny_fashion, tmp_path, "--backbone", backbone)
    assert code == 0
    rows = read_metrics(run_dir / "metrics.jsonl")
    if backbone == "rknet":
        assert all(r["nfe_forward"] == 24 for r in rows if r["split"] == "train")  # 6 RK4 steps
