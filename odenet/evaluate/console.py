"""What eval.py prints: one line (or a tqdm bar) per finished setting, and the sweep as a table."""

from __future__ import annotations

import shutil
import sys
import time
from typing import Any

from tqdm import tqdm


def setting_label(solver: str | None, tol: float | None = None, steps: int | None = None) -> str:
    """"dopri5 tol 0.001", "rk4 steps 8" or "(no ODE solver)": a sweep setting in messages."""
    if solver is None:
        return "(no ODE solver)"
    return f"{solver} tol {tol:g}" if tol is not None else f"{solver} steps {steps}"


def format_table(meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """The sweep as a plain-text table for the terminal."""
    head = ["solver", "tol/steps", "acc", "nfe_forward", "time_ms median (min-max)", "images", "batch"]
    body = []
    for r in rows:
        setting = "—" if r["solver"] is None else (f"{r['tol']:g}" if r["tol"] is not None else f"{r['steps']} steps")
        time = f"{r['time_ms']:.1f} ({r['time_ms_min']:.1f}-{r['time_ms_max']:.1f})" + (" noisy" if r["time_noisy"]
                                                                                       else "")
        nfe = f"{r['nfe_forward']:.1f}" if "nfe_forward" in r else "—"
        body.append([r["solver"] or meta["backbone"], setting, f"{r['acc']:.4f}", nfe, time, f"{r['images']:,}",
                     str(meta["batch_size"])])
    widths = [max(len(c) for c in col) for col in zip(head, *body)]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
             for line in [head, ["-" * w for w in widths], *body]]
    return "\n".join(lines)


class Progress:
    """What eval.py says while it sweeps: a line at once (reading the checkpoint and the test images takes a
    while), then one per finished setting with the time left at the mean time a setting has taken so far
    (evaluation passes, reference solves and memory probe included); on a terminal a tqdm bar on stderr instead of
    the per-setting lines."""

    def __init__(self) -> None:
        self.bar, self.started = None, time.perf_counter()
        print("eval: reading the checkpoint, building the model and loading the test images", flush=True)

    def __call__(self, done: int, total: int, row: dict[str, Any]) -> None:
        label = setting_label(row["solver"], row["tol"], row["steps"])
        elapsed = time.perf_counter() - self.started
        left = f"; about {elapsed / done * (total - done):.0f} s left" if done < total else ""
        if sys.stderr.isatty():
            if self.bar is None:
                # A terminal that reports no size (0 columns) still gets a bar of 80.
                self.bar = tqdm(total=total, desc="sweep", unit="setting", file=sys.stderr,
                                leave=False, ncols=shutil.get_terminal_size((80, 24)).columns or 80)
            self.bar.set_postfix_str(f"{label}: acc {row['acc']:.4f}")
            self.bar.update(1)
            if done == total:
                self.bar.close()
            return
        nfe = f", nfe_forward {row['nfe_forward']:.1f}" if "nfe_forward" in row else ""
        print(f"[{done}/{total}] {label}: acc {row['acc']:.4f}{nfe}, time_ms {row['time_ms']:.1f}; "
              f"{elapsed:.0f} s so far{left}", flush=True)
