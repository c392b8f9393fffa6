"""Train the plain torchdiffeq ODE-Net the way torchdiffeq's ``examples/odenet_mnist.py`` does, on Fashion-MNIST.

The "plain" side of ``benchmarks/time_to_accuracy.py``: the example's model (``benchmarks/plain.py``),
its recipe — SGD, lr 0.1 × batch/128, momentum 0.9, no weight decay, lr × 0.1 at epochs 60/100/140,
batch 128, ``RandomCrop(28, padding=4)`` + ``ToTensor()`` (no normalisation), DataLoader with 2 workers
and ``drop_last=True``, dopri5 rtol = atol = 1e-3, direct backprop — and its test loop (batch 1000).
The example's once-per-epoch accuracy over the whole *training* set is left out (it would only
slow this side down). Fashion-MNIST is read from the same idx files as odenet's loader.

The full test set is evaluated every ``--eval-every`` training images (default 30,080 = 235 batches
of 128, what odenet's ``--limit-train-batches 235`` epochs hold), and each evaluation is appended to
``--metrics`` as a JSON line ``{"split": "test", "epoch": k, "images": n, "acc": a}`` — the format
time_to_accuracy.py watches. Runs until ``--epochs`` or until killed.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from plain import plain_model  # noqa: E402

IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def fashion_datasets(source: Path, root: Path):
    """torchvision's FashionMNIST (train with the example's transforms, test ToTensor) over the idx files."""
    import torchvision
    from torchvision import transforms

    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for stem in IDX_STEMS:
        src = source / stem
        if not src.exists() and not (source / (stem + ".gz")).exists():
            raise SystemExit(f"plain_train.py: {src}(.gz) not found; pass --data-dir with Fashion-MNIST's idx files")
        data = src.read_bytes() if src.exists() else gzip.decompress((source / (stem + ".gz")).read_bytes())
        (raw / stem).write_bytes(data)
    train_tf = transforms.Compose([transforms.RandomCrop(28, padding=4), transforms.ToTensor()])
    test_tf = transforms.ToTensor()
    return (torchvision.datasets.FashionMNIST(str(root), train=True, transform=train_tf),
            torchvision.datasets.FashionMNIST(str(root), train=False, transform=test_tf))


def accuracy(model, loader, device) -> float:
    """The example's accuracy(): argmax over the whole loader."""
    correct = total = 0
    model.eval()
    with torch.no_grad():
        for x, y in loader:
            pred = model(x.to(device)).argmax(1).cpu()
            correct += int((pred == y).sum())
            total += len(y)
    model.train()
    return correct / total


def lr_at(epoch: int, batch_size: int) -> float:
    """The example's learning_rate_with_decay: 0.1 × batch/128, × 0.1 at epochs 60, 100, 140."""
    base = 0.1 * batch_size / 128
    return base * [1, 0.1, 0.01, 0.001][sum(epoch >= b for b in (60, 100, 140))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--metrics", required=True, help="JSON-lines file the test evaluations are appended to")
    p.add_argument("--epochs", type=int, default=160)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--eval-every", type=int, default=235 * 128, help="training images between test evaluations")
    p.add_argument("--tol", type=float, default=1e-3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        train_set, test_set = fashion_datasets(Path(args.data_dir), Path(tmp))
        train = torch.utils.data.DataLoader(train_set, batch_size=args.batch_size, shuffle=True,
                                            num_workers=args.workers, drop_last=True)
        test = torch.utils.data.DataLoader(test_set, batch_size=1000, shuffle=False, num_workers=args.workers)
        model = plain_model("odenet").to(device)
        for m in model.modules():
            if hasattr(m, "tol"):
                m.tol = args.tol
        optimizer = torch.optim.SGD(model.parameters(), lr=lr_at(0, args.batch_size), momentum=0.9)
        seen, evals = 0, 0
        with open(args.metrics, "a") as out:
            for epoch in range(args.epochs):
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(epoch, args.batch_size)
                for x, y in train:
                    optimizer.zero_grad()
                    loss = F.cross_entropy(model(x.to(device)), y.to(device))
                    loss.backward()
                    optimizer.step()
                    seen += len(y)
                    if seen // args.eval_every > evals:
                        evals = seen // args.eval_every
                        row = {"split": "test", "epoch": evals, "images": seen, "acc": accuracy(model, test, device)}
                        out.write(json.dumps(row) + "\n")
                        out.flush()
                        print(f"plain: {seen:,} images, test acc {row['acc']:.4f}", flush=True)


if __name__ == "__main__":
    main()
