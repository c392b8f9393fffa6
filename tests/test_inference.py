"""odenet.load → predict: preprocessing, class names, each image's own NFE, and one sentence for bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import odenet
from conftest import make_mnist_folder
from odenet.cli import train_main
from odenet.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("inference")
    make_mnist_folder(root / "data" / "FashionMNIST" / "raw")
    for backbone in ("odenet", "resnet"):
        assert train_main(["--backbone", backbone, "--dataset", "fashion-mnist", "--data-dir", str(root / "data"),
                           "--epochs", "1", "--batch-size", "16", "--limit-train-batches", "2",
                           "--limit-test-batches", "1", "--out-dir", str(root), "--run-name", backbone,
                           "--no-progress"]) == 0
    return root


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (6, 28, 28), dtype=np.uint8)


def one_sentence(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and text.count(". ") == 0 and "Traceback" not in text, text
    return text


def test_a_checkpoint_classifies_images_with_its_class_names_and_each_images_nfe(runs, images):
    model = odenet.load(runs / "odenet" / "last.pt")
    assert model.class_names == FASHION and model.image_shape == (1, 28, 28)
    assert "odenet on fashion-mnist, dopri5 tol 0.001" in repr(model)
    p = model.predict(images)
    assert len(p) == 6 and p.probabilities.shape == (6, 10)
    assert torch.allclose(p.probabilities.sum(1), torch.ones(6))
    first = p[0]
    assert first.name == FASHION[first.label] and 0 < first.confidence <= 1
    assert [q.nfe_forward for q in p] == p.nfe_forward.tolist() and all(n >= 8 for n in p.nfe_forward.tolist())
    alone = [model.predict(image, per_image_nfe=False).nfe_forward.item() for image in images]
    assert p.nfe_forward.tolist() == alone  # per-image NFE: what the image costs solved by itself
    torch.testing.assert_close(model.predict(images.astype(np.float32) / 255).probabilities, p.probabilities)
    assert model.predict(images[0]).labels.shape == (1,) and model.predict(images[:, None]).labels.shape == (6,)


def test_the_tolerance_changes_the_nfe_and_a_resnet_has_none(runs, images):
    model = odenet.load(runs / "odenet" / "best.pt")
    loose = model.set_solver(tol=1e-1).predict(images).nfe_forward
    tight = model.set_solver(tol=1e-6).predict(images).nfe_forward
    assert (tight >= loose).all() and tight.sum() > loose.sum()
    resnet = odenet.load(runs / "resnet" / "last.pt")
    assert resnet.predict(images).nfe_forward is None
    assert resnet.predict(images)[0].nfe_forward is None
    with pytest.raises(UserError) as exc:
        resnet.set_solver(tol=1e-3)
    assert "no ODE block" in one_sentence(exc.value)


@pytest.mark.parametrize("bad, expected", [
    (np.zeros((3, 28), np.uint8),
     "images shaped (3, 28) do not fit this fashion-mnist model, which takes (N, 1, 28, 28)"),
    (np.zeros((2, 28, 28, 1), np.uint8), "images shaped (2, 28, 28, 1)"),
    (np.zeros((2, 3, 28, 28), np.uint8), "images shaped (2, 3, 28, 28)"),
    (np.zeros((2, 28, 28), np.int64), "images of dtype torch.int64 cannot be read as pixels"),
    (np.full((2, 28, 28), 255.0, np.float32), "float images must hold pixels in [0, 1]"),
    (np.full((2, 28, 28), np.nan, np.float32), "float images must hold pixels in [0, 1]"),
])
def test_images_the_model_cannot_take_get_one_sentence(runs, bad, expected):
    model = odenet.load(runs / "odenet" / "last.pt")
    with pytest.raises(UserError) as exc:
        model.predict(bad)
    assert expected in one_sentence(exc.value)
    assert exc.value.__suppress_context__ or exc.value.__context__ is None  # nothing from deep inside torch


def test_a_missing_or_damaged_checkpoint_gets_one_sentence(runs, tmp_path):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((runs / "odenet" / "last.pt").read_bytes()[:5000])
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    for path, expected in ((tmp_path / "missing.pt", "does not exist"), (truncated, "truncated or corrupt"),
                           (foreign, "is not an odenet checkpoint"), (text, "is not a checkpoint")):
        with pytest.raises(UserError) as exc:
            odenet.load(path)
        assert str(path) in one_sentence(exc.value) and expected in str(exc.value)


def test_weights_that_do_not_fit_their_config_get_one_sentence(runs, tmp_path):
    state = torch.load(runs / "odenet" / "last.pt", weights_only=True)
    state["config"]["backbone"] = "resnet"  # the weights of an ODE-Net under a ResNet's name
    state["config"]["solver"] = state["config"]["tol"] = state["config"]["rtol"] = state["config"]["atol"] = None
    for key in ("adjoint", "seminorm", "max_num_steps", "t1", "kinetic_reg", "jacobian_reg", "error_reg", "steer",
                "augment_dim", "first_step", "fast_rk"):
        state["config"][key] = None
    torch.save(state, tmp_path / "mixed.pt")
    with pytest.raises(UserError) as exc:
        odenet.load(tmp_path / "mixed.pt")
    assert "does not fit the model" in one_sentence(exc.value)


def test_the_own_model_example_runs():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "own_model.py")], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    first, second = result.stdout.splitlines()
    assert first.startswith("forward NFE ") and second.startswith("at tol 1e-5: forward NFE ")
    assert int(second.split()[-1]) > int(first.split()[2].rstrip(","))


@pytest.mark.slow
def test_the_tolerance_walk_example_runs(tmp_path):
    """examples/nfe_vs_tolerance.py end to end (about 2-5 minutes on 2 cores; .ci/run runs it too)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "nfe_vs_tolerance.py"), str(tmp_path)],
                            capture_output=True, text=True, env=env, timeout=900, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    table = [line.split() for line in result.stdout.splitlines() if line.split()[:1] in (["0.1"], ["1e-05"])]
    assert len(table) == 2 and float(table[0][2]) < float(table[1][2])  # mean NFE grows as the tolerance tightens
    assert float(table[1][1]) > 0.8  # two epochs of mnist-5k learn
