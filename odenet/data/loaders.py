"""DataLoaders over in-memory splits, with batch-level augmentation and seeded order."""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from odenet.data.augment import crop_at, hflip_where, normalize, random_crop, random_hflip
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

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices)
        return self.split.images[idx], self.split.labels[idx], idx


class BatchTransform:
    """Collate function: (uint8 images, labels) → (normalised float images, labels), augmenting when training.

    Augmentation never draws from torch's global generator: each batch's crops and flips come
    from a generator seeded with the epoch's seed (:class:`SeededLoader` draws it from the
    loader's generator at the start of every epoch) and the batch's first dataset index. So the
    batches depend on the loader's seed alone — not on which worker process, or how many
    (``--workers``), collate them.
    """

    def __init__(self, spec: DatasetSpec, train: bool) -> None:
        self.spec = spec
        self.train = train
        self.epoch_seed = 0

    def reseed(self, seed: int) -> None:
        self.epoch_seed = seed

    def _rng(self, indices: torch.Tensor) -> torch.Generator:
        # Within an epoch every batch starts at a different index (a permutation is cut into batches).
        return torch.Generator().manual_seed((self.epoch_seed + 1_000_003 * (int(indices[0]) + 1)) % 2 ** 63)

    def __call__(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels, indices = batch  # (B, C, H, W) uint8, (B,) int64, (B,) dataset indices
        if self.train:
            rng = self._rng(indices)
            images = random_crop(images, self.spec.crop_padding, rng)
            if self.spec.hflip:
                images = random_hflip(images, rng)
        return normalize(images, self.spec.mean, self.spec.std), labels


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers leave SIGINT/SIGTERM to the main process.

    ``docker stop``, Slurm and systemd signal the whole process group; a worker killed by it
    would take the main process down before it could finish its step and write a checkpoint.
    The workers end when the main process closes its loader.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class SeededLoader(DataLoader):
    """A DataLoader whose every random choice (order and augmentation) follows ``generator``.

    Saving ``generator.get_state()`` before an epoch is therefore enough to replay it.
    Workers are re-created every epoch (not persistent) so that they too are reseeded from
    the epoch's draw. Under DDP every rank draws the same numbers (same seed); ``rank`` offsets
    the augmentation seed so that ranks crop differently.
    """

    def __init__(self, *args, rank: int = 0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.rank = rank

    def __iter__(self):
        if isinstance(self.collate_fn, BatchTransform):
            self.collate_fn.reseed(int(torch.randint(0, 2 ** 62, (), generator=self.generator)) + self.rank)
        return super().__iter__()


class ShardedSampler(Sampler[int]):
    """Rank ``rank``'s share of a seeded permutation: positions rank, rank + W, rank + 2W, ...

    With per-rank batch B, rank r's i-th batch holds positions i·W·B + r + W·j (j < B): the W
    ranks' i-th batches together are exactly the single-process run's i-th batch of W·B.
    ``shuffle=False`` shards the identity order (evaluation). The permutation is drawn from
    ``generator`` when iteration starts, like torch's RandomSampler.
    """

    def __init__(self, n: int, rank: int, world_size: int, generator: torch.Generator | None = None,
                 shuffle: bool = True, global_batch: int = 1) -> None:
        self.n, self.rank, self.world, self.generator, self.shuffle = n, rank, world_size, generator, shuffle
        self.used = n - n % global_batch if shuffle else n

    def __iter__(self):
        order = torch.randperm(self.n, generator=self.generator) if self.shuffle else torch.arange(self.n)
        return iter(order[: self.used][self.rank::self.world].tolist())

    def __len__(self) -> int:
        return len(range(self.rank, self.used, self.world))


class DeviceLoader:
    """A whole split held as one tensor on the device, batched, augmented and normalised there.

    For MNIST-size data on a GPU: no worker processes, no host-to-device copy per batch.
    All of an epoch's randomness (order, crop offsets, flips) is drawn up front from the CPU
    ``generator`` and copied once, so the epoch costs no host synchronisation, and saving the
    generator's state before an epoch is enough to replay it.
    """

    def __init__(self, split: Split, spec: DatasetSpec, batch_size: int, train: bool, device: torch.device,
                 generator: torch.Generator | None = None, rank: int = 0, world_size: int = 1) -> None:
        self.images = split.images.to(device)  # (N, C, H, W) uint8
        self.labels = split.labels.to(device)
        self.spec, self.batch_size, self.train, self.device = spec, batch_size, train, device
        self.generator = generator if generator is not None else torch.Generator()
        self.rank, self.world = rank, world_size

    def _shard_size(self) -> int:
        n = len(self.labels)
        used = n - n % (self.batch_size * self.world) if self.train else n
        return len(range(self.rank, used, self.world))

    def __len__(self) -> int:
        n = self._shard_size()
        return n // self.batch_size if self.train else -(-n // self.batch_size)

    def __iter__(self):
        n, pad = len(self.labels), self.spec.crop_padding
        if self.train:
            # Drawn for every position of the global order, then sharded like ShardedSampler: a
            # DDP run sees exactly the single-process run's global batches and crops.
            order = torch.randperm(n, generator=self.generator)
            offsets = torch.randint(0, 2 * pad + 1, (2, n), generator=self.generator)
            flips = torch.rand(n, generator=self.generator) < 0.5
            keep = torch.arange(self.rank, n - n % (self.batch_size * self.world), self.world)
            order, offsets, flips = (v.to(self.device, non_blocking=True)
                                     for v in (order[keep], offsets[:, keep], flips[keep]))
        else:
            order = torch.arange(self.rank, n, self.world, device=self.device)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            images = self.images[idx]
            if self.train:
                images = crop_at(images, pad, offsets[0, i * self.batch_size:][:len(idx)],
                                 offsets[1, i * self.batch_size:][:len(idx)])
                if self.spec.hflip:
                    images = hflip_where(images, flips[i * self.batch_size:][:len(idx)])
            yield normalize(images, self.spec.mean, self.spec.std), self.labels[idx]


@dataclass
class DataBundle:
    spec: DatasetSpec
    train: SeededLoader | DeviceLoader
    test: DataLoader | DeviceLoader
    source: str
    train_size: int
    test_size: int


def check_split(spec: DatasetSpec, split: Split, where: str) -> None:
    """Fail with one sentence if loaded data do not look like the dataset they claim to be."""
    expected = (spec.channels, spec.image_size, spec.image_size)
    if len(split) == 0:
        raise DataFileError(f"{where} holds a split with no images; a training or test split cannot be empty, "
                            f"fetch the files again")
    if tuple(split.images.shape[1:]) != expected:
        raise DataFileError(f"{where} holds images of shape {tuple(split.images.shape[1:])}, but {spec.name} "
                            f"images are {expected}; check that the files belong to {spec.name}")
    if len(split) and (split.labels.min() < 0 or split.labels.max() >= spec.num_classes):
        raise DataFileError(f"{where} holds labels outside 0..{spec.num_classes - 1}; check that the files belong "
                            f"to {spec.name}")


def build_loaders(name: str, *, batch_size: int, test_batch_size: int | None = None, workers: int = 0,
                  seed: int = 0, data_dir: Path | None = None, download: bool = False,
                  pin_memory: bool = False, on_device: torch.device | None = None, rank: int = 0,
                  world_size: int = 1) -> DataBundle:
    """Load a registered dataset and wrap it in training and test loaders.

    The training loader shuffles with a generator seeded by ``seed`` (same seed → same
    batches, including worker-side augmentation) and drops the last partial batch so every
    step sees ``batch_size`` images; the test loader keeps order and every image. With
    ``on_device``, both are :class:`DeviceLoader` s holding the data on that device. With
    ``world_size`` > 1 each rank gets its shard of every global batch (see ShardedSampler).
    """
    spec = get_dataset_spec(name)
    loaded: Loaded = spec.load(data_dir, download)
    check_split(spec, loaded.train, loaded.source)
    check_split(spec, loaded.test, loaded.source)
    gen = torch.Generator().manual_seed(seed)
    if on_device is not None:
        shard = dict(rank=rank, world_size=world_size)
        return DataBundle(spec, DeviceLoader(loaded.train, spec, batch_size, True, on_device, gen, **shard),
                          DeviceLoader(loaded.test, spec, test_batch_size or batch_size, False, on_device, **shard),
                          loaded.source, len(loaded.train), len(loaded.test))
    common = dict(num_workers=workers, pin_memory=pin_memory, worker_init_fn=ignore_stop_signals if workers else None)
    if world_size == 1:
        train_order: dict = dict(shuffle=True, generator=gen)
        test_order: dict = dict(shuffle=False)
    else:
        train_order = dict(sampler=ShardedSampler(len(loaded.train), rank, world_size, gen,
                                                  global_batch=batch_size * world_size), generator=gen)
        test_order = dict(sampler=ShardedSampler(len(loaded.test), rank, world_size, shuffle=False))
    train = SeededLoader(InMemoryImages(loaded.train), batch_size=batch_size, drop_last=True,
                         collate_fn=BatchTransform(spec, True), rank=rank, **train_order, **common)
    test = DataLoader(InMemoryImages(loaded.test), batch_size=test_batch_size or batch_size, drop_last=False,
                      collate_fn=BatchTransform(spec, False), **test_order, **common)
    return DataBundle(spec, train, test, loaded.source, len(loaded.train), len(loaded.test))
