"""Issue 21, classes 4, 7 and 9: resources, two grids on one folder, and numbers independent of --jobs.

* An allocation that cannot succeed is refused up front (the model's parameters alone exceed the memory),
  and one that fails anyway is one sentence, exit 3, the run's files intact — in train.py, eval.py and a grid
  point.
* A run directory whose lock is held is being trained: a second grid refuses it, never moves it aside or
  writes its record.
* A grid point runs with a fixed thread count recorded in its config.yaml, so --jobs 1 and --jobs 2 give the
  same losses and NFE bit for bit.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import assert_one_sentence, make_mnist_folder, snapshot
from odenet.cli import eval_main, grid_main, train_main
from odenet.config import ConfigError
from odenet.run.dirs import RunLock

OOM = "DefaultCPUAllocator: can't allocate memory: you tried to allocate 68719476736 bytes. Error code 12"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_mnist_folder(root / "FashionMNIST" / "raw")
    return root


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["--dataset", "fashion-mnist", "--data-dir", str(data), "--backbone", "odenet", "--width", "8", "--tol",
            "1e-2", "--batch-size", "32", "--test-batch-size", "64", "--limit-train-batches", "2",
            "--limit-test-batches", "1", "--out-dir", str(out), "--run-name", "x", "--no-progress", *extra]


# ----------------------------------------------------------------------------- class 4: resources

def test_a_model_that_cannot_fit_is_refused_before_anything_is_allocated(data, tmp_path, capsys):
    code = train_main(train_args(data, tmp_path / "runs", "--width", "64", "--augment-dim", "100000"))
    assert_one_sentence(code, capsys.readouterr().err, "the model has 180,234,", "GiB for its weights, gradients and "
                        "optimizer state alone", "use a smaller --width or --augment-dim")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("error", [RuntimeError(OOM), MemoryError(), "cuda"], ids=["cpu allocator", "MemoryError",
                                                                                   "torch.OutOfMemoryError"])
def test_an_allocation_failure_while_training_is_one_sentence_exit_3_files_intact(data, tmp_path, capsys,
                                                                                monkeypatch, error):
    import torch

    from odenet.train import trainer

    assert train_main(train_args(data, tmp_path / "runs", "--epochs", "1")) == 0
    run = tmp_path / "runs" / "x"
    before = {p: p.read_bytes() for p in (run / "last.pt", run / "best.pt", run / "summary.json")}
    rows = (run / "metrics.jsonl").read_text()

    def fails(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB") if error == "cuda" else error

    monkeypatch.setattr(trainer, "train_step", fails)
    capsys.readouterr()
    code = train_main(train_args(data, tmp_path / "runs", "--epochs", "2", "--resume", str(run / "last.pt")))
    assert_one_sentence(code, capsys.readouterr().err, f"training in {run} ran out of memory",
                        f"the last good checkpoint is {run / 'last.pt'} and the run's files are intact",
                        "a smaller --batch-size", exit_code=3)
    assert {p: p.read_bytes() for p in before} == before and (run / "metrics.jsonl").read_text() == rows


def test_a_grid_point_out_of_memory_is_a_record_with_exit_3(data, tmp_path, monkeypatch):
    from odenet.grid.job import run_point
    from odenet.train import trainer
    from odenet.train.config import parse_train_args

    monkeypatch.setattr(trainer, "train_step", lambda *a, **k: (_ for _ in ()).throw(RuntimeError(OOM)))
    cfg = parse_train_args(train_args(data, tmp_path / "runs", "--epochs", "1"))
    record = run_point({"config": cfg.to_dict(), "eval": None})
    assert record["status"] == "failed" and record["exit_code"] == 3
    assert "ran out of memory (can't allocate memory: you tried to allocate 68719476736 bytes)" in record["message"]
    assert json.loads((tmp_path / "runs" / "x" / "grid-job.json").read_text())["exit_code"] == 3


def test_a_sweep_out_of_memory_is_exit_3_and_writes_nothing(data, tmp_path, capsys, monkeypatch):
    from odenet.evaluate import sweep

    assert train_main(train_args(data, tmp_path / "runs", "--epochs", "1")) == 0
    run = tmp_path / "runs" / "x"
    before = snapshot(run)
    monkeypatch.setattr(sweep, "evaluate", lambda *a, **k: (_ for _ in ()).throw(MemoryError()))
    capsys.readouterr()
    code = eval_main(["--checkpoint", str(run / "last.pt"), "--tols", "0.1"])
    assert_one_sentence(code, capsys.readouterr().err, "ran out of memory", "nothing was written", exit_code=3)
    assert snapshot(run) == before


# ----------------------------------------------------------------------------- class 7: two grids, one folder

GRID = ["--backbones", "odenet", "--tols", "0.1,0.01", "--seeds", "0", "--no-eval",
        "--set", "dataset=mnist-5k,epochs=1,batch_size=16,test_batch_size=100,limit_train_batches=3,"
                 "limit_test_batches=1,width=8"]


def started_without_checkpoint(out: Path, name: str) -> Path:
    """A point another grid started: its config and first rows written, no checkpoint yet."""
    from odenet.grid import expand, parse_grid_args

    cfg = next(c for c in expand(parse_grid_args([*GRID, "--out-dir", str(out)])) if c.run_name == name)
    run = out / name
    run.mkdir(parents=True)
    from odenet.run.files import write_config

    write_config(run, cfg.to_dict())
    (run / "metrics.jsonl").write_text(json.dumps({"split": "train", "epoch": 1, "step": 1, "loss": 2.3}) + "\n")
    return run


def test_a_second_grid_refuses_a_point_whose_lock_is_held_and_moves_nothing(tmp_path, capsys):
    out = tmp_path / "grid"
    run = started_without_checkpoint(out, "odenet-dopri5-tol0.1-direct-s0")
    with RunLock(run):  # the first grid's point, training
        before = snapshot(run)
        code = grid_main([*GRID, "--out-dir", str(out)])
        assert_one_sentence(code, capsys.readouterr().err, f"{run} is being trained by another process "
                                                           f"(pid {os.getpid()})", "use another --out-dir")
        assert snapshot(run) == before and sorted(p.name for p in out.iterdir()) == [run.name]
    assert grid_main([*GRID, "--out-dir", str(out)]) == 0  # lock gone: a crashed run, moved aside and retrained
    assert (out / f"{run.name}.incomplete-1" / "metrics.jsonl").is_file()
    assert (out / run.name / "summary.json").is_file()


def test_moving_aside_takes_the_lock_first(tmp_path):
    from odenet.grid.points import move_aside

    run = started_without_checkpoint(tmp_path / "grid", "odenet-dopri5-tol0.1-direct-s0")
    with RunLock(run):
        with pytest.raises(ConfigError, match="is in use by another training process"):
            move_aside(run)
    assert sorted(p.name for p in run.parent.iterdir()) == [run.name]
    move_aside(run)
    aside = run.with_name(f"{run.name}.incomplete-1")
    assert not run.exists() and sorted(p.name for p in aside.iterdir()) == ["config.yaml", "metrics.jsonl"]


def test_a_refused_point_leaves_the_running_points_record_alone(data, tmp_path):
    from odenet.grid.job import RECORD, run_point
    from odenet.train.config import parse_train_args

    cfg = parse_train_args(train_args(data, tmp_path / "runs", "--epochs", "1"))
    run = tmp_path / "runs" / "x"
    run.mkdir(parents=True)
    (run / RECORD).write_text('{"pid": 1, "status": "running"}')
    with RunLock(run):
        record = run_point({"config": cfg.to_dict(), "eval": None})
    assert record["exit_code"] == 2 and "in use by another training process" in record["message"]
    assert (run / RECORD).read_text() == '{"pid": 1, "status": "running"}'


# ----------------------------------------------------------------------------- class 9: --jobs 1 = --jobs 2

WALL_CLOCK = ("time_", "images_per_s")


def measured(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith(WALL_CLOCK)} for r in rows]


def test_jobs_1_and_jobs_2_give_the_same_numbers_and_record_the_threads(tmp_path):
    import torch

    torch.set_num_threads(2)  # what --jobs 1 used to run with here (the cores), against 1 per point with --jobs 2
    names = ["odenet-dopri5-tol0.1-direct-s0", "odenet-dopri5-tol0.01-direct-s0"]
    assert grid_main([*GRID, "--out-dir", str(tmp_path / "one")]) == 0
    assert grid_main([*GRID, "--jobs", "2", "--out-dir", str(tmp_path / "two")]) == 0
    for name in names:
        one, two = tmp_path / "one" / name, tmp_path / "two" / name
        assert measured(one) == measured(two), name
        assert all("threads: 1\n" in (run / "config.yaml").read_text() for run in (one, two))
        assert json.loads((two / "grid-job.json").read_text())["threads"] == 1
        assert json.loads((two / "grid-job.json").read_text())["pid"] != os.getpid()
    shutil.rmtree(tmp_path / "one")
