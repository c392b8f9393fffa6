"""Shared pieces of the benchmarks: real batches, a synchronised timer, tables and JSON output."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as `python benchmarks/x.py` from anywhere

from odenet.measure import Clock  # noqa: E402


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--data-dir", default=None, help="folder holding Fashion-MNIST (default: the usual search)")
    p.add_argument("--out", default=None, help="JSON output folder (default: $OUT, else ./bench-out)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    return p


def setup(args) -> torch.device:
    from odenet.train.build import pick_device

    if args.threads:
        torch.set_num_threads(args.threads)
    return pick_device(args.device)


def fashion_batches(n: int, batch_size: int, device: torch.device, data_dir: str | None = None,
                    seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` augmented (random-crop) Fashion-MNIST training batches, already on ``device``."""
    from odenet.data import build_loaders

    bundle = build_loaders("fashion-mnist", batch_size=batch_size, seed=seed,
                           data_dir=Path(data_dir) if data_dir else None)
    batches = []
    while len(batches) < n:
        for x, y in bundle.train:
            batches.append((x.to(device), y.to(device)))
            if len(batches) == n:
                break
    return batches


def now(device: torch.device) -> float:
    """Wall-clock seconds after the device's queued work (odenet.measure.Clock)."""
    return Clock(device).now()


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def table(header: list[str], rows: list[list]) -> str:
    cells = [[str(c) for c in header]] + [[f"{c:.4g}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa
    return "\n".join([fmt(cells[0]), fmt(["-" * w for w in widths])] + [fmt(r) for r in cells[1:]])


def write_json(name: str, data: dict, out: str | None) -> Path:
    folder = Path(out or os.environ.get("OUT") or "bench-out")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path
