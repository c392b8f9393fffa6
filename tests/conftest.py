"""Shared fixtures: tiny datasets written in the real on-disk formats, independently of odenet's readers."""

from __future__ import annotations

import gzip
import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

REAL_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def snapshot(folder: Path) -> dict[Path, tuple[str, int]]:
    """Each file under ``folder``: (sha256, mtime), to check that a refusal changed nothing."""
    return {p: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_one_sentence(code: int, err: str, *fragments: str, exit_code: int = 2) -> None:
    """A refusal as users see it: exit ``exit_code``, one line starting "error: ", no traceback."""
    assert code == exit_code, err
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("error: "), err
    for fragment in fragments:
        assert fragment in err, err


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    """Write an IDX ubyte file as LeCun's spec describes (magic 0x0000 08 ndim, big-endian dims)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def make_mnist_folder(folder: Path, n_train: int = 256, n_test: int = 64, seed: int = 0,
                      compress: bool = True) -> dict[str, np.ndarray]:
    """Four IDX files of random 28×28 digits with labels 0..9 in ``folder``."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(n_train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.arange(n_test, dtype=np.uint8) % 10,
    }
    for name, array in arrays.items():
        write_idx(folder / name, array, compress)
    return arrays


def write_cifar_batch(path: Path, images: np.ndarray, labels: np.ndarray, label_key: str) -> None:
    """A CIFAR python batch as the archives hold it: bytes keys, (N, 3072) uint8 rows, list of labels."""
    batch = {b"batch_label": b"test batch", label_key.encode(): labels.tolist(),
             b"data": images.reshape(len(images), -1), b"filenames": [b"x.png"] * len(images)}
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        pickle.dump(batch, fh, protocol=2)


def make_cifar10_folder(root: Path, per_batch: int = 20, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        write_cifar_batch(folder / name, rng.integers(0, 256, (per_batch, 3, 32, 32), dtype=np.uint8),
                          np.arange(per_batch) % 10, "labels")
    return folder


def make_cifar100_folder(root: Path, n_train: int = 50, n_test: int = 20, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    for name, n in (("train", n_train), ("test", n_test)):
        write_cifar_batch(folder / name, rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8),
                          np.arange(n) % 100, "fine_labels")
    return folder


@pytest.fixture
def data_root(tmp_path, monkeypatch) -> Path:
    """An empty data root; $ODENET_DATA and ./data cannot leak in from the machine."""
    monkeypatch.delenv("ODENET_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "datasets"
    root.mkdir()
    return root


@pytest.fixture
def tiny_fashion(data_root) -> Path:
    """A 256/64-image Fashion-MNIST in torchvision's layout (ROOT/FashionMNIST/raw/*.gz)."""
    make_mnist_folder(data_root / "FashionMNIST" / "raw")
    return data_root


@pytest.fixture
def one_thread():
    """Tiny models (the dynamics experiments): a second intra-op thread only adds synchronisation,
    and on a busy 2-core machine makes a step 5-10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.set_num_threads(min(2, torch.get_num_threads()))
    yield
