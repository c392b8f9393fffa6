"""The issues' acceptance runs, on the real data this machine has. Slow: run with ``-m slow``."""

from __future__ import annotations

import subprocess
import sys
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
    # the summary table's header; the trainer's own "run <dir> | ..." lines come before it
    start = next(i for i, line in enumerate(lines) if line.split()[:3] == ["run", "test", "acc"]) + 2
    table = lines[start:start + 5]
    assert table[0].startswith("stem-only") and table[1].startswith("resnet")
    assert "direct" in table[2] and "adjoint" in table[3] and "kinetic" in table[4]
    report = (tmp_path / "demo" / "report.md").read_text()
    assert "Table 1 (Chen et al. 2018)" in report and "fig3c_nfe_forward_vs_backward.png" in report
    assert (tmp_path / "demo" / "report.html").stat().st_size > 50_000
