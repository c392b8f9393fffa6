"""CUDA-graph solves of an ODE block vs torchdiffeq's solve of the same block: time, NFE, solution.

odenet.solve.graphs captures an adaptive RK step (replayed k times between host checks,
``GraphedAdaptiveSolver``) or a whole fixed-grid solve (``GraphedFixedGridSolver``). Each is timed
against torchdiffeq's own solve of the same block (same weights, same input, no autograd), with
the harness of ``benchmarks/device_rk.py``: speed-up, NFE equal, largest |Δy|. Adaptive: dopri5 at
``--tol``; fixed grid: ``--fixed-methods`` with ``--steps`` steps. Needs CUDA; without it the script
says so and exits 0 (so a CPU dry run of benchmarks/gpu_check.sh passes over it).

    python benchmarks/cuda_graphs.py [--batch-size 128] [--check-every 1,4,8] [--fixed-methods rk4,euler]
"""

from __future__ import annotations

import functools

import torch

from common import machine, setup, write_json
from device_rk import ATOL, block_and_input, block_parser, compare, report, torchdiffeq_solve, twin

from odenet.models import ODEBlock


def adaptive_runs(block: ODEBlock, x: torch.Tensor, check_every: list[int]) -> dict:
    from odenet.models.ode import block_problem
    from odenet.solve.graphs import GraphedAdaptiveSolver

    def graphed(solver):
        s = solver(x)
        return s.y, s.nfe_forward, s.steps_accepted + s.steps_rejected

    runs = {"torchdiffeq": torchdiffeq_solve(twin(block, fast_rk=False), x)}
    for k in check_every:
        runs[f"CUDA graph, check every {k}"] = functools.partial(graphed, GraphedAdaptiveSolver(block_problem(block, x, per_sample=False), x, check_every=k))
    return runs


def fixed_grid_runs(block: ODEBlock, x: torch.Tensor, method: str, steps: int) -> dict:
    from odenet.solve.graphs import GraphedFixedGridSolver

    fixed = twin(block, method=method, steps=steps)
    solver = GraphedFixedGridSolver(fixed.func, fixed.solver, x, fixed.t)
    return {f"torchdiffeq {method}": torchdiffeq_solve(fixed, x),
            f"CUDA graph {method}": lambda: (solver(x), solver.field_calls, steps)}


def main() -> None:
    p = block_parser(__doc__.splitlines()[0])
    p.add_argument("--check-every", default="1,4,8", help="adaptive: replays between host checks (comma-separated)")
    p.add_argument("--fixed-methods", default="rk4,euler")
    p.add_argument("--steps", type=int, default=6, help="steps of the fixed-grid solves")
    args = p.parse_args()
    device = setup(args)
    if device.type != "cuda":
        print("skipped: no CUDA (CUDA graphs need a GPU)")
        write_json("cuda_graphs", {"skipped": "no CUDA", "machine": machine(device)}, args.out)
        return
    block, x = block_and_input(args, device)
    shape = f"{args.batch_size}×{args.width}×{args.size}×{args.size}"
    results = {"adaptive": compare(adaptive_runs(block, x, [int(k) for k in args.check_every.split(",")]),
                                   args.repeats, device, args.batch_size)}
    print(report(f"CUDA graphs on {machine(device)}: ConvODEField({args.width}) on {shape}, no grad, median of "
                 f"{args.repeats}\nadaptive dopri5, tol {args.tol:g}", results["adaptive"]))
    for method in args.fixed_methods.split(","):
        results[method] = compare(fixed_grid_runs(block, x, method, args.steps), args.repeats, device,
                                  args.batch_size)
        print(report(f"\nfixed grid {method}, {args.steps} steps", results[method]))
    path = write_json("cuda_graphs", {"machine": machine(device), "args": vars(args), "atol": ATOL,
                                      "results": results}, args.out)
    print(f"written: {path}")


if __name__ == "__main__":
    main()
