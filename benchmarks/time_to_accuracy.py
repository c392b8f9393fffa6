"""Time to accuracy: wall-clock from launching a training run until its test accuracy first reaches a target.

Runs ``train.py`` with the arguments after ``--`` (plus its own ``--out-dir``/``--run-name``) and
watches the run's ``metrics.jsonl``: each test row is stamped with the seconds since launch
(start-up, data loading and evaluation included, as a user would time it). The run is stopped once
the target is reached (``--no-stop-at-target`` lets it finish) or after ``--limit`` seconds.
Printed: test accuracy and wall time of every evaluation, the evaluation and time at which the
target was first reached, and whether that is within ``--budget`` seconds.

``--against-plain`` runs, at the same time and beside it, the plain torchdiffeq ODE-Net with the
torchdiffeq example's recipe (``benchmarks/plain_train.py``: same architecture, SGD 0.1, dopri5 1e-3),
timed the same way under the same ``--limit``, so that both sides meet the same machine load; give each
its share of the cores with ``--threads`` (1 on 2 cores) and ``--plain-args "--workers 0"`` (the
example's two loader processes would take the other side's core). It prints the ratio plain / odenet of
the seconds to the target — "> limit" for a side that never reached it — and plots both curves of every
``--repeats`` (``time_to_accuracy.png``). Give train.py ``--limit-train-batches 235`` so that both sides
evaluate the full test set every 30,080 training images (plain_train.py's ``--eval-every``):

    python benchmarks/time_to_accuracy.py --against-plain --threads 1 --plain-args "--workers 0" --repeats 2 \\
        --target 0.90 --limit 1800 -- --config configs/fashion-mnist-odenet-fast.yaml --limit-train-batches 235 \\
        --epochs 6 --no-progress
"""

from __future__ import annotations

import argparse
import json
import os
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


def watch(sides: list[tuple[list[str], Path]], args) -> list[tuple[list[dict], int | None, float]]:
    """Run every side's command at once and watch its metrics file; each stops on its own once it reaches the
    target (with ``--stop-at-target``) or its ``--limit``. Returns per side: evaluations, exit code, wall s."""
    env = dict(os.environ)
    if args.threads:  # each side its share of the cores (torch, OpenMP and MKL pools)
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    start = time.perf_counter()
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env) for cmd, _ in sides]
    evals: list[list[dict]] = [[] for _ in sides]
    ended: list[tuple[int | None, float] | None] = [None] * len(sides)
    while any(e is None for e in ended):
        for k, ((cmd, metrics), proc) in enumerate(zip(sides, procs)):
            if ended[k] is not None:
                continue
            code = proc.poll()
            for row in test_rows(metrics, len(evals[k])):
                evals[k].append({"epoch": row["epoch"], "acc": row["acc"], "wall_s": time.perf_counter() - start})
                print(f"[{Path(cmd[1]).name}] evaluation {row['epoch']}: test acc {row['acc']:.4f} at "
                      f"{evals[k][-1]['wall_s']:.1f} s", flush=True)
            reached = any(e["acc"] >= args.target for e in evals[k])
            if code is not None or (reached and args.stop_at_target) or time.perf_counter() - start > args.limit:
                ended[k] = (_stop(proc) if code is None else code, time.perf_counter() - start)
        time.sleep(0.25)
    return [(e, code, wall) for e, (code, wall) in zip(evals, ended)]


def _stop(proc: subprocess.Popen) -> int:
    proc.terminate()
    try:
        return proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


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


def plot_comparison(repeats: list[dict], path: Path) -> None:
    """Both sides' curves of every repeat in one plot."""
    import matplotlib.pyplot as plt

    sides = [dict(r[side], side=f"{r[side]['side']}, repeat {r.get('repeat', k + 1)}") for k, r in enumerate(repeats)
             for side in ("odenet", "plain")]
    ratios = ", ".join(r["speedup"]["text"] for r in repeats)
    note = (f"Fashion-MNIST: the full test set (10,000 images) after every 30,080 training images, both sides at "
            f"once\ntarget {repeats[0]['target']:.0%}: odenet reached it {ratios} sooner ({len(repeats)} repeats)")
    fig = figure(sides, repeats[0]["target"], note)
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
    p.add_argument("--repeats", type=int, default=1, help="run the whole comparison this many times")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads of each side; with --against-plain both sides run at once, side by side, so "
                        "that both meet the same machine load (give each its share: 1 on 2 cores)")
    p.add_argument("--out", default=None, help="JSON output folder (default: $OUT, else ./bench-out)")
    p.add_argument("--replot", default=None, metavar="JSON",
                   help="only redraw time_to_accuracy.png beside this --against-plain result")
    p.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then train.py's arguments")
    args = p.parse_args()
    if args.replot:
        saved = json.loads(Path(args.replot).read_text())
        plot_comparison(saved.get("repeats", [saved]), Path(args.replot).with_suffix(".png"))
        return
    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    folder = Path(args.out or os.environ.get("OUT") or "bench-out")
    folder.mkdir(parents=True, exist_ok=True)
    repeats = []
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            ours = [sys.executable, str(ROOT / "train.py"), *train_args, "--out-dir", tmp, "--run-name", "tta"]
            sides = [(ours, Path(tmp) / "tta" / "metrics.jsonl")]
            if args.against_plain:
                metrics = Path(tmp) / "plain.jsonl"
                sides.append(([sys.executable, str(ROOT / "benchmarks" / "plain_train.py"), "--metrics", str(metrics),
                               *args.plain_args.split()], metrics))
            for cmd, _ in sides:
                print(f"repeat {repeat + 1}/{args.repeats}, running:", " ".join(cmd), flush=True)
            watched = watch(sides, args)
            names = ["odenet", "plain torchdiffeq (example's recipe)"]
            results = [side_result(name, cmd, *w, args) for name, (cmd, _), w in zip(names, sides, watched)]
            for r in results:
                report_side(r)
        if args.against_plain:
            result = {"target": args.target, "limit_s": args.limit, "odenet": results[0], "plain": results[1],
                      "speedup": speedup(results[1], results[0]), "test_images": 10000, "repeat": repeat + 1,
                      "side_by_side": True, "threads_per_side": args.threads}
            print(f"repeat {repeat + 1}: odenet reached {args.target:.2%} {result['speedup']['text']} sooner than "
                  f"the plain torchdiffeq run beside it", flush=True)
        else:
            result = results[0]
        repeats.append(result)
    result = repeats[0] if len(repeats) == 1 else {"repeats": repeats}
    if args.against_plain:
        plot_comparison(repeats, folder / "time_to_accuracy.png")
        print(f"plot: {folder / 'time_to_accuracy.png'}")
    write_json("time_to_accuracy", result, args.out)


if __name__ == "__main__":
    main()
