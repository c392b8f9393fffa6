"""TensorBoard as users see it: a real server, queried through its HTTP data API."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from odenet.cli import train_main


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def two_runs(tiny_fashion, tmp_path) -> Path:
    out = tmp_path / "runs"
    for backbone, extra in (("resnet", []), ("odenet", ["--adjoint"])):
        assert train_main(["--backbone", backbone, "--dataset", "fashion-mnist", "--data-dir", str(tiny_fashion),
                           "--epochs", "1", "--batch-size", "32", "--test-batch-size", "32",
                           "--limit-train-batches", "2", "--limit-test-batches", "1", "--out-dir", str(out),
                           "--run-name", backbone, "--no-progress", *extra]) == 0
    return out


@pytest.fixture
def tensorboard(two_runs):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(two_runs), "--host",
                             "127.0.0.1", "--port", str(port), "--load_fast", "false"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                if set(get(f"{base}/data/runs")) >= {"resnet", "odenet"}:
                    break
            except OSError:
                pass
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read().decode()[-2000:])
            time.sleep(0.5)
        else:
            raise TimeoutError("tensorboard did not list both runs within 60 s")
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_both_backbones_share_scalar_tags(tensorboard):
    tags = get(f"{tensorboard}/data/plugin/scalars/tags")
    assert {"train/acc", "train/act_mem_mb", "test/acc", "train/time_step_ms"} <= set(tags["resnet"])
    assert {"train/acc", "train/nfe_forward", "train/nfe_backward", "test/acc"} <= set(tags["odenet"])
    series = get(f"{tensorboard}/data/plugin/scalars/scalars?run=odenet&tag=train/nfe_backward")
    assert len(series) == 2 and all(point[2] > 0 for point in series)


def test_hparams_table_lists_both_runs(tensorboard):
    experiment = get(f"{tensorboard}/data/plugin/hparams/experiment", {"experimentName": ""})
    names = {h["name"] for h in experiment["hparamInfos"]}
    assert {"backbone", "dataset", "solver", "tol", "adjoint", "seed"} <= names
    metrics = {m["name"]["tag"] for m in experiment["metricInfos"]}
    assert {"test/acc", "train/nfe_forward", "train/nfe_backward", "train/act_mem_mb", "test/time_ms"} <= metrics
    groups = get(f"{tensorboard}/data/plugin/hparams/session_groups",
                 {"experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS"],
                  "colParams": [], "startIndex": 0, "sliceSize": 10})
    hparams = {g["name"]: g["hparams"] for g in groups["sessionGroups"]}
    by_backbone = {h["backbone"]: h for h in hparams.values()}
    assert set(by_backbone) == {"resnet", "odenet"}
    assert by_backbone["odenet"]["adjoint"] == "true" and by_backbone["odenet"]["tol"] == 1e-3
    assert "tol" not in by_backbone["resnet"]


def test_custom_scalars_layout_groups_the_charts(tensorboard):
    layout = get(f"{tensorboard}/data/plugin/custom_scalars/layout")
    titles = [c["title"] for c in layout["category"]]
    assert sorted(titles) == ["Accuracy", "Memory", "NFE", "Time"]
