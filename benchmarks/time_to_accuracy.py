"""Time to accuracy: wall-clock from launching a training run until its test accuracy first reaches a target.

Runs ``train.py`` with the arguments after ``--`` (plus its own ``--out-dir``/``--run-name``) and
watches the run's ``metrics.jsonl``: each test row is stamped with the seconds since launch
(start-up, data loading and evaluation included, as a user would time it). The run is stopped once
the target is reached (``--no-stop-at-target`` lets it finish) or after ``--limit`` seconds.
Printed: test accuracy and wall time of every evaluation, the evaluation and time at which the
target was first reached, and whether that is within ``--budget`` seconds.

``--against-plain`` then runs the plain torchdiffeq ODE-Net with the torchdiffeq example's recipe
(``benchmarks/plain_train.py``: same architecture, SGD 0.1, dopri5 1e-3) on the same machine, timed
the same way under the same ``--limit``, and prints the ratio plain / odenet of the seconds to the
target — "> limit" for a side that never reached it — with both curves plotted
(``time_to_accuracy.png``). Give train.py ``--limit-train-batches 235`` so that both sides evaluate
the full test set every 30,080 training images (plain_train.py's ``--eval-every``):

    python benchmarks/time_to_accuracy.py --against-plain --target 0.90 --limit 3600 -- \\
        --config configs/fashion-mnist-odenet-fast.yaml --limit-train-batches 235 --epochs 6 --no-progress
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


def side_result(name: str, cmd: list[str], epochs: list[dict], code: int | None, wall: float, args) -> dict:
    hit = next((e for e in epochs if e["acc"] >= args.target), None)
    return {"side": name, "command": cmd[1:], "target": args.target, "budget_s": args.budget,
            "limit_s": args.limit, "epochs": epochs, "exit_code": code, "wall_s": wall,
            "reached_epoch": hit and hit["epoch"], "reached_s": hit and hit["wall_s"],
            "met": bool(hit and (args.budget is None or hit["wall_s"] <= args.budget)),
            "best_acc": max((e["acc"] for e in epochs), default=None)}


def speedup(plain: dict, ours: dict) -> dict:
    """How many times sooner odenet reached the target: exact when both did, a bound when one did not."""
    p, o = plain["reached_s"], ours["reached_s"]
    if p is not None and o is not None:
        return {"ratio": p / o, "bound": "exact", "text": f"{p / o:.2f}x"}
    if o is not None:  # plain never got there within its limit: at least limit / o
        return {"ratio": plain["limit_s"] / o, "bound": "lower", "text": f"> {plain['limit_s'] / o:.2f}x"}
    if p is not None:
        return {"ratio": p / ours["limit_s"], "bound": "upper", "text": f"< {p / ours['limit_s']:.2f}x"}
    return {"ratio": None, "bound": "none", "text": "neither side reached the target"}


def report_side(r: dict) -> None:
    if r["reached_s"] is not None:
        budget = "" if r["budget_s"] is None else \
            f" ({'within' if r['met'] else 'over'} the {r['budget_s']:.0f} s budget)"
        print(f"{r['side']}: target {r['target']:.2%} reached at evaluation {r['reached_epoch']} after "
              f"{r['reached_s']:.1f} s wall-clock{budget}")
    else:
        print(f"{r['side']}: target {r['target']:.2%} not reached: best test acc {r['best_acc']} after "
              f"{r['wall_s']:.1f} s (> {r['limit_s']:.0f} s limit; {len(r['epochs'])} evaluations, "
              f"exit {r['exit_code']})")


def figure(sides: list[dict], target: float, note: str):
    """Test accuracy against wall-clock minutes, one line per side; a side that never reached the target
    gets a dotted line where its limit stopped it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    for r in sides:
        (line,) = ax.plot([e["wall_s"] / 60 for e in r["epochs"]], [e["acc"] for e in r["epochs"]], "o-",
                          label=r["side"])
        if r["reached_s"] is None:
            ax.axvline(r["limit_s"] / 60, color=line.get_color(), ls=":", lw=1.2,
                       label=f"{r['side']}: stopped at its {r['limit_s'] / 60:.0f}-min limit")
    ax.axhline(target, color="grey", ls="--", lw=1, label=f"target {target:.0%}")
    ax.set_xlabel("wall-clock since launch (min)")
    ax.set_ylabel("test acc (full test set)")
    ax.set_title(note, fontsize=8.5)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_comparison(result: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    note = (f"Fashion-MNIST: the full test set (10,000 images) after every 30,080 training images, batch 128 on "
            f"both sides\ntarget {result['target']:.0%}: odenet reached it {result['speedup']['text']} sooner")
    fig = figure([result["odenet"], result["plain"]], result["target"], note)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", type=float, default=0.90)
    p.add_argument("--budget", type=float, default=None, help="seconds the target must be reached in (a pass/fail "
                                                                 "verdict; default: none)")
    p.add_argument("--limit", type=float, default=3600.0, help="seconds after which a run is stopped (each side)")
    p.add_argument("--stop-at-target", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--against-plain", action="store_true",
                   help="also time benchmarks/plain_train.py (the torchdiffeq example's recipe) and print the ratio")
    p.add_argument("--plain-args", default="", help="extra arguments of plain_train.py, one string")
    p.add_argument("--out", default=None, help="JSON output folder (default: $OUT, else ./bench-out)")
    p.add_argument("--replot", default=None, metavar="JSON",
                   help="only redraw time_to_accuracy.png beside this --against-plain result")
    p.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then train.py's arguments")
    args = p.parse_args()
    if args.replot:
        plot_comparison(json.loads(Path(args.replot).read_text()), Path(args.replot).with_suffix(".png"))
        return
    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    folder = Path(args.out or os.environ.get("OUT") or "bench-out")
    folder.mkdir(parents=True, exist_ok=True)
    sides = []
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, str(ROOT / "train.py"), *train_args, "--out-dir", tmp, "--run-name", "tta"]
        print("running:", " ".join(cmd), flush=True)
        epochs, code, wall = watch(cmd, Path(tmp) / "tta" / "metrics.jsonl", args)
        if (Path(tmp) / "tta" / "metrics.jsonl").exists():
            shutil.copy(Path(tmp) / "tta" / "metrics.jsonl", folder / "time_to_accuracy_metrics.jsonl")
        sides.append(side_result("odenet", cmd, epochs, code, wall, args))
        report_side(sides[-1])
        if args.against_plain:
            metrics = Path(tmp) / "plain.jsonl"
            cmd = [sys.executable, str(ROOT / "benchmarks" / "plain_train.py"), "--metrics", str(metrics),
                   *args.plain_args.split()]
            print("running:", " ".join(cmd), flush=True)
            epochs, code, wall = watch(cmd, metrics, args)
            sides.append(side_result("plain torchdiffeq (example's recipe)", cmd, epochs, code, wall, args))
            report_side(sides[-1])
    result = dict(sides[0])
    if args.against_plain:
        result = {"target": args.target, "limit_s": args.limit, "odenet": sides[0], "plain": sides[1],
                  "speedup": speedup(sides[1], sides[0]), "test_images": 10000}
        plot_comparison(result, folder / "time_to_accuracy.png")
        print(f"odenet reached {args.target:.2%} {result['speedup']['text']} sooner than the plain torchdiffeq "
              f"example (plot: {folder / 'time_to_accuracy.png'})")
    write_json("time_to_accuracy", result, args.out)


if __name__ == "__main__":
    main()
