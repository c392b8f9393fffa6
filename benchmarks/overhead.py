"""Solver overhead: time(ODE block forward) / (NFE × time of one field evaluation), per tolerance.

1.0 means every microsecond of the block is spent evaluating f; the rest is the solver's own
arithmetic (stage combinations, error norms, step-size control) and our NFE counting. Measured
for odenet's block and for the plain torchdiffeq block (the same field, torch.cat time channel),
at inference (no grad) and in a training forward (grad on), on one Fashion-MNIST batch.

    python benchmarks/overhead.py [--tols 1e-1,1e-2,1e-3,1e-4,1e-5] [--repeats 5]
"""

from __future__ import annotations

import statistics

import torch

from common import fashion_batches, machine, now, parser, setup, table, write_json

from odenet.models import create_backbone
from odenet.models.ode import read_nfe, set_solver
from plain import ODEBlock as PlainBlock
from plain import ODEfunc, copy_weights


def timed(fn, repeats: int, device) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = now(device)
        fn()
        times.append(now(device) - t0)
    return statistics.median(times)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--tols", default="1e-1,1e-2,1e-3,1e-4,1e-5")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    device = setup(args)
    x, _ = fashion_batches(1, args.batch_size, device, args.data_dir)[0]
    torch.manual_seed(0)
    model = create_backbone("odenet", in_channels=1, num_classes=10).to(device)
    block = model.features
    plain = PlainBlock(ODEfunc(64), adjoint=False).to(device)
    copy_weights(block.func, plain.odefunc)
    with torch.no_grad():
        h = model.stem(x)  # (B, 64, 6, 6): the block's input
    t = torch.tensor(0.5, device=device)
    rows, results = [], []
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            f_ours = timed(lambda: block.func(t, h), args.repeats * 4, device)
            f_plain = timed(lambda: plain.odefunc(t, h), args.repeats * 4, device)
            for tol in map(float, args.tols.split(",")):
                set_solver(model, rtol=tol, atol=tol)
                plain.tol = tol
                t_block = timed(lambda: block(h), args.repeats, device)
                nfe = read_nfe(model)["nfe_forward"] // (args.repeats + 1)
                plain.odefunc.nfe = 0
                t_plain = timed(lambda: plain(h), args.repeats, device)
                nfe_plain = plain.odefunc.nfe // (args.repeats + 1)
                r = {"grad": grad, "tol": tol, "nfe": nfe, "nfe_plain": nfe_plain,
                     "f_ms": 1e3 * f_ours, "f_plain_ms": 1e3 * f_plain, "block_ms": 1e3 * t_block,
                     "block_plain_ms": 1e3 * t_plain, "overhead": t_block / (nfe * f_ours),
                     "overhead_plain": t_plain / (nfe_plain * f_plain)}
                results.append(r)
                rows.append(["train" if grad else "eval", tol, nfe, r["f_ms"], r["block_ms"], r["overhead"],
                             nfe_plain, r["f_plain_ms"], r["block_plain_ms"], r["overhead_plain"]])
    print(f"solver overhead on {machine(device)}, batch {args.batch_size}, median of {args.repeats}")
    print(table(["pass", "tol", "NFE", "f ms", "block ms", "overhead", "plain NFE", "plain f ms", "plain block ms",
                 "plain overhead"], rows))
    print(f"written: {write_json('overhead', {'machine': machine(device), 'results': results}, args.out)}")


if __name__ == "__main__":
    main()
