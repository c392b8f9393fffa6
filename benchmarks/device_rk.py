"""Device-side adaptive step control vs torchdiffeq's loop: time, NFE and solution, side by side.

torchdiffeq's adaptive loop reads the device on the host at every step (underflow check,
accept/reject, end test). odenet.solve.drivers keeps those decisions on the device and the
host checks every ``--check-every`` steps. All solve the same ODE-Net block (ConvODEField, random
weights) on the same batch without autograd, interleaved, and must take the same steps: the table
shows each one's NFE next to torchdiffeq's and its largest difference from torchdiffeq's solution.
The rows: torchdiffeq's own dopri5 (``fast_rk=False``, the baseline), odenet's default host loop
(torchdiffeq's control, fast stage arithmetic) and the device-side solve at each k. The CUDA-graph
solvers are measured by ``benchmarks/cuda_graphs.py`` with the same harness (:func:`compare`).

    python benchmarks/device_rk.py [--device cuda] [--batch-size 128] [--tol 1e-3] [--check-every 1,4,8]
"""

from __future__ import annotations

import dataclasses
import functools
import statistics
from collections.abc import Callable

import torch

from common import machine, now, parser, setup, table, write_json

from odenet.models import ODEBlock, SolverSettings, read_nfe
from odenet.models.ode import block_problem
from odenet.solve.drivers import solve_on_device
from odenet.models.layers import ConvODEField

# A solve under test: () → (y, NFE as ODEBlock counts it, steps attempted).
Solve = Callable[[], tuple[torch.Tensor, int, int]]
# Largest |Δy| still "the same solution": float32 rounding of a different stage arithmetic over ~20
# steps of a GroupNorm-ed field with |y| ~ 1-10 stays near 1e-5; a flipped accept/reject would be ~1e-3.
ATOL = 1e-4


def block_and_input(args, device: torch.device, **solver) -> tuple[ODEBlock, torch.Tensor]:
    """The benchmark's ODE block (ConvODEField(width), seed 0) and a random (B, width, size, size) input."""
    torch.manual_seed(0)
    settings = SolverSettings(rtol=args.tol, atol=args.tol, **solver)
    block = ODEBlock(ConvODEField(args.width), settings).to(device)
    x = torch.randn(args.batch_size, args.width, args.size, args.size, device=device)
    return block, x


def torchdiffeq_solve(block: ODEBlock, x: torch.Tensor) -> Solve:
    """The block's own forward (torchdiffeq's odeint), counted by the block."""
    def solve():
        block.stats.reset()
        y = block(x)
        stats = read_nfe(block)
        return y, stats["nfe_forward"], stats["steps_accepted"] + stats["steps_rejected"]
    return solve


def twin(block: ODEBlock, **changes) -> ODEBlock:
    """A block sharing ``block``'s field (same weights) with other solver settings."""
    return ODEBlock(block.func, dataclasses.replace(block.solver, **changes)).to(block.t.device)


def solvers(block: ODEBlock, x: torch.Tensor, check_every: list[int]) -> dict[str, Solve]:
    """name → solve; the first is the baseline (torchdiffeq's own dopri5)."""
    def device_side(k: int):
        s = solve_on_device(block_problem(block, x, per_sample=False), x, check_every=k)
        return s.y, s.nfe_forward, s.steps_accepted + s.steps_rejected

    out = {"torchdiffeq": torchdiffeq_solve(twin(block, fast_rk=False), x),
           "host loop (odenet fast_rk)": torchdiffeq_solve(block, x)}
    for k in check_every:
        out[f"device, check every {k}"] = functools.partial(device_side, k)
    return out


@torch.no_grad()
def compare(runs: dict[str, Solve], repeats: int, device: torch.device, batch_size: int) -> dict[str, dict]:
    """Time every solve (median of ``repeats``, interleaved) against the first: speed-up, NFE, |Δy|."""
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    first = {name: fn() for name, fn in runs.items()}  # also the warm-up (kernel selection, allocator, capture)
    for _ in range(repeats):
        for name, fn in runs.items():
            start = now(device)
            fn()
            seconds[name].append(now(device) - start)
    base = next(iter(runs))
    y0, nfe0, _ = first[base]
    results = {}
    for name, s in seconds.items():
        y, nfe, steps = first[name]
        diff = (y.float() - y0.float()).abs().max().item()
        results[name] = {"seconds": statistics.median(s), "steps": steps, "nfe_forward": nfe,
                         "nfe_equal": nfe == nfe0, "steps_per_s": steps / statistics.median(s),
                         "images_per_s": batch_size / statistics.median(s),
                         "speedup": statistics.median(seconds[base]) / statistics.median(s),
                         "max_abs_diff": diff, "solution_close": diff <= ATOL}
    return results


def report(title: str, results: dict[str, dict]) -> str:
    rows = [[k, r["nfe_forward"], r["nfe_equal"], r["steps_per_s"], r["images_per_s"], r["speedup"],
             r["max_abs_diff"], r["solution_close"]] for k, r in results.items()]
    return title + "\n" + table(["solver", "NFE", "NFE equal", "steps/s", "images/s", "speedup", "max |Δy|",
                                 f"|Δy| ≤ {ATOL:g}"], rows)


def block_parser(description: str):
    p = parser(description)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--size", type=int, default=6, help="feature-map side (the paper's MNIST ODE block: 6)")
    p.add_argument("--tol", type=float, default=1e-3)
    p.add_argument("--repeats", type=int, default=5)
    return p


def main() -> None:
    p = block_parser(__doc__.splitlines()[0])
    p.add_argument("--check-every", default="1,4,8", help="steps between host checks (comma-separated)")
    args = p.parse_args()
    device = setup(args)
    block, x = block_and_input(args, device)
    results = compare(solvers(block, x, [int(k) for k in args.check_every.split(",")]), args.repeats, device,
                      args.batch_size)
    print(report(f"adaptive dopri5 step control on {machine(device)}: ConvODEField({args.width}) on "
                 f"{args.batch_size}×{args.width}×{args.size}×{args.size}, tol {args.tol:g}, no grad, median of "
                 f"{args.repeats}", results))
    path = write_json("device_rk", {"machine": machine(device), "args": vars(args), "atol": ATOL,
                                    "results": results}, args.out)
    print(f"written: {path}")


if __name__ == "__main__":
    main()
