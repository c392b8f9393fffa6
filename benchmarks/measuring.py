"""What odenet's measuring costs: its training step against the same model stepped plainly.

``odenet.train.step.train_step`` is forward + backward + SGD step with odenet's measuring around
it: the saved-tensor meter (``act_mem_mb``), the NFE counters read and reset, ``acc``, CUDA-event
phase times and the step's synchronisation on the loss. Three copies of one ODE-Net (same initial
weights) train on the same Fashion-MNIST batches, interleaved step by step:

* ``measured``: ``train_step``, as train.py runs it;
* ``no meter``: ``optimizer_step(..., measure_memory=False)``: everything but the meter;
* ``plain``: ``zero_grad(); cross_entropy(model(x), y).backward(); opt.step()`` (the ODE block
  still counts its evaluations, an integer increment per call, read after the timed region).

Times are compared only over steps whose NFE (forward and backward) is the same for all three,
so the ratio is the measuring's cost at equal work; the target is an overhead under 3%. The first
batch is also stepped on the CPU from the same weights: ``act_mem_mb`` and NFE must equal the
device's (the meter counts storages, which do not depend on the device).

    python benchmarks/measuring.py [--modes direct,adjoint] [--steps 30] [--batch-size 128]
"""

from __future__ import annotations

import copy
import statistics

import torch
import torch.nn.functional as F

from common import fashion_batches, machine, now, parser, setup, table, write_json

from odenet.models import SolverSettings, create_backbone, take_nfe
from odenet.train.step import optimizer_step, train_step

SIDES = ("measured", "no meter", "plain")
TARGET = 0.03  # the bound on the measuring's share of a step
MEM_ATOL_MB = 0.01  # act_mem_mb is a sum of storage sizes: equal, not close


def step_fn(side: str, model, opt, params):
    """(x, y) → (nfe_forward, nfe_backward, act_mem_mb or None) for one side."""
    def measured(x, y):
        row = train_step(model, x, y, opt, params)
        return row.get("nfe_forward", 0), row.get("nfe_backward", 0), row.get("act_mem_mb")

    def no_meter(x, y):
        def compute():
            logits = model(x)
            return F.cross_entropy(logits, y), {"acc": (logits.argmax(1) == y).float().mean()}
        row = optimizer_step(model, opt, compute, params=params, measure_memory=False)
        return row.get("nfe_forward", 0), row.get("nfe_backward", 0), None

    def plain(x, y):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        return None  # NFE read after the timer (take_nfe below)

    return {"measured": measured, "no meter": no_meter, "plain": plain}[side]


def build(mode: str, device: torch.device):
    torch.manual_seed(0)
    model = create_backbone("odenet", in_channels=1, num_classes=10,
                            solver=SolverSettings(rtol=1e-3, atol=1e-3, adjoint=mode == "adjoint"))
    return model.to(device)


def sgd(model):
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)


def cpu_check(mode: str, batch, device_row: tuple) -> dict:
    """The first batch stepped on the CPU from the initial weights: NFE and act_mem_mb vs the device's."""
    model = build(mode, torch.device("cpu"))
    x, y = (t.cpu() for t in batch)
    row = train_step(model, x, y, sgd(model), list(model.parameters()))
    cpu = (row.get("nfe_forward", 0), row.get("nfe_backward", 0), row.get("act_mem_mb"))
    return {"cpu_nfe": cpu[:2], "device_nfe": device_row[:2], "nfe_equal": cpu[:2] == device_row[:2],
            "cpu_act_mem_mb": cpu[2], "device_act_mem_mb": device_row[2],
            "act_mem_equal": abs(cpu[2] - device_row[2]) <= MEM_ATOL_MB}


def run_mode(mode: str, batches, warmup: int, device: torch.device) -> dict:
    base = build(mode, device)
    models = {side: copy.deepcopy(base) for side in SIDES}
    steps = {side: step_fn(side, m, sgd(m), list(m.parameters())) for side, m in models.items()}
    times = {side: [] for side in SIDES}
    nfe = {side: [] for side in SIDES}
    first_measured = None
    for i, (x, y) in enumerate(batches):
        for side in SIDES:
            take_nfe(models[side])
            t0 = now(device)
            out = steps[side](x, y)
            t1 = now(device)
            if out is None:
                stats = take_nfe(models[side])
                out = (stats["nfe_forward"], stats["nfe_backward"], None)
            if i == 0 and side == "measured":
                first_measured = out
            if i >= warmup:
                times[side].append(t1 - t0)
                nfe[side].append(out[:2])
    equal = [i for i in range(len(times["plain"])) if nfe["measured"][i] == nfe["no meter"][i] == nfe["plain"][i]]
    mean = {side: statistics.fmean(times[side][i] for i in equal) if equal else float("nan") for side in SIDES}
    bs = len(batches[0][1])
    out = {"mode": mode, "steps": len(times["plain"]), "equal_nfe_steps": len(equal),
           **{f"{side}_step_ms": 1e3 * mean[side] for side in SIDES},
           **{f"{side}_images_per_s": bs / mean[side] for side in SIDES},
           "nfe_forward": statistics.fmean(nfe["plain"][i][0] for i in equal) if equal else float("nan"),
           "ratio": mean["measured"] / mean["plain"], "ratio_no_meter": mean["no meter"] / mean["plain"]}
    out["overhead"] = out["ratio"] - 1
    out["under_3pct"] = out["overhead"] < TARGET
    out["cpu_check"] = cpu_check(mode, batches[0], first_measured)
    return out


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--modes", default="direct,adjoint")
    p.add_argument("--steps", type=int, default=30, help="measured steps per side and mode")
    p.add_argument("--warmup", type=int, default=3)
    args = p.parse_args()
    device = setup(args)
    batches = fashion_batches(args.steps + args.warmup, args.batch_size, device, args.data_dir)
    results = []
    for mode in args.modes.split(","):
        results.append(run_mode(mode, batches, args.warmup, device))
        r, c = results[-1], results[-1]["cpu_check"]
        print(f"{mode:8s} measured/plain {r['ratio']:.3f} (no meter {r['ratio_no_meter']:.3f}) over "
              f"{r['equal_nfe_steps']}/{r['steps']} equal-NFE steps; CPU check: NFE {c['cpu_nfe']} vs "
              f"{c['device_nfe']}, act_mem_mb {c['cpu_act_mem_mb']:.2f} vs {c['device_act_mem_mb']:.2f}", flush=True)
        write_json("measuring", {"machine": machine(device), "batch_size": args.batch_size, "target": TARGET,
                                 "results": results}, args.out)
    print(f"\nmeasuring overhead on {machine(device)}, batch {args.batch_size}, ODE-Net dopri5 1e-3, interleaved")
    print(table(["mode", "plain ms", "no meter ms", "measured ms", "overhead", f"< {TARGET:.0%}", "equal-NFE steps",
                 "CPU NFE equal", "CPU act_mem equal"],
                [[r["mode"], r["plain_step_ms"], r["no meter_step_ms"], r["measured_step_ms"],
                  f"{100 * r['overhead']:+.1f}%", r["under_3pct"], f"{r['equal_nfe_steps']}/{r['steps']}",
                  r["cpu_check"]["nfe_equal"], r["cpu_check"]["act_mem_equal"]] for r in results]))


if __name__ == "__main__":
    main()
