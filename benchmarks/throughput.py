"""Training throughput: odenet vs a plain torchdiffeq implementation of the same network.

Both train on the same Fashion-MNIST batches (batch 128, random crops), from the same initial
weights, with SGD lr 0.1 momentum 0.9; steps are interleaved A/B/A/B so that machine noise
hits both alike. odenet's step is its full measured step (NFE counters, saved-tensor memory,
synchronised timers). Printed: images/s of each, the ratio, and each side's mean NFE forward
/ backward — equal NFE means the same computation; a speed-up from fewer NFE would be a
different experiment. For the ODE-Net modes it also checks that both sides train alike: the loss
of every step (warm-up included: ``--warmup 3 --steps 47`` gives the first 50) within a relative
1e-3, and mean NFE forward and backward within 5%.

Modes: ``direct`` and ``adjoint`` (ODE-Net), ``resnet`` (6 residual blocks); ``--variants``
adds odenet variants (``compile``, ``channels_last``, ``bf16``). ``--end-to-end`` also times
whole epochs' worth of steps including data loading: the plain side with torchvision's PIL
pipeline (DataLoader, ``--workers``), odenet with its in-memory loader (on GPU: data on device).

    python benchmarks/throughput.py [--modes direct,adjoint,resnet] [--steps 20] [--end-to-end]
"""

from __future__ import annotations

import gzip
import statistics
import tempfile
from pathlib import Path

import torch

from common import fashion_batches, machine, now, parser, setup, table, write_json

from odenet.data.datasets import IDX_STEMS
from odenet.train.step import train_step
from odenet.models import create_backbone
from odenet.solve import SolverSettings
from odenet.train.build import speed_up
from plain import copy_weights, plain_model, plain_step

VARIANTS = ("default", "compile", "channels_last", "bf16")
LOSS_RTOL = 1e-3  # per-step relative loss difference still "the same training" (see same_training)
NFE_RTOL = 0.05  # mean NFE per step may differ by this fraction (the bound)


def ours(kind: str, adjoint: bool, variant: str, device: torch.device) -> torch.nn.Module:
    kw = {"solver": SolverSettings(rtol=1e-3, atol=1e-3, adjoint=adjoint)} if kind == "odenet" else {}
    model = create_backbone(kind, in_channels=1, num_classes=10, **kw).to(device)
    speed_up(model, channels_last=variant == "channels_last", amp="bf16" if variant == "bf16" else "none",
             compile=variant == "compile")
    return model


def run_mode(mode: str, variant: str, batches, warmup: int, device: torch.device) -> dict:
    kind = "resnet" if mode == "resnet" else "odenet"
    adjoint = mode == "adjoint"
    torch.manual_seed(0)
    plain = plain_model(kind, adjoint).to(device)
    mine = ours(kind, adjoint, variant, device)
    copy_weights(plain, mine)
    opt_plain = torch.optim.SGD(plain.parameters(), lr=0.1, momentum=0.9)
    opt_mine = torch.optim.SGD(mine.parameters(), lr=0.1, momentum=0.9)
    params = list(mine.parameters())
    fmt = torch.channels_last if variant == "channels_last" else torch.contiguous_format
    times = {"plain": [], "odenet": []}
    nfe = {"plain": [], "odenet": []}
    losses = {"plain": [], "odenet": []}
    for i, (x, y) in enumerate(batches):
        t0 = now(device)
        nfe_f, nfe_b = plain_step(plain, x, y, opt_plain, losses["plain"])
        t1 = now(device)
        row = train_step(mine, x.contiguous(memory_format=fmt), y, opt_mine, params)
        t2 = now(device)
        losses["odenet"].append(row["loss"])
        if i >= warmup:
            times["plain"].append(t1 - t0)
            times["odenet"].append(t2 - t1)
            nfe["plain"].append((nfe_f, nfe_b))
            nfe["odenet"].append((row.get("nfe_forward", 0), row.get("nfe_backward", 0)))
    bs = len(batches[0][1])
    out = {"mode": mode, "variant": variant}
    for side in ("plain", "odenet"):
        out[f"{side}_images_per_s"] = bs * len(times[side]) / sum(times[side])
        out[f"{side}_median_step_ms"] = 1e3 * statistics.median(times[side])
        out[f"{side}_nfe_forward"] = statistics.fmean(f for f, _ in nfe[side])
        out[f"{side}_nfe_backward"] = statistics.fmean(b for _, b in nfe[side])
    out["ratio"] = out["odenet_images_per_s"] / out["plain_images_per_s"]
    out["nfe_equal_steps"] = sum(a == b for a, b in zip(nfe["plain"], nfe["odenet"])) / len(nfe["plain"])
    if kind == "odenet":
        out.update(same_training(torch.stack(losses["plain"]).tolist(), losses["odenet"], out))
    return out


