"""eval.py --per-sample: per_sample.csv against batch-of-1 solves, its report figures, tax and TensorBoard."""

from __future__ import annotations

import contextlib
import csv
import io

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from odenet.cli import eval_main, train_main
from odenet.models.ode import set_solver
from odenet.reports.per_sample_report import (PER_SAMPLE_COLUMNS, batching_tax, by_setting, figures, nfe_bins,
                                       read_per_sample_csv, spearman)
from odenet.run.checkpoint import load_checkpoint

from conftest import make_cifar10_folder

TOLS = (1e-1, 1e-3)


def train(tmp_path, *extra: str):
    argv = ["--epochs", "1", "--limit-train-batches", "1", "--limit-test-batches", "1", "--out-dir",
            str(tmp_path / "runs"), "--run-name", "tiny", "--no-progress", "--tol", "1e-1", *extra]
    assert train_main(argv) == 0
    return tmp_path / "runs" / "tiny"


def evaluate(run, *extra: str):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = eval_main(["--checkpoint", str(run / "last.pt"), "--tols", "1e-1,1e-3", "--limit-test-batches", "1",
                          "--timing-repeats", "1", "--timing-warmup", "0", "--reference-images", "2",
                          "--per-sample", *extra])
    assert code == 0
    (run / "eval.out").write_text(printed.getvalue())
    return read_per_sample_csv(run / "per_sample.csv")


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("per_sample")
    run = train(tmp, "--backbone", "odenet", "--dataset", "mnist-5k", "--batch-size", "16", "--test-batch-size", "16")
    return run, evaluate(run)


def batch_of_one_counts(run, tol: float, images: list[int]) -> dict[int, tuple[int, int, int]]:
    """(nfe_forward, accepted, rejected) of each image solved alone by the checkpoint's ODE blocks (ODEBlock)."""
    from odenet.data import build_loaders
    from odenet.train.config import saved_train_config
    from odenet.models.ode import read_nfe, reset_nfe
    from odenet.train.build import build_model

    state = load_checkpoint(str(run / "last.pt"), map_location="cpu")
    cfg = saved_train_config(state, str(run / "last.pt"))
    data = build_loaders(cfg.dataset, batch_size=cfg.batch_size, test_batch_size=cfg.test_batch_size,
                         data_dir=None)
    model = build_model(cfg, data)
    model.load_state_dict(state["model"])
    model.eval()
    set_solver(model, method="dopri5", rtol=tol, atol=tol)
    x = next(iter(data.test))[0]
    out = {}
    with torch.no_grad():
        for i in images:
            reset_nfe(model)
            model(x[i: i + 1])
            s = read_nfe(model)
            out[i] = (s["nfe_forward"], s["steps_accepted"], s["steps_rejected"])
    return out


def test_per_sample_csv_has_one_row_per_image_and_tolerance(mnist_run):
    run, rows = mnist_run
    with (run / "per_sample.csv").open() as fh:
        assert tuple(csv.DictReader(fh).fieldnames) == PER_SAMPLE_COLUMNS  # one block: no per-block columns
    groups = by_setting(rows)
    assert list(groups) == [("dopri5", t) for t in TOLS]
    sweep = {r["tol"]: r for r in csv.DictReader((run / "sweep.csv").open())}
    for (_, tol), g in groups.items():
        assert [r["index"] for r in g] == list(range(16))
        assert all(r["batch_size"] == 16 and r["batch"] == 0 for r in g)
        # one batch: the sweep's mean NFE per batch is that batch's NFE, which every image of it shares
        assert {r["nfe_forward_batched"] for r in g} == {float(sweep[str(tol)]["nfe_forward"])}
        for r in g:
            assert r["nfe_forward"] == 2 + 6 * (r["steps_accepted"] + r["steps_rejected"])
            assert r["correct"] == (r["label"] == r["pred"]) and 0.1 <= r["confidence"] <= 1.0
    assert np.mean([r["nfe_forward"] for r in groups[("dopri5", 1e-3)]]) > np.mean(
        [r["nfe_forward"] for r in groups[("dopri5", 1e-1)]])


