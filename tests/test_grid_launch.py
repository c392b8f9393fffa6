"""Scaling the train-time grid out: --jobs N processes, submitit job arrays, failures, kills and resumes."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from odenet.cli import grid_main
from odenet.errors import RunFailure
from odenet.grid import LaunchOptions, GridPlan, run_grid
from odenet.grid.launch import gpu_slots, point_line, point_threads, timeout_minutes

# Four mnist-5k ODE-Net points, a few steps each (NFE vary by tolerance and seed).
GRID = ["--backbones", "odenet", "--tols", "0.1,0.01", "--seeds", "0,1", "--no-eval",
        "--set", "dataset=mnist-5k,epochs=1,batch_size=16,test_batch_size=100,limit_train_batches=3,"
                 "limit_test_batches=1"]
NAMES = ["odenet-dopri5-tol0.1-direct-s0", "odenet-dopri5-tol0.1-direct-s1", "odenet-dopri5-tol0.01-direct-s0",
         "odenet-dopri5-tol0.01-direct-s1"]
WALL_CLOCK = ("time_", "images_per_s")


def measured_rows(run_dir: Path) -> list[dict]:
    """metrics.jsonl without the wall-clock fields (loss, acc, NFE, steps, memory stay)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith(WALL_CLOCK)} for r in rows]


def record(run_dir: Path) -> dict:
    return json.loads((run_dir / "grid-job.json").read_text())


@pytest.fixture(scope="module")
def sequential(tmp_path_factory) -> tuple[Path, float]:
    """The grid point by point in this process, one thread (the reference run)."""
    out = tmp_path_factory.mktemp("seq") / "sw"
    start = time.perf_counter()
    assert grid_main([*GRID, "--threads-per-job", "1", "--out-dir", str(out)]) == 0
    return out, time.perf_counter() - start


# --------------------------------------------------------------------------- fast: the pieces

def test_gpus_are_handed_out_round_robin_k_per_gpu():
    assert gpu_slots(4, 2, ["0", "1"]) == ["0", "1", "0", "1"]
    assert gpu_slots(3, 1, ["0", "1"]) == ["0", "1"]  # at most one point per GPU: 2 at a time
    assert gpu_slots(3, 1, []) == [None, None, None]


def test_every_point_runs_on_a_fixed_thread_count_whatever_the_jobs(monkeypatch):
    # A point's float rounding depends on its thread count: fixed (1, or --threads-per-job), never cores / jobs.
    monkeypatch.setattr("odenet.grid.launch.cpu_cores", lambda: 4)
    assert [point_threads(LaunchOptions(jobs=n)) for n in (1, 2, 4)] == [1, 1, 1]
    assert point_threads(LaunchOptions(jobs=2, threads_per_job=3)) == 3
    assert point_threads(LaunchOptions(launcher="submitit", slurm_cpus_per_job=4)) == 4


def test_slurm_time_and_the_finished_point_line():
    assert [timeout_minutes(t) for t in ("90", "30:00", "1:30:00", "0:00:30")] == [90, 30, 90, 1]
    ok = {"run_name": "r", "status": "ok", "acc": 0.8125, "nfe_forward": 26.0, "wall_s": 12.34, "run_dir": "d"}
    assert point_line(ok, 2, 4) == "[2/4] r: test acc 0.8125, nfe_forward 26.0, 12 s training"
    whole = {**ok, "started": 100.0, "ended": 130.0}  # the point's process, sweep included
    assert point_line(whole, 2, 4) == "[2/4] r: test acc 0.8125, nfe_forward 26.0, 30 s in all, 12 s of it training"
    bad = {"run_name": "r", "status": "failed", "exit_code": 3, "message": "the solve blew up", "run_dir": "d"}
    assert point_line(bad, 3, 4) == "[3/4] r failed (exit 3): the solve blew up (run directory d)"


