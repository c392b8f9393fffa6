"""Per-sample vs batched adaptive solving of an ODE-Net's block: images/s and the batching tax.

A batched adaptive solve steps every image under one error norm; per-sample solving
(odenet.models.per_sample_blocks) gives each image the steps a batch-of-1 solve would take, and drops
finished images from the batch. Both run on the same inputs, interleaved, on one device: the
features of real mnist-5k test images through an ODE-Net trained for ``--train-steps`` steps
(``--source mnist``; early in training per-image NFE barely differ), or ``--source synthetic``:
a random ConvODEField with weights ×1.5 on random maps of magnitudes 0.2…3, whose images need
clearly different NFE.

* images/s of each, and their ratio;
* the batching tax: batched NFE / mean per-image NFE (what each image pays for sharing a norm);
* the work ratio: images evaluated by per-sample solving / (batch × batched NFE).

    python benchmarks/per_sample.py [--source mnist|synthetic] [--tols 1e-1,1e-3,1e-5] [--batch-size 128]
"""

from __future__ import annotations

import statistics

import torch
import torch.nn.functional as F
from torch import nn

from common import machine, now, parser, table, write_json

from odenet.data import build_loaders
from odenet.models import ODEBlock, SolverSettings, create_backbone, read_nfe
from odenet.models.layers import ConvODEField
from odenet.models.per_sample_blocks import solve_block_per_sample


def briefly_trained_odenet(steps: int, batch_size: int, device: torch.device):
    """An ODE-Net after ``steps`` SGD steps on mnist-5k, and a batch of its test images."""
    torch.manual_seed(0)
    data = build_loaders("mnist-5k", batch_size=batch_size, seed=0)
    model = create_backbone("odenet", in_channels=1, num_classes=10).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    batches = iter(data.train)
    for _ in range(steps):
        x, y = next(batches)
        opt.zero_grad()
        F.cross_entropy(model(x.to(device)), y.to(device)).backward()
        opt.step()
    return model.eval(), next(iter(data.test))[0].to(device)


def synthetic(width: int, batch_size: int, device: torch.device) -> tuple[nn.Module, torch.Tensor]:
    """A ConvODEField with weights ×1.5 and (B, width, 6, 6) maps of growing magnitude."""
    torch.manual_seed(0)
    field = ConvODEField(width)
    with torch.no_grad():
        for p in field.parameters():
            p.mul_(1.5)
    x = torch.randn(batch_size, width, 6, 6) * torch.linspace(0.2, 3, batch_size).view(-1, 1, 1, 1)
    return field.to(device), x.to(device)


def timed(fn, device: torch.device):
    start = now(device)
    out = fn()
    return out, now(device) - start


def compare(block: ODEBlock, features: torch.Tensor, repeats: int, device: torch.device) -> dict:
    """Interleaved timings of the batched and the per-sample solve at the block's settings."""
    batched_s, per_sample_s = [], []
    with torch.no_grad():
        for _ in range(repeats):
            block.stats.reset()
            _, seconds = timed(lambda: block(features), device)
            batched_s.append(seconds)
            batched_nfe = read_nfe(block)["nfe_forward"]
            solution, seconds = timed(lambda: solve_block_per_sample(block, features), device)
            per_sample_s.append(seconds)
    n = len(features)
    nfe = solution.nfe_forward.double()
    return {"batched_images_per_s": n / statistics.median(batched_s),
            "per_sample_images_per_s": n / statistics.median(per_sample_s),
            "batched_nfe": batched_nfe, "per_sample_nfe_mean": nfe.mean().item(),
            "per_sample_nfe_min": int(nfe.min()), "per_sample_nfe_max": int(nfe.max()),
            "batching_tax": batched_nfe / nfe.mean().item(),
            "work_ratio": solution.rows_evaluated / (n * batched_nfe), "rounds": solution.host_checks}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--source", choices=["mnist", "synthetic"], default="mnist")
    p.add_argument("--width", type=int, default=64, help="field width of --source synthetic")
    p.add_argument("--tols", default="1e-1,1e-3,1e-5")
    p.add_argument("--train-steps", type=int, default=30)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    if args.source == "mnist":
        model, images = briefly_trained_odenet(args.train_steps, args.batch_size, device)
        field = model.features.func
        with torch.no_grad():
            features = model.stem(images)
        source = f"{len(features)} mnist-5k test images, ODE-Net after {args.train_steps} steps"
    else:
        field, features = synthetic(args.width, args.batch_size, device)
        source = f"{len(features)} synthetic maps, ConvODEField({args.width}) ×1.5"
    results = {}
    for tol in (float(t) for t in args.tols.split(",")):
        block = ODEBlock(field, SolverSettings(rtol=tol, atol=tol)).to(device)
        results[f"{tol:g}"] = compare(block, features, args.repeats, device)
    print(f"per-sample vs batched dopri5 on {machine(device)}, {source}")
    print(table(["tol", "batched img/s", "per-sample img/s", "ratio", "batched NFE", "per-image NFE mean",
                 "min", "max", "batching tax", "work ratio"],
                [[k, r["batched_images_per_s"], r["per_sample_images_per_s"],
                  r["per_sample_images_per_s"] / r["batched_images_per_s"], r["batched_nfe"],
                  r["per_sample_nfe_mean"], r["per_sample_nfe_min"], r["per_sample_nfe_max"], r["batching_tax"],
                  r["work_ratio"]] for k, r in results.items()]))
    path = write_json(f"per_sample_{args.source}", {"machine": machine(device), "source": source,
                                                    "args": vars(args), "results": results}, args.out)
    print(f"written: {path}")


if __name__ == "__main__":
    main()
