"""Device-side adaptive step control vs torchdiffeq's loop: steps/s and images/s, side by side.

torchdiffeq's adaptive loop reads the device on the host at every step (underflow check,
accept/reject, end test). odenet.models.device_rk keeps those decisions on the device and checks
every ``--check-every`` steps; on CUDA the step is also captured as a CUDA graph
(odenet.models.cuda_graphs). All three solve the same ODE-Net block (ConvODEField, random
weights) on the same batch, interleaved, and take the same steps; the ratios are measured in
this one run.

    python benchmarks/device_rk.py [--device cuda] [--batch-size 128] [--tol 1e-3] [--check-every 1,8]
"""

from __future__ import annotations

import functools
import statistics

import torch

from common import machine, now, parser, table, write_json

from odenet.models import ODEBlock, SolverSettings, read_nfe
from odenet.models.device_solve import solve_on_device
from odenet.models.layers import ConvODEField


def pick(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def solvers(block: ODEBlock, x: torch.Tensor, check_every: list[int]) -> dict:
    """name → a function solving x and returning (y, steps taken)."""
    def torchdiffeq_loop():
        block.stats.reset()
        y = block(x)
        stats = read_nfe(block)
        return y, stats["steps_accepted"] + stats["steps_rejected"]

    def device_side(k: int):
        s = solve_on_device(block, x, check_every=k)
        return s.y, s.steps_accepted + s.steps_rejected

    def graph(solver):
        s = solver(x)
        return s.y, s.steps_accepted + s.steps_rejected

    out = {"torchdiffeq": torchdiffeq_loop}
    for k in check_every:
        out[f"device, check every {k}"] = functools.partial(device_side, k)
    if x.device.type == "cuda":
        from odenet.models.cuda_graphs import GraphedAdaptiveSolver  # CUDA only

        for k in check_every:
            solver = GraphedAdaptiveSolver(block, x, check_every=k)
            out[f"CUDA graph, check every {k}"] = functools.partial(graph, solver)
    return out


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--size", type=int, default=6, help="feature-map side (the paper's MNIST ODE block: 6)")
    p.add_argument("--tol", type=float, default=1e-3)
    p.add_argument("--check-every", default="1,8", help="steps between host checks (comma-separated)")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick(args.device)
    torch.manual_seed(0)
    block = ODEBlock(ConvODEField(args.width), SolverSettings(rtol=args.tol, atol=args.tol)).to(device)
    x = torch.randn(args.batch_size, args.width, args.size, args.size, device=device)
    runs = solvers(block, x, [int(k) for k in args.check_every.split(",")])
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    steps, outputs = {}, {}
    with torch.no_grad():
        for name, fn in runs.items():  # warm-up (kernel selection, allocator)
            outputs[name], steps[name] = fn()
        for _ in range(args.repeats):
            for name, fn in runs.items():
                start = now(device)
                fn()
                seconds[name].append(now(device) - start)
    base = "torchdiffeq"
    results = {name: {"seconds": statistics.median(s), "steps": steps[name],
                      "steps_per_s": steps[name] / statistics.median(s),
                      "images_per_s": args.batch_size / statistics.median(s),
                      "speedup": statistics.median(seconds[base]) / statistics.median(s),
                      "max_abs_diff_vs_torchdiffeq": (outputs[name] - outputs[base]).abs().max().item()}
               for name, s in seconds.items()}
    print(f"adaptive dopri5 step control on {machine(device)}: ConvODEField({args.width}) on "
          f"{args.batch_size}×{args.width}×{args.size}×{args.size}, tol {args.tol:g}, median of {args.repeats}")
    print(table(["solver", "steps", "steps/s", "images/s", "speedup", "max |Δy|"],
                [[k, r["steps"], r["steps_per_s"], r["images_per_s"], r["speedup"], r["max_abs_diff_vs_torchdiffeq"]]
                 for k, r in results.items()]))
    path = write_json("device_rk", {"machine": machine(device), "args": vars(args), "results": results}, args.out)
    print(f"written: {path}")


if __name__ == "__main__":
    main()