def same_training(plain: list[float], ours: list[float], row: dict) -> dict:
    """Do both sides train alike? Loss trajectories from step 1 (warm-up included) and mean NFE.

    The two differ by float32 rounding (a bias map instead of a concatenated t channel, fused
    stage arithmetic), which an adaptive solver now and then turns into a different accept/reject
    decision, so the trajectories drift apart slowly; LOSS_RTOL is the bound called "the same".
    """
    rel = [abs(a - b) / abs(a) for a, b in zip(plain, ours)]
    first = next((i + 1 for i, r in enumerate(rel) if r > LOSS_RTOL), None)
    nfe_rel = {side: abs(row[f"odenet_nfe_{side}"] - row[f"plain_nfe_{side}"]) / max(row[f"plain_nfe_{side}"], 1)
               for side in ("forward", "backward")}
    return {"loss_plain": plain, "loss_odenet": ours, "loss_max_rel_diff": max(rel),
            "loss_first_step_over_rtol": first, "loss_match": first is None,
            "nfe_rel_diff": nfe_rel, "nfe_within_5pct": all(v <= NFE_RTOL for v in nfe_rel.values())}


def torchvision_fashion(source: Path, root: Path):
    """torchvision's FashionMNIST over the same files, un-gzipped where torchvision expects them."""
    import torchvision
    from torchvision import transforms

    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for stem in IDX_STEMS:
        src = source / stem
        data = src.read_bytes() if src.exists() else gzip.decompress((source / (stem + ".gz")).read_bytes())
        (raw / stem).write_bytes(data)
    transform = transforms.Compose([transforms.RandomCrop(28, padding=4), transforms.ToTensor(),
                                    transforms.Normalize((0.2860,), (0.3530,))])
    return torchvision.datasets.FashionMNIST(str(root), train=True, transform=transform)


def timed_steps(step, batches, n: int, warmup: int, device: torch.device) -> tuple[float, list]:
    """Run ``warmup + n`` steps pulling batches from the iterator; seconds of the last n, their NFE."""
    nfe = []
    for i in range(warmup + n):
        if i == warmup:
            start = now(device)
        nfe.append(step(*next(batches)))
    return now(device) - start, nfe[warmup:]


