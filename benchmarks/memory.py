"""Activation memory against NFE: adjoint, direct backprop, and ResNet against depth.

``act_mem_mb`` (tensors saved for backward, every device) and, on CUDA, ``peak_mem_mb`` of one
training step. ODE-Nets use fixed-step Euler with n steps (NFE = n) so the number of
evaluations is exact; ResNet has n residual blocks. Printed: each series and its slope per
extra NFE / block (least squares). Expected: adjoint flat (slope below 1% of one field
evaluation's activations, i.e. of the direct slope), direct backprop and ResNet linear.

    python benchmarks/memory.py [--depths 2,4,8,16,32]
"""

from __future__ import annotations

import torch

from common import fashion_batches, machine, parser, setup, table, write_json

from odenet.train.step import train_step
from odenet.models import create_backbone
from odenet.solve import SolverSettings
from odenet.reports import linear_fit


def slope(xs: list[float], ys: list[float]) -> float:
    return linear_fit(xs, ys)[0]


def measure(kind: str, n: int, x, y, device) -> dict:
    torch.manual_seed(0)
    if kind == "resnet":
        model = create_backbone("resnet", in_channels=1, num_classes=10, depth=n)
    else:
        model = create_backbone("odenet", in_channels=1, num_classes=10,
                                solver=SolverSettings(method="euler", steps=n, adjoint=kind == "adjoint"))
    model.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    row = train_step(model, x, y, opt, list(model.parameters()))
    return {"kind": kind, "n": n, "nfe": row.get("nfe_forward", n), "act_mem_mb": row["act_mem_mb"],
            "peak_mem_mb": row.get("peak_mem_mb")}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--depths", default="2,4,8,16,32")
    args = p.parse_args()
    device = setup(args)
    x, y = fashion_batches(1, args.batch_size, device, args.data_dir)[0]
    depths = [int(d) for d in args.depths.split(",")]
    results = [measure(kind, n, x, y, device) for kind in ("adjoint", "direct", "resnet") for n in depths]
    slopes = {}
    for kind in ("adjoint", "direct", "resnet"):
        series = [r for r in results if r["kind"] == kind]
        slopes[kind] = {"act_mem_mb": slope([r["n"] for r in series], [r["act_mem_mb"] for r in series])}
        if device.type == "cuda":
            slopes[kind]["peak_mem_mb"] = slope([r["n"] for r in series], [r["peak_mem_mb"] for r in series])
    per_eval = slopes["direct"]["act_mem_mb"]  # what one more differentiated field evaluation saves
    rows = [[r["kind"], r["n"], r["act_mem_mb"], r["peak_mem_mb"] if r["peak_mem_mb"] is not None else "—"]
            for r in results]
    print(f"activation memory on {machine(device)}, batch {args.batch_size}")
    print(table(["backprop", "NFE / blocks", "act_mem_mb", "peak_mem_mb"], rows))
    print("\nslope per extra NFE (ODE-Net) or block (ResNet), MiB:")
    for kind, s in slopes.items():
        extra = f", peak_mem_mb {s['peak_mem_mb']:.3f}" if "peak_mem_mb" in s else ""
        print(f"  {kind:8s} act_mem_mb {s['act_mem_mb']:.4f}{extra}")
    ratio = abs(slopes["adjoint"]["act_mem_mb"]) / per_eval
    print(f"adjoint slope = {100 * ratio:.3f}% of one field evaluation's activations (target < 1%)")
    path = write_json("memory", {"machine": machine(device), "results": results, "slopes": slopes,
                                 "adjoint_slope_fraction": ratio}, args.out)
    print(f"written: {path}")


if __name__ == "__main__":
    main()