def test_each_images_nfe_equals_its_batch_of_one_solve(mnist_run):
    run, rows = mnist_run
    flips, checked = 0, 0
    for tol in TOLS:
        alone = batch_of_one_counts(run, tol, [0, 5, 10, 15])
        for r in (r for r in rows if r["tol"] == tol and r["index"] in alone):
            checked += 1
            # float32: a batched convolution rounds differently, so a borderline accept/reject may flip
            flips += (r["nfe_forward"], r["steps_accepted"], r["steps_rejected"]) != alone[r["index"]]
    assert checked == 8 and flips <= 1, f"{flips} of {checked} per-image counts differ from batch-of-1 solves"


def test_report_figures_plot_the_csv_values(mnist_run):
    run, rows = mnist_run
    groups = by_setting(rows)
    figs = figures(rows)
    hist = figs["per_sample_nfe_hist"].axes[0]
    for container, g in zip(hist.containers, groups.values()):
        heights = [p.get_height() for p in container]
        edges = [p.get_x() for p in container] + [container[-1].get_x() + container[-1].get_width()]
        assert heights == list(np.histogram([r["nfe_forward"] for r in g], bins=edges)[0])
    scatter = figs["per_sample_nfe_vs_confidence"].axes[0]
    for coll, g in zip(scatter.collections, groups.values()):
        assert np.allclose(coll.get_offsets(), [[r["confidence"], r["nfe_forward"]] for r in g])
    assert len(scatter.collections) == 2 and "Spearman" in scatter.get_legend().get_texts()[0].get_text()
    acc_line = figs["per_sample_acc_by_nfe"].axes[0].lines[0]
    assert list(acc_line.get_ydata()) == [b["acc"] for b in nfe_bins(groups[("dopri5", 1e-1)])]
    md = (run / "report.md").read_text()
    assert "Per-sample evaluation" in md and "per_sample_gallery_dopri5_tol0.1.png" in md
    assert (run / "per_sample_gallery_dopri5_tol0.1.png").is_file()
    with np.load(run / "per_sample_images.npz") as data:
        assert data["images"].shape == (16, 28, 28, 1) and list(data["index"]) == list(range(16))


def test_batching_tax_is_the_csv_means_and_is_printed(mnist_run):
    run, rows = mnist_run
    import json

    timing = json.loads((run / "per_sample.json").read_text())["timing"]
    for t in batching_tax(rows, timing):
        g = [r for r in rows if r["tol"] == t["tol"]]
        alone, batched = np.mean([r["nfe_forward"] for r in g]), np.mean([r["nfe_forward_batched"] for r in g])
        assert t["tax"] == pytest.approx(1 - alone / batched) and t["images"] == 16
        assert t["throughput_ratio"] > 0
        assert f"| {100 * t['tax']:.1f}% |" in (run / "report.md").read_text()
        assert (f"tol {t['tol']:g} (16 images, batch 16): mean NFE per image {alone:.2f} alone vs {batched:.2f} "
                f"batched, batching tax {100 * t['tax']:.1f}%") in (run / "eval.out").read_text()
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)


def test_tensorboard_has_one_histogram_step_per_tolerance(mnist_run):
    run, rows = mnist_run
    acc = EventAccumulator(str(run), size_guidance={"histograms": 0}).Reload()
    events = acc.Histograms("sample/nfe_forward")
    assert [e.step for e in events] == [0, 1]
    for e, tol in zip(events, TOLS):
        nfe = [r["nfe_forward"] for r in rows if r["tol"] == tol]
        assert e.histogram_value.num == 16 and e.histogram_value.sum == pytest.approx(sum(nfe))


def test_odenet18_counts_per_block_and_sums_them(tmp_path, monkeypatch):
    monkeypatch.delenv("ODENET_DATA", raising=False)
    make_cifar10_folder(tmp_path / "data", per_batch=8)
    run = train(tmp_path, "--backbone", "odenet18", "--dataset", "cifar10", "--data-dir", str(tmp_path / "data"),
                "--batch-size", "4", "--test-batch-size", "4")
    rows = evaluate(run)
    blocks = [k.split("/", 1)[1] for k in rows[0] if k.startswith("nfe_forward/")]
    assert len(blocks) == 4
    assert len(rows) == 2 * 4
    for r in rows:
        assert r["nfe_forward"] == sum(r[f"nfe_forward/{b}"] for b in blocks)
        assert r["nfe_forward_batched"] == sum(r[f"nfe_forward_batched/{b}"] for b in blocks)
        assert all((r[f"nfe_forward/{b}"] - 2) % 6 == 0 for b in blocks)
