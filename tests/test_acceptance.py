"""The issues' acceptance runs, on the real data this machine has. Slow: run with ``-m slow``."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REAL_FASHION_MNIST
from odenet.cli import train_main
from odenet.run.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]
needs_fashion = pytest.mark.skipif(not REAL_FASHION_MNIST.is_dir(), reason="apt-get install dataset-fashion-mnist")


def fashion_smoke(tmp_path, *extra: str) -> list[dict]:
    out = tmp_path / "runs"
    argv = ["--backbone", "odenet", "--tol", "1e-3", "--dataset", "fashion-mnist", "--epochs", "1",
            "--limit-train-batches", "20", "--limit-test-batches", "5", "--out-dir", str(out), "--run-name", "x",
            "--no-progress", *extra]
    assert train_main(argv) == 0
    return read_metrics(out / "x" / "metrics.jsonl")


@pytest.mark.slow
@needs_fashion
def test_fashion_mnist_smoke_run_direct_and_adjoint(tmp_path, monkeypatch):
    monkeypatch.delenv("ODENET_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    direct = [r for r in fashion_smoke(tmp_path) if r["split"] == "train"]
    assert len(direct) == 20
    # A plain torchdiffeq implementation measures 20 on random-crop batches, 32 on uncropped ones.
    assert all(20 <= r["nfe_forward"] <= 32 for r in direct[:5])
    assert all(r["nfe_backward"] == 0 for r in direct)
    (tmp_path / "runs" / "x").rename(tmp_path / "runs" / "direct")
    adjoint = [r for r in fashion_smoke(tmp_path, "--adjoint") if r["split"] == "train"]
    assert all(r["nfe_backward"] > 0 for r in adjoint)
    mean = lambda rows: sum(r["act_mem_mb"] for r in rows) / len(rows)  # noqa: E731
    assert mean(adjoint) < 0.3 * mean(direct)


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path):
    result = subprocess.run([str(Path(sys.executable).with_name("odenet-demo")), "--out-dir", str(tmp_path / "demo"),
                             "--epochs", "1"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("grid: 5 runs in ")  # the first line comes at once
    assert sum(line.startswith("grid: ") and " left " in line for line in lines) == 4  # the time left, after each
    # the summary table's header; each point's "[k/5] ..." lines come before it
    start = next(i for i, line in enumerate(lines) if line.split()[:4] == ["run", "seed", "test", "acc"]) + 2
    table = lines[start:start + 5]
    assert table[0].startswith("stem-only") and table[1].startswith("resnet")
    assert "direct" in table[2] and "adjoint" in table[3] and "reuse" in table[4]
    assert lines[-1].startswith("next: tensorboard --logdir ") and "?smoothing=0" in lines[-1]
    report = (tmp_path / "demo" / "report.md").read_text()
    assert "Table 1 (Chen et al. 2018)" in report and "fig3c_nfe_forward_vs_backward.png" in report
    assert (tmp_path / "demo" / "report.html").stat().st_size > 50_000


def first_hour_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## The first hour", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


@pytest.mark.slow
def test_the_readmes_first_hour_learns_on_mnist_5k(tmp_path):
    """Every command of the README's first hour, as written, in a fresh folder (about 10 minutes on 2 cores)."""
    commands = first_hour_commands()
    assert commands[0] == "source .venv/bin/activate"
    for name in ("train.py", "eval.py"):
        shutil.copy(ROOT / name, tmp_path / name)
    for folder in ("configs", "examples"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    for command in commands[1:]:
        result = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=1200)
        assert result.returncode == 0, f"{command}: {result.stderr[-2000:]}"
    odenet_run = json.loads((tmp_path / "runs" / "odenet" / "summary.json").read_text())
    resnet_run = json.loads((tmp_path / "runs" / "resnet" / "summary.json").read_text())
    assert odenet_run["test"]["acc"] > 0.9 and resnet_run["test"]["acc"] > 0.9  # learns, in 3 epochs
    adjoint = json.loads((tmp_path / "runs" / "adjoint" / "summary.json").read_text())
    assert adjoint["train_last_epoch"]["act_mem_mb"] < 0.5 * odenet_run["train_last_epoch"]["act_mem_mb"]
    assert (tmp_path / "runs" / "odenet" / "sweep.json").is_file()
    assert (tmp_path / "runs" / "first-hour" / "report.html").is_file()


@pytest.mark.slow
def test_the_readmes_set_up_commands_work_on_a_fresh_copy(tmp_path):
    """`make demo` from nothing (a new .venv, pip included), then `make test`'s set-up (collecting the tests only:
    the suite itself is what runs this test). About 10 minutes on 2 cores; the timing is printed."""
    tree = tmp_path / "odenet"
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(".git", ".venv", "runs", "build", "site",
                                                              "__pycache__", "*.egg-info", ".pytest_cache"))
    started = time.perf_counter()
    demo = subprocess.Popen(["make", "demo"], cwd=tree, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first_line = demo.stdout.readline()
    first_after = time.perf_counter() - started
    out = first_line + demo.stdout.read()
    assert demo.wait(timeout=1800) == 0, out[-3000:]
    print(f"make demo: {time.perf_counter() - started:.0f} s in all; first line after {first_after:.1f} s")
    assert first_after < 60 and "setting up .venv" in first_line
    acc = {d.name: json.loads((d / "summary.json").read_text())["test"]["acc"]
           for d in (tree / "runs" / "demo").iterdir() if (d / "summary.json").is_file()}
    assert acc["resnet-s0"] >= 0.97 and acc["odenet-dopri5-tol0.001-direct-s0"] >= 0.97, acc
    collect = subprocess.run(["make", "test", "PYTEST_ADDOPTS=--collect-only -q"], cwd=tree, capture_output=True,
                             text=True, timeout=1200)
    # make test's own -q and this -q make pytest list a count per file ("tests/test_x.py: 12")
    counts = [int(n) for n in re.findall(r"^tests/\S+\.py: (\d+)$", collect.stdout, re.M)]
    assert collect.returncode == 0 and sum(counts) > 100, collect.stdout[-2000:]
