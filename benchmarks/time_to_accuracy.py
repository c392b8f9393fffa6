"""Time to accuracy: wall-clock from launching train.py until its test accuracy first reaches a target.

Runs ``train.py`` with the arguments after ``--`` (plus its own ``--out-dir``/``--run-name``) and
watches the run's ``metrics.jsonl``: each epoch's test row is stamped with the seconds since launch
(start-up, data loading and evaluation included, as a user would time it). The run is stopped once
the target is reached (``--no-stop-at-target`` lets it finish) or after ``--limit`` seconds.
Printed: test accuracy and wall time of every epoch, the epoch and time at which the target was
first reached, and whether that is within ``--budget`` seconds.

    python benchmarks/time_to_accuracy.py --target 0.93 --budget 180 --limit 200 -- \\
        --backbone odenet --dataset fashion-mnist --data-on-device --optimizer adamw --schedule onecycle ...
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import write_json  # noqa: E402  (after the path set-up of a script run from anywhere)


def test_rows(metrics: Path, seen: int) -> list[dict]:
    """Test rows of ``metrics`` after the first ``seen`` (complete lines only: the file may be mid-write)."""
    if not metrics.exists():
        return []
    lines = metrics.read_text().split("\n")[:-1]
    return [r for r in map(json.loads, lines) if r["split"] == "test"][seen:]


def watch(cmd: list[str], metrics: Path, args) -> tuple[list[dict], int | None, float]:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT)
    epochs: list[dict] = []
    while True:
        code = proc.poll()
        for row in test_rows(metrics, len(epochs)):
            epochs.append({"epoch": row["epoch"], "acc": row["acc"], "wall_s": time.perf_counter() - start})
            print(f"epoch {row['epoch']}: test acc {row['acc']:.4f} at {epochs[-1]['wall_s']:.1f} s", flush=True)
        reached = any(e["acc"] >= args.target for e in epochs)
        if code is not None or (reached and args.stop_at_target) or time.perf_counter() - start > args.limit:
            break
        time.sleep(0.25)
    if code is None:
        proc.terminate()
        try:
            code = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
    return epochs, code, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", type=float, default=0.93)
    p.add_argument("--budget", type=float, default=180.0, help="seconds the target must be reached in")
    p.add_argument("--limit", type=float, default=200.0, help="seconds after which the run is stopped")
    p.add_argument("--stop-at-target", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--out", default=None, help="JSON output folder (default: $OUT, else ./bench-out)")
    p.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then train.py's arguments")
    args = p.parse_args()
    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, str(ROOT / "train.py"), *train_args, "--out-dir", tmp, "--run-name", "tta"]
        print("running:", " ".join(cmd), flush=True)
        epochs, code, wall = watch(cmd, Path(tmp) / "tta" / "metrics.jsonl", args)
        folder = Path(args.out or os.environ.get("OUT") or "bench-out")
        folder.mkdir(parents=True, exist_ok=True)
        if (Path(tmp) / "tta" / "metrics.jsonl").exists():
            shutil.copy(Path(tmp) / "tta" / "metrics.jsonl", folder / "time_to_accuracy_metrics.jsonl")
    hit = next((e for e in epochs if e["acc"] >= args.target), None)
    result = {"command": cmd[1:], "target": args.target, "budget_s": args.budget, "epochs": epochs,
              "exit_code": code, "wall_s": wall, "reached_epoch": hit and hit["epoch"],
              "reached_s": hit and hit["wall_s"], "met": bool(hit and hit["wall_s"] <= args.budget),
              "best_acc": max((e["acc"] for e in epochs), default=None)}
    write_json("time_to_accuracy", result, args.out)
    if hit:
        print(f"target {args.target:.2%} reached at epoch {hit['epoch']} after {hit['wall_s']:.1f} s wall-clock "
              f"({'within' if result['met'] else 'over'} the {args.budget:.0f} s budget)")
    else:
        print(f"target {args.target:.2%} not reached: best test acc {result['best_acc']} after {wall:.1f} s "
              f"({len(epochs)} epochs, train.py exit {code})")


if __name__ == "__main__":
    main()
