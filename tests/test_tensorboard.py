"""TensorBoard as users see it: a real server, queried through its HTTP data API (the tabs themselves are
looked at in a browser: docs/tensorboard.md), and the views' numbers against the report's."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import make_mnist_folder
from odenet.cli import eval_main, report_main, train_main
from odenet.reports import find_runs
from odenet.run.tensorboard import (FILL, METRICS, SWEEP, epoch_means, hparam_values, sweep_points, tables_as_text,
                                    text_summary, tol_text, trial_names)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def train(out: Path, data: Path, backbone: str, name: str, *extra: str) -> None:
    assert train_main(["--backbone", backbone, "--dataset", "fashion-mnist", "--data-dir", str(data), "--epochs", "2",
                       "--batch-size", "32", "--test-batch-size", "32", "--limit-train-batches", "2",
                       "--limit-test-batches", "1", "--out-dir", str(out), "--run-name", name, "--no-progress",
                       *extra]) == 0


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory) -> Path:
    """A ResNet, a plain ODE-Net and an RNODE one, swept and reported twice (as a re-run grid would)."""
    root = tmp_path_factory.mktemp("tensorboard")
    data, out = root / "data", root / "runs"
    make_mnist_folder(data / "FashionMNIST" / "raw")
    train(out, data, "resnet", "resnet")
    train(out, data, "odenet", "plain", "--adjoint")
    train(out, data, "odenet", "rnode", "--kinetic-reg", "0.01", "--jacobian-reg", "0.01")
    for _ in range(2):  # a second sweep and report replace the first ones' text
        assert eval_main(["--checkpoint", str(out / "rnode" / "last.pt"), "--tols", "1e-1,1e-2,1e-4",
                          "--limit-test-batches", "1", "--timing-repeats", "1"]) == 0
        assert report_main([str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def tensorboard(three_runs):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(three_runs), "--host",
                             "127.0.0.1", "--port", str(port), "--load_fast", "false"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                if set(get(f"{base}/data/runs")) >= {"resnet", "plain", "rnode", "_report"}:
                    break
            except OSError:
                pass
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read().decode()[-2000:])
            time.sleep(0.5)
        else:
            raise TimeoutError("tensorboard did not list the runs within 60 s")
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_every_backbone_shares_the_scalar_tags_and_the_epoch_means_equal_the_reports(tensorboard, three_runs):
    tags = get(f"{tensorboard}/data/plugin/scalars/tags")
    assert {"train/acc", "train/act_mem_mb", "test/acc", "train_epoch/acc", "train_epoch/time_epoch_s"} <= set(
        tags["resnet"])
    assert {"train/nfe_forward", "train_epoch/nfe_forward", "train_epoch/nfe_backward"} <= set(tags["plain"])
    assert f"{SWEEP}/acc vs nfe_forward" in tags["rnode"] and "train_epoch/reg_kinetic" in tags["rnode"]
    for run in find_runs([three_runs]):
        query = urllib.parse.urlencode({"run": run.name, "tag": "train_epoch/nfe_forward"})
        if run.is_ode:
            series = get(f"{tensorboard}/data/plugin/scalars/scalars?{query}")
            assert len(series) == 2  # one point an epoch, at the epoch's test step
            assert series[-1][2] == pytest.approx(run.last_epoch_means()["nfe_forward"], rel=1e-6)


def test_hparams_show_every_run_with_short_names_and_the_columns_that_differ(tensorboard):
    experiment = get(f"{tensorboard}/data/plugin/hparams/experiment", {"experimentName": ""})
    ticked = [h["name"] for h in experiment["hparamInfos"] if h.get("differs")]
    # method and adjoint vary; TensorBoard shows five columns, the rest say what the runs share
    assert ticked[:2] == ["adjoint", "method"] or {"adjoint", "method"} <= set(ticked)
    assert len(ticked) == 5 and set(ticked) - {"adjoint", "method"} <= set(FILL)
    assert {"kinetic_reg", "jacobian_reg", "steer", "error_reg", "augment_dim", "first_step"} <= {
        h["name"] for h in experiment["hparamInfos"]}
    metrics = [m["name"]["tag"] for m in experiment["metricInfos"]]
    assert metrics == [tag for tag, _, _ in METRICS] and metrics[0] == "test/acc"
    names = [m["displayName"] for m in experiment["metricInfos"]]
    assert names[0] == "test acc (32 images)" and names[1] == "train time/epoch s (batch 32)"
    groups = get(f"{tensorboard}/data/plugin/hparams/session_groups",
                 {"experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS"],
                  "colParams": [], "startIndex": 0, "sliceSize": 10})
    hparams = {g["name"]: g["hparams"] for g in groups["sessionGroups"]}
    assert set(hparams) == {"resnet", "plain adj", "RNODE"}  # trial names: the method, then what tells apart
    assert hparams["resnet"]["tol"] == "none" and hparams["resnet"]["kinetic_reg"] == 0  # kept in every view
    assert hparams["RNODE"]["method"] == "kin0.01+jac0.01" and hparams["plain adj"]["tol"] == "1e-03"
    assert hparams["plain adj"]["batch_size"] == "32"  # an integer reads "32", not TensorBoard's "32.000"
    values = {g["name"]: {m["name"]["tag"]: m["value"] for m in g["metricValues"]} for g in groups["sessionGroups"]}
    assert set(values["resnet"]) >= {tag for tag, _, _ in METRICS[:5]}  # the shown metrics: every run has them


def test_custom_scalars_hold_one_quantity_a_chart_and_no_empty_chart(tensorboard):
    layout = get(f"{tensorboard}/data/plugin/custom_scalars/layout")
    titles = [c["title"] for c in layout["category"]]
    assert titles[:2] == ["Accuracy", "Loss"] and any(t.startswith("Test-time sweep") for t in titles)
    tags = get(f"{tensorboard}/data/plugin/scalars/tags")
    present = {tag for run in tags.values() for tag in run}
    for category in layout["category"]:
        for chart in category["chart"]:
            (pattern,) = chart["multiline"]["tag"]  # one tag, anchored: test/nfe_forward without _min and _max
            assert pattern.startswith("^") and pattern.endswith("$"), chart["title"]
            assert any(__import__("re").fullmatch(pattern, tag) for tag in present), chart["title"]
            if category["title"] == "Accuracy":
                assert "acc" in chart["title"] and "loss" not in chart["title"]
    assert "(32 images, batch 32, 1 seed)" in layout["category"][0]["chart"][0]["title"]


def test_each_report_and_sweep_text_is_there_once(tensorboard, three_runs):
    text = get(f"{tensorboard}/data/plugin/text/tags")
    assert text["_report"] == ["report"] and text["rnode"] == ["sweep"]
    for run, tag in (("_report", "report"), ("rnode", "sweep")):
        query = urllib.parse.urlencode({"run": run, "tag": tag})
        entries = get(f"{tensorboard}/data/plugin/text/text?{query}")
        assert len(entries) == 1, (run, len(entries))  # the second sweep and report replaced the first
        assert "report.html" in entries[0]["text"] and "<pre>" in entries[0]["text"]
    (entry,) = get(f"{tensorboard}/data/plugin/text/text?run=_report&tag=report")
    assert "complete, smoke" in entry["text"]  # the status the report gives these runs, nowhere another
    assert get(f"{tensorboard}/data/plugin/images/tags") == {}  # the Time Series tab opens on the scalars


def test_a_running_run_has_its_view_with_the_epoch_means_as_they_come(tiny_fashion, tmp_path):
    train(tmp_path, tiny_fashion, "odenet", "x")
    events = EventAccumulator(str(tmp_path / "x")).Reload()
    assert [e.step for e in events.Scalars("train_epoch/nfe_forward")] == [2, 4]
    (run,) = find_runs([tmp_path / "x"])
    assert events.Scalars("train_epoch/act_mem_mb")[-1].value == pytest.approx(run.last_epoch_means()["act_mem_mb"])
    assert "_hparams_/session_end_info" in events.PluginTagToContent("hparams")


def test_epoch_means_are_the_reports_last_epoch_means_and_sum_the_epochs_time():
    rows = [{"split": "train", "epoch": 1, "step": s, "acc": 0.1 * s, "time_step_ms": 100.0, "lr": 0.1}
            for s in (1, 2)] + [{"split": "test", "epoch": 1, "step": 2, "acc": 0.5},
                                {"split": "train", "epoch": 2, "step": 3, "acc": 0.9, "time_step_ms": 50.0}]
    assert epoch_means(rows) == [(2, {"acc": pytest.approx(0.15), "time_step_ms": 100.0, "time_epoch_s": 0.2})]


def test_sweep_points_put_nfe_and_tolerance_on_the_x_axis():
    rows = [{"solver": "dopri5", "tol": tol, "acc": acc, "nfe_forward": nfe, "act_mem_mb": mem, "time_ms": 1.0}
            for tol, acc, nfe, mem in ((1e-1, 0.8, 14.0, 10.0), (1e-2, 0.85, 20.0, 12.0), (1e-3, 0.86, 20.0, 12.5),
                                       (3e-4, 0.86, 26.0, 15.0))]
    curves = sweep_points(rows + [{"solver": "rk4", "tol": None, "steps": 4, "acc": 0.7, "nfe_forward": 16.0}])
    assert curves[f"{SWEEP}/acc vs nfe_forward"] == [(14, 0.8), (20, 0.86), (26, 0.86)]  # equal NFE: the tighter tol
    assert curves[f"{SWEEP}/nfe_forward vs tol 1e-k"] == [(1, 14.0), (2, 20.0), (3, 20.0)]  # 3e-4 is not 1e-k


def test_trial_names_are_the_method_and_only_what_tells_runs_apart():
    base = {"backbone": "odenet", "solver": "dopri5", "rtol": 1e-3, "adjoint": False, "seed": 0, "dataset": "mnist"}
    configs = [{"backbone": "resnet", "seed": 0}, base, {**base, "kinetic_reg": 0.01, "jacobian_reg": 0.01},
               {**base, "steer": 0.5}, {**base, "first_step": "reuse"}, {**base, "augment_dim": 8},
               {**base, "error_reg": 0.01}]
    assert trial_names(configs) == ["resnet", "plain", "RNODE", "STEER", "reuse", "ANODE", "ERNODE"]
    seeds = [base, {**base, "seed": 1}, {**base, "rtol": 1e-5}]
    assert trial_names(seeds) == ["plain 1e-03 s0", "plain 1e-03 s1", "plain 1e-05 s0"]
    weights = [{**base, "kinetic_reg": 0.01}, {**base, "kinetic_reg": 0.1}]
    assert trial_names(weights) == ["RNODE kin0.01", "RNODE kin0.1"]


def test_hparam_values_record_every_setting_for_every_run():
    values = hparam_values({"backbone": "resnet", "solver": None, "rtol": None, "adjoint": None, "seed": 0,
                            "batch_size": 32, "lr": 0.1})
    assert values["method"] == "resnet" and values["tol"] == values["adjoint"] == values["solver"] == "none"
    assert values["seed"] == "0" and values["batch_size"] == "32" and values["lr"] == 0.1
    assert values["kinetic_reg"] == 0.0 and values["augment_dim"] == "none"
    assert [tol_text({"solver": "dopri5", "rtol": t}) for t in (1e-3, 1e-5, 2.5e-4)] == ["1e-03", "1e-05", "0.00025"]


def test_report_tables_become_aligned_monospace_blocks():
    md = "intro\n\n| run | test acc |\n|---|---|\n| `resnet` | 0.97 |\n| `odenet dopri5` | — |\n\nafter"
    assert tables_as_text(md).splitlines() == ["intro", "", "```", "run            test acc",
                                               "-------------  --------", "resnet         0.97",
                                               "odenet dopri5  —", "```", "", "after"]
    (value,) = text_summary("report", "x").value
    assert value.tag == "report" and value.metadata.plugin_data.plugin_name == "text"