def test_a_failing_point_is_reported_and_the_others_finish(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("ODENET_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    base = {"epochs": 1, "batch_size": 32, "test_batch_size": 200, "limit_train_batches": 2, "limit_test_batches": 1,
            "data_dir": str(tmp_path / "nowhere")}
    plan = GridPlan(base=base, grid=[{"backbone": ["mlp"], "dataset": ["mnist", "mnist-5k"]}],
                     out_dir=str(tmp_path / "sw"))
    with pytest.raises(RunFailure, match=r"1 of 2 grid points failed — mlp-datasetmnist-s0 \(exit 2\): "):
        run_grid(plan)
    out = capsys.readouterr().out
    assert "[1/2] mlp-datasetmnist-s0 failed (exit 2):" in out and "[2/2] mlp-datasetmnist-5k-s0: test acc" in out
    assert (tmp_path / "sw" / "mlp-datasetmnist-5k-s0" / "summary.json").is_file()
    assert "mlp-datasetmnist-5k-s0" in (tmp_path / "sw" / "report.md").read_text()


# --------------------------------------------------------------------------- slow: whole grids

@pytest.mark.slow
def test_jobs_2_runs_points_at_once_with_the_sequential_numbers(sequential, tmp_path, capsys):
    seq, seq_s = sequential
    out = tmp_path / "sw"
    start = time.perf_counter()
    assert grid_main([*GRID, "--jobs", "2", "--threads-per-job", "1", "--out-dir", str(out)]) == 0
    par_s = time.perf_counter() - start
    printed = capsys.readouterr().out
    assert sum(f"] {n}: test acc" in printed for n in NAMES) == 4
    records = [record(out / n) for n in NAMES]
    assert {r["threads"] for r in records} == {1} and len({r["pid"] for r in records}) == 4
    spans = sorted((r["started"], r["ended"]) for r in records)
    assert any(b0 < a1 for (_, a1), (b0, _) in zip(spans, spans[1:])), spans  # some points ran at the same time
    for name in NAMES:
        assert measured_rows(out / name) == measured_rows(seq / name), name
    assert (out / "report.md").is_file()
    print(f"\nsequential {seq_s:.1f} s, --jobs 2 {par_s:.1f} s: speed-up {seq_s / par_s:.2f}x; spans {spans}")


@pytest.mark.slow
def test_submitit_local_executor_runs_the_same_grid_to_the_same_numbers(sequential, tmp_path):
    pytest.importorskip("submitit")
    seq, _ = sequential
    out = tmp_path / "sw"
    assert grid_main([*GRID, "--launcher", "submitit", "--submitit-executor", "local", "--slurm-gpus-per-job", "0",
                      "--threads-per-job", "1", "--out-dir", str(out)]) == 0
    for name in NAMES:
        assert measured_rows(out / name) == measured_rows(seq / name), name
        assert record(out / name)["pid"] != os.getpid()
        assert list((out / name / "slurm").glob("*_log.out"))  # submitit's logs, linked from the run directory
    table = lambda folder: [line for line in (folder / "report.md").read_text().splitlines()  # noqa: E731
                            if line.startswith("| odenet")]
    strip_time = lambda rows: [r.split("|")[:4] for r in rows]  # noqa: E731 - method, test error, paper, params
    assert strip_time(table(out)) == strip_time(table(seq)) and table(out)


@pytest.mark.slow
def test_a_killed_grid_resumes_only_its_unfinished_points(tmp_path):
    out = tmp_path / "sw"
    argv = [*GRID[:-1], GRID[-1].replace("limit_train_batches=3", "limit_train_batches=8"), "--tols", "0.1",
            "--seeds", "0,1,2", "--threads-per-job", "1", "--out-dir", str(out)]
    names = [f"odenet-dopri5-tol0.1-direct-s{s}" for s in range(3)]
    proc = subprocess.Popen([sys.executable, "-c", f"import sys; from odenet.cli import grid_main; "
                                                   f"sys.exit(grid_main({argv!r}))"],
                            cwd=tmp_path, start_new_session=True, stdout=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / names[0] / "summary.json").is_file():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / names[2] / "summary.json").exists()
    finished = {p: (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
                for p in (out / names[0]).rglob("*") if p.is_file()}
    assert grid_main(argv) == 0
    assert {p: (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest()) for p in finished} == finished
    assert sorted(p for p in (out / names[0]).rglob("*") if p.is_file()) == sorted(finished)
    for name in names[1:]:
        assert (out / name / "summary.json").is_file() and record(out / name)["status"] == "ok"
    assert (out / "report.md").is_file()
