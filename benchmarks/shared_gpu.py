"""Several training runs on one GPU: aggregate images/s of 1, 2, 4, 8 concurrent train.py processes.

At batch 128 an ODE-Net step is bound by kernel launches and Python, not by the GPU's arithmetic,
so processes sharing one GPU may add up to more than one process alone. For each N this launches N
``train.py`` runs at once (ODE-Net, dopri5 1e-3, Fashion-MNIST, ``--data-on-device``, seeds 0..N-1,
``--limit-train-batches --steps``, one short test pass), waits for all, and reads each run's
``metrics.jsonl``. A run's throughput is batch / its median step time (``time_step_ms`` +
``time_data_ms``) after ``--skip`` warm-up steps: the median is that of the stretch where all N
overlap as long as start-up skew is under half the run. Printed: aggregate (sum) images/s, per run,
and the scaling against N = 1; also images / wall-clock including start-up, for reference.

    python benchmarks/shared_gpu.py [--jobs 1,2,4,8] [--steps 80] [--device auto] [--data-dir DIR]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import parser, table, write_json

ROOT = Path(__file__).resolve().parents[1]


def command(args, run_dir: Path, seed: int) -> list[str]:
    cmd = [sys.executable, str(ROOT / "train.py"), "--backbone", "odenet", "--dataset", "fashion-mnist",
           "--epochs", "1", "--batch-size", str(args.batch_size), "--limit-train-batches", str(args.steps),
           "--limit-test-batches", "1", "--no-progress", "--device", args.device, "--seed", str(seed),
           "--out-dir", str(run_dir), "--run-name", f"run{seed}"]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    return cmd + (["--data-on-device"] if args.device != "cpu" else [])


def run_throughput(metrics: Path, batch_size: int, skip: int) -> float:
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    steps = [r["time_step_ms"] + r.get("time_data_ms", 0.0) for r in rows if r["split"] == "train"][skip:]
    return batch_size / (statistics.median(steps) / 1e3)


def launch(args, n: int, folder: Path) -> dict:
    """N concurrent runs → per-run and aggregate images/s (or the failures)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // n))}
    start = time.perf_counter()
    procs = []
    for seed in range(n):
        log = open(folder / f"run{seed}.log", "w")
        procs.append((subprocess.Popen(command(args, folder, seed), stdout=log, stderr=subprocess.STDOUT, env=env,
                                       cwd=ROOT), log))
    codes = []
    for proc, log in procs:
        try:
            codes.append(proc.wait(timeout=max(1.0, args.timeout - (time.perf_counter() - start))))
        except subprocess.TimeoutExpired:
            proc.kill()
            codes.append(proc.wait())
        log.close()
    wall = time.perf_counter() - start
    per_run = []
    for seed, code in enumerate(codes):
        metrics = folder / f"run{seed}" / "metrics.jsonl"
        if code != 0 or not metrics.exists():
            tail = (folder / f"run{seed}.log").read_text().splitlines()[-3:]
            return {"jobs": n, "failed": f"run {seed} exited {code}: " + " | ".join(tail), "wall_s": wall}
        per_run.append(run_throughput(metrics, args.batch_size, args.skip))
    return {"jobs": n, "per_run_images_per_s": per_run, "aggregate_images_per_s": sum(per_run),
            "wall_s": wall, "images_per_wall_s": n * args.steps * args.batch_size / wall}


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--jobs", default="1,2,4,8", help="numbers of concurrent runs (comma-separated)")
    p.add_argument("--steps", type=int, default=80, help="training batches per run")
    p.add_argument("--skip", type=int, default=5, help="warm-up steps left out of each run's median")
    p.add_argument("--timeout", type=float, default=120, help="seconds per N before its runs are killed")
    args = p.parse_args()
    if args.skip >= args.steps:
        p.error(f"--skip {args.skip} leaves no step of --steps {args.steps}")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in [int(j) for j in args.jobs.split(",")]:
            folder = Path(tmp) / f"jobs{n}"
            folder.mkdir()
            results.append(launch(args, n, folder))
            r = results[-1]
            print(f"{n} concurrent: " + (r["failed"] if "failed" in r else
                  f"aggregate {r['aggregate_images_per_s']:.0f} img/s, per run "
                  + " ".join(f"{v:.0f}" for v in r["per_run_images_per_s"]) + f", wall {r['wall_s']:.1f} s"),
                  flush=True)
            write_json("shared_gpu", {"device": args.device, "batch_size": args.batch_size, "steps": args.steps,
                                      "results": results}, args.out)
    ok = [r for r in results if "failed" not in r]
    if ok:
        one = ok[0]["aggregate_images_per_s"]
        print(f"\nconcurrent ODE-Net training runs on one {args.device} device, batch {args.batch_size}, "
              f"{args.steps} steps each")
        print(table(["runs", "aggregate img/s", "vs first", "mean per run img/s", "img / wall s (with start-up)"],
                    [[r["jobs"], r["aggregate_images_per_s"], r["aggregate_images_per_s"] / one,
                      statistics.fmean(r["per_run_images_per_s"]), r["images_per_wall_s"]] for r in ok]))


if __name__ == "__main__":
    main()
