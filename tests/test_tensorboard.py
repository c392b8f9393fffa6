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
from odenet.reports import combined_report, find_runs, write_report
from odenet.run.tensorboard import SHOWN_HPARAMS, write_report as write_tensorboard_report


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
    report = combined_report(find_runs([out]))  # as the grid does: report files, then TensorBoard's text
    write_report(report, out)
    write_tensorboard_report(report, str(out / "_report"), "report")
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
                if set(get(f"{base}/data/runs")) >= {"resnet", "odenet", "_report"}:
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
    metrics = [m["name"]["tag"] for m in experiment["metricInfos"]]
    assert {"test/acc", "train/nfe_forward", "train/nfe_backward", "train/act_mem_mb", "test/time_ms"} <= set(metrics)
    # TensorBoard's table shows the first five metrics and the first five hparams that `differ`:
    assert metrics[:5] == ["test/acc", "train/time_step_ms", "train/nfe_forward", "train/nfe_backward",
                           "train/act_mem_mb"]
    shown = [h["name"] for h in experiment["hparamInfos"] if h.get("differs")]
    assert sorted(shown) == sorted(SHOWN_HPARAMS) == ["adjoint", "backbone", "seed", "solver", "tol"]
    types = {h["name"]: h["type"] for h in experiment["hparamInfos"]}
    assert types["batch_size"] == types["seed"] == "DATA_TYPE_STRING" and types["tol"] == "DATA_TYPE_FLOAT64"
    domains = {h["name"]: h.get("domainDiscrete") for h in experiment["hparamInfos"]}
    assert {"resnet", "odenet"} <= set(domains["backbone"]) and domains["adjoint"] == ["false", "true"]
    groups = get(f"{tensorboard}/data/plugin/hparams/session_groups",
                 {"experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS"],
                  "colParams": [], "startIndex": 0, "sliceSize": 10})
    hparams = {g["name"]: g["hparams"] for g in groups["sessionGroups"]}
    by_backbone = {h["backbone"]: h for h in hparams.values()}
    assert set(by_backbone) == {"resnet", "odenet"}
    assert by_backbone["odenet"]["adjoint"] == "true" and by_backbone["odenet"]["tol"] == 1e-3
    assert by_backbone["odenet"]["batch_size"] == "32"  # an integer reads "32", not TensorBoard's "32.000"
    assert "tol" not in by_backbone["resnet"]


def test_custom_scalars_layout_groups_the_charts(tensorboard):
    layout = get(f"{tensorboard}/data/plugin/custom_scalars/layout")
    titles = [c["title"] for c in layout["category"]]
    assert sorted(titles) == ["Accuracy", "Memory", "NFE", "Time"]
    for category in layout["category"]:  # one idea per chart: one tag, so train and test never share a chart
        for chart in category["chart"]:
            assert len(chart["multiline"]["tag"]) == 1, chart["title"]


def test_report_is_text_under_its_own_tag_and_adds_no_images(tensorboard):
    assert get(f"{tensorboard}/data/plugin/text/tags") == {"_report": ["report"]}
    assert get(f"{tensorboard}/data/plugin/images/tags") == {}  # the Time Series tab opens on the scalars
    (entry,) = get(f"{tensorboard}/data/plugin/text/text?run=_report&tag=report")
    assert "report.html" in entry["text"] and "<pre>" in entry["text"] and "<th>" not in entry["text"]


def test_report_tables_become_aligned_monospace_blocks():
    from odenet.run.tensorboard import tables_as_text, text_summary

    md = "intro\n\n| run | test acc |\n|---|---|\n| `resnet` | 0.97 |\n| `odenet dopri5` | — |\n\nafter"
    assert tables_as_text(md).splitlines() == ["intro", "", "```", "run            test acc",
                                               "-------------  --------", "resnet         0.97",
                                               "odenet dopri5  —", "```", "", "after"]
    (value,) = text_summary("report", "x").value
    assert value.tag == "report" and value.metadata.plugin_data.plugin_name == "text"


def test_hparam_values_record_integers_as_text_and_leave_out_what_does_not_apply():
    from odenet.run.tensorboard import hparam_values

    values = hparam_values({"backbone": "resnet", "solver": None, "rtol": None, "adjoint": False, "seed": 0,
                            "batch_size": 32, "lr": 0.1})
    assert values == {"backbone": "resnet", "adjoint": "false", "seed": "0", "batch_size": "32", "lr": 0.1}
