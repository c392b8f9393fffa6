"""DataLoaders over in-memory splits, with batch-level augmentation and seeded order."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from odenet.data.augment import normalize, random_crop, random_hflip
from odenet.data.datasets import DatasetSpec, Loaded, Split, get_dataset_spec
from odenet.data.formats import DataFileError


class InMemoryImages(Dataset):
    """A :class:`Split` as a map-style dataset that also fetches whole batches at once.

    ``__getitems__`` lets the DataLoader take a batch with one indexing op instead of
    ``batch_size`` Python calls; the collate function then augments the batch as a tensor.
    """

    def __init__(self, split: Split) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.split.images[index], self.split.labels[index]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices)
        return self.split.images[idx], self.split.labels[idx]


class BatchTransform:
    """Collate function: (uint8 images, labels) → (normalised float images, labels), augmenting when training.

    Augmentation draws from the transform's own generator, never torch's global one, so the
    batches depend on the loader's seed alone: :class:`SeededLoader` reseeds it from the
    loader's generator at the start of every epoch, and a worker process reseeds its copy
    with the per-worker seed the DataLoader derives from that same generator.
    """

    def __init__(self, spec: DatasetSpec, train: bool) -> None:
        self.spec = spec
        self.train = train
        self.generator = torch.Generator()
        self._worker_seed: int | None = None

    def reseed(self, seed: int) -> None:
        self.generator.manual_seed(seed)

    def _rng(self) -> torch.Generator:
        info = get_worker_info()
        if info is not None and self._worker_seed != info.seed:
            self._worker_seed = info.seed
            self.generator.manual_seed(info.seed)
        return self.generator

    def __call__(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = batch  # (B, C, H, W) uint8, (B,) int64
        if self.train:
            rng = self._rng()
            images = random_crop(images, self.spec.crop_padding, rng)
            if self.spec.hflip:
                images = random_hflip(images, rng)
        return normalize(images, self.spec.mean, self.spec.std), labels


class SeededLoader(DataLoader):
    """A DataLoader whose every random choice (order and augmentation) follows ``generator``.

    Saving ``generator.get_state()`` before an epoch is therefore enough to replay it.
    Workers are re-created every epoch (not persistent) so that they too are reseeded from
    the epoch's draw.
    """

    def __iter__(self):
        if isinstance(self.collate_fn, BatchTransform):
            self.collate_fn.reseed(int(torch.randint(0, 2 ** 62, (), generator=self.generator)))
        return super().__iter__()


@dataclass
class DataBundle:
    spec: DatasetSpec
    train: DataLoader
    test: DataLoader
    source: str
    train_size: int
    test_size: int


def check_split(spec: DatasetSpec, split: Split, where: str) -> None:
    """Fail with one sentence if loaded data do not look like the dataset they claim to be."""
    expected = (spec.channels, spec.image_size, spec.image_size)
    if tuple(split.images.shape[1:]) != expected:
        raise DataFileError(f"{where} holds images of shape {tuple(split.images.shape[1:])}, but {spec.name} "
                            f"images are {expected}; check that the files belong to {spec.name}")
    if len(split) and (split.labels.min() < 0 or split.labels.max() >= spec.num_classes):
        raise DataFileError(f"{where} holds labels outside 0..{spec.num_classes - 1}; check that the files belong "
                            f"to {spec.name}")


def build_loaders(name: str, *, batch_size: int, test_batch_size: int | None = None, workers: int = 0,
                  seed: int = 0, data_dir: Path | None = None, download: bool = False,
                  pin_memory: bool = False) -> DataBundle:
    """Load a registered dataset and wrap it in training and test loaders.

    The training loader shuffles with a generator seeded by ``seed`` (same seed → same
    batches, including worker-side augmentation) and drops the last partial batch so every
    step sees ``batch_size`` images; the test loader keeps order and every image.
    """
    spec = get_dataset_spec(name)
    loaded: Loaded = spec.load(data_dir, download)
    check_split(spec, loaded.train, loaded.source)
    check_split(spec, loaded.test, loaded.source)
    common = dict(num_workers=workers, pin_memory=pin_memory)
    train = SeededLoader(InMemoryImages(loaded.train), batch_size=batch_size, shuffle=True, drop_last=True,
                       generator=torch.Generator().manual_seed(seed), collate_fn=BatchTransform(spec, True), **common)
    test = DataLoader(InMemoryImages(loaded.test), batch_size=test_batch_size or batch_size, shuffle=False,
                      drop_last=False, collate_fn=BatchTransform(spec, False), **common)
    return DataBundle(spec, train, test, loaded.source, len(loaded.train), len(loaded.test))