def end_to_end(args, device: torch.device) -> list[dict]:
    """Steps including data: plain = torchvision PIL pipeline + DataLoader, odenet = its own loader."""
    from torch.utils.data import DataLoader

    from odenet.data import build_loaders

    bundle = build_loaders("fashion-mnist", batch_size=args.batch_size, data_dir=args.data_dir and Path(args.data_dir),
                           on_device=device if device.type == "cuda" else None)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        dataset = torchvision_fashion(Path(bundle.source), Path(tmp))
        for mode in args.modes.split(","):
            kind, adjoint = ("resnet", False) if mode == "resnet" else ("odenet", mode == "adjoint")
            torch.manual_seed(0)
            plain = plain_model(kind, adjoint).to(device)
            mine = ours(kind, adjoint, "default", device)
            copy_weights(plain, mine)
            opt_p = torch.optim.SGD(plain.parameters(), lr=0.1, momentum=0.9)
            opt_m = torch.optim.SGD(mine.parameters(), lr=0.1, momentum=0.9)
            params = list(mine.parameters())
            loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, drop_last=True,
                                num_workers=args.workers, pin_memory=device.type == "cuda")

            def plain_batches():
                while True:
                    for x, y in loader:
                        yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)

            def our_batches():
                while True:
                    for x, y in bundle.train:
                        yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)

            def our_step(x, y):
                row = train_step(mine, x, y, opt_m, params)
                return row.get("nfe_forward", 0), row.get("nfe_backward", 0)

            t_plain, nfe_plain = timed_steps(lambda x, y: plain_step(plain, x, y, opt_p), plain_batches(),
                                             args.steps, args.warmup, device)
            t_ours, nfe_ours = timed_steps(our_step, our_batches(), args.steps, args.warmup, device)
            n = args.steps * args.batch_size
            rows.append({"mode": mode, "plain_images_per_s": n / t_plain, "odenet_images_per_s": n / t_ours,
                         "ratio": t_plain / t_ours, "plain_workers": args.workers,
                         "odenet_loader": "data on device" if device.type == "cuda" else "in-memory, 0 workers",
                         "plain_nfe_forward": statistics.fmean(f for f, _ in nfe_plain),
                         "odenet_nfe_forward": statistics.fmean(f for f, _ in nfe_ours)})
            r = rows[-1]
            print(f"end-to-end {mode:8s} plain {r['plain_images_per_s']:8.1f} img/s  odenet "
                  f"{r['odenet_images_per_s']:8.1f} img/s  ratio {r['ratio']:.2f}", flush=True)
    print(table(["mode (with data loading)", "plain img/s", "odenet img/s", "ratio", "plain NFE f", "odenet NFE f"],
                [[r["mode"], r["plain_images_per_s"], r["odenet_images_per_s"], r["ratio"], r["plain_nfe_forward"],
                  r["odenet_nfe_forward"]] for r in rows]))
    return rows


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--modes", default="direct,adjoint,resnet")
    p.add_argument("--variants", default="default", help=f"comma list of {', '.join(VARIANTS)}")
    p.add_argument("--steps", type=int, default=20, help="measured steps per implementation and mode")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--end-to-end", action="store_true", help="also time steps including data loading")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of the plain pipeline (end-to-end)")
    args = p.parse_args()
    device = setup(args)
    batches = fashion_batches(args.steps + args.warmup, args.batch_size, device, args.data_dir)
    results: list[dict] = []
    e2e: list[dict] = []

    def save() -> Path:  # after every measurement, so a stage cut short by a time limit keeps its numbers
        return write_json("throughput", {"machine": machine(device), "batch_size": args.batch_size,
                                         "steps": args.steps, "results": results, "end_to_end": e2e}, args.out)

    for mode in args.modes.split(","):
        for variant in args.variants.split(","):
            if mode == "resnet" and variant == "bf16":
                continue
            results.append(run_mode(mode, variant, batches, args.warmup, device))
            save()
            r = results[-1]
            print(f"{mode:8s} {variant:13s} plain {r['plain_images_per_s']:8.1f} img/s  odenet "
                  f"{r['odenet_images_per_s']:8.1f} img/s  ratio {r['ratio']:.2f}", flush=True)
    rows = [[r["mode"], r["variant"], r["plain_images_per_s"], r["odenet_images_per_s"], r["ratio"],
             f"{r['plain_nfe_forward']:.1f}/{r['plain_nfe_backward']:.1f}",
             f"{r['odenet_nfe_forward']:.1f}/{r['odenet_nfe_backward']:.1f}", r["nfe_equal_steps"]]
            for r in results]
    print(f"\nthroughput on {machine(device)}, batch {args.batch_size}, {args.steps} steps each (interleaved)")
    print(table(["mode", "variant", "plain img/s", "odenet img/s", "ratio", "plain NFE f/b", "odenet NFE f/b",
                 "equal-NFE steps"], rows))
    same = [r for r in results if "loss_match" in r]
    if same:
        print(f"\nsame training? loss per step over all {len(batches)} steps (warm-up included), rtol {LOSS_RTOL:g}; "
              f"mean NFE within {NFE_RTOL:.0%}")
        print(table(["mode", "variant", "max rel Δloss", "first step over rtol", "loss match", "NFE f/b rel Δ",
                     "NFE within 5%"],
                    [[r["mode"], r["variant"], r["loss_max_rel_diff"], r["loss_first_step_over_rtol"] or "-",
                      r["loss_match"], f"{r['nfe_rel_diff']['forward']:.3f}/{r['nfe_rel_diff']['backward']:.3f}",
                      r["nfe_within_5pct"]] for r in same]))
    if args.end_to_end:
        e2e.extend(end_to_end(args, device))
    print(f"\nwritten: {save()}")


if __name__ == "__main__":
    main()
