"""Reports from saved run directories alone: config.yaml, metrics.jsonl, summary.json, sweep.json.

Nothing here imports torch, so a report can be rebuilt anywhere from copied run directories
(``odenet-report runs/*``). Two reports exist:

* :func:`combined_report` over many training runs — Table 1 of Chen et al. 2018 with the
  paper's numbers beside ours, the four panels of its Figure 3, and accuracy / memory
  against NFE and tolerance;
* :func:`sweep_report` for one checkpoint's test-time tolerance sweep (``eval.py``).

Both are written by :func:`write_report` as ``report.md``, a self-contained ``report.html``
(figures embedded as base64 PNG) and the PNG files.
"""

from __future__ import annotations

import argparse
import base64
import csv
import io
import json
import math
import statistics
import sys
import weakref
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# Chen et al. 2018, Table 1 (MNIST). Memory and time are the paper's asymptotic claims:
# L = number of layers, L~ = number of function evaluations.
PAPER_TABLE1 = {
    "mlp": {"error": "1.60%", "params": "0.24 M", "memory": "-", "time": "-"},
    "resnet": {"error": "0.41%", "params": "0.60 M", "memory": "O(L)", "time": "O(L)"},
    "rknet": {"error": "0.47%", "params": "0.22 M", "memory": "O(L~)", "time": "O(L~)"},
    "odenet": {"error": "0.42%", "params": "0.22 M", "memory": "O(1)", "time": "O(L~)"},
}
TABLE1_ORDER = ("mlp", "resnet", "rknet", "odenet")
SWEEP_COLUMNS = ("solver", "tol", "atol", "steps", "acc", "loss", "nfe_forward", "nfe_forward_min", "nfe_forward_max",
                 "steps_accepted", "steps_rejected", "ode_error", "time_ms", "images_per_s", "act_mem_mb",
                 "peak_mem_mb", "flops", "images")


def run_label(config: dict[str, Any]) -> str:
    """A run as a reader names it: "resnet", "odenet dopri5 tol 0.001 adjoint", "rknet rk4 6 steps direct"."""
    if config.get("solver") is None:
        return config["backbone"]
    setting = f"tol {config['rtol']:g}" if config.get("rtol") is not None else f"{config['steps']} steps"
    how = "adjoint" if config.get("adjoint") else "direct"
    return f"{config['backbone']} {config['solver']} {setting} {how}"


class ReportError(ValueError):
    """Input that cannot be reported on; the message says which and why."""


# --------------------------------------------------------------------------- loading

@dataclass
class Run:
    """One training run directory, as saved."""

    path: Path
    config: dict[str, Any]
    rows: list[dict[str, Any]]
    summary: dict[str, Any] | None
    sweep: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def is_ode(self) -> bool:
        return self.config.get("solver") is not None

    @property
    def adjoint(self) -> bool:
        return bool(self.config.get("adjoint"))

    @property
    def label(self) -> str:
        return run_label(self.config)

    @property
    def train_rows(self) -> list[dict]:
        return [r for r in self.rows if r["split"] == "train"]

    @property
    def test_rows(self) -> list[dict]:
        return [r for r in self.rows if r["split"] == "test"]

    def final_test(self) -> dict[str, Any]:
        return self.test_rows[-1] if self.test_rows else {}

    def last_epoch_means(self) -> dict[str, float]:
        rows = self.train_rows
        if not rows:
            return {}
        last = [r for r in rows if r["epoch"] == rows[-1]["epoch"]]
        keys = {k for r in last for k, v in r.items() if isinstance(v, (int, float)) and k not in ("epoch", "step")}
        return {k: statistics.fmean(r[k] for r in last if k in r) for k in keys}


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file (metrics.jsonl); a torn last line (a crash mid-write) is dropped."""
    path = Path(path)
    rows = []
    lines = path.read_text().splitlines() if path.exists() else []
    for number, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if number != len(lines) - 1:  # a torn last line is a crash mid-write; anything else is damage
                raise ReportError(f"{path} line {number + 1} is not JSON; the file is damaged") from None
    return rows


def load_run(path: str | Path) -> Run:
    path = Path(path)
    if not (path / "config.yaml").is_file():
        raise ReportError(f"{path} is not a run directory (no config.yaml)")
    config = yaml.safe_load((path / "config.yaml").read_text())
    summary_path = path / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    sweep_path = path / "sweep.json"
    sweep = json.loads(sweep_path.read_text())["rows"] if sweep_path.is_file() else []
    return Run(path, config, read_jsonl(path / "metrics.jsonl"), summary, sweep)


def find_runs(paths: list[str | Path]) -> list[Run]:
    """Run directories among ``paths`` or directly inside them, in sorted order."""
    found: list[Path] = []
    for p in map(Path, paths):
        if (p / "config.yaml").is_file():
            found.append(p)
        elif p.is_dir():
            found.extend(sorted(d for d in p.iterdir() if (d / "config.yaml").is_file()))
        else:
            raise ReportError(f"{p} does not exist")
    if not found:
        raise ReportError(f"no run directories (folders with config.yaml) in {', '.join(map(str, paths))}")
    return [load_run(p) for p in found]


# --------------------------------------------------------------------------- formatting

def fmt(value: Any, spec: str = ".4g") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, bool) or isinstance(value, str):
        return str(value)
    if isinstance(value, int) and spec == ",":
        return f"{value:,}"
    return format(value, spec)


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float] | None:
    """Least-squares slope and intercept; None when x does not vary."""
    if len(xs) < 2 or len(set(xs)) < 2:
        return None
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    return slope, my - slope * mx


# --------------------------------------------------------------------------- report container

@dataclass
class Section:
    title: str
    text: str
    figures: list[str] = field(default_factory=list)


@dataclass
class Report:
    title: str
    sections: list[Section]
    figures: dict[str, Any]  # name → matplotlib Figure

    def markdown(self, embed: bool = False) -> str:
        out = [f"# {self.title}", ""]
        for s in self.sections:
            out += [f"## {s.title}", "", s.text, ""]
            for name in s.figures:
                src = f"data:image/png;base64,{_png_b64(self.figures[name])}" if embed else f"{name}.png"
                out += [f"![{name}]({src})", ""]
        return "\n".join(out)


_PNG_CACHE: "weakref.WeakKeyDictionary[Any, bytes]"


def _png_bytes(figure) -> bytes:
    """The figure rendered once (the PNG file, the HTML and TensorBoard all use the same bytes)."""
    cached = _PNG_CACHE.get(figure)
    if cached is None:
        buf = io.BytesIO()
        figure.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        cached = _PNG_CACHE[figure] = buf.getvalue()
    return cached


def _png_b64(figure) -> str:
    return base64.b64encode(_png_bytes(figure)).decode()


_PNG_CACHE = weakref.WeakKeyDictionary()


HTML_STYLE = ("body{font-family:system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem;color:#222}"
              "table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:.25rem .5rem;"
              "text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}"
              "img{max-width:100%}code{background:#f4f4f4}")


def to_html(report: Report) -> str:
    import markdown  # a dependency of tensorboard

    body = markdown.markdown(report.markdown(embed=True), extensions=["tables"])
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{report.title}</title>"
            f"<style>{HTML_STYLE}</style></head><body>\n{body}\n</body></html>\n")


def write_report(report: Report, out_dir: str | Path) -> dict[str, Path]:
    """Write report.md (+ PNGs beside it) and a self-contained report.html into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, figure in report.figures.items():
        written[name] = out / f"{name}.png"
        written[name].write_bytes(_png_bytes(figure))
    written["report.md"] = out / "report.md"
    written["report.md"].write_text(report.markdown())
    written["report.html"] = out / "report.html"
    written["report.html"].write_text(to_html(report))
    return written


def _figure(title: str, xlabel: str, ylabel: str, logx: bool = False, logy: bool = False):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    return fig, ax


def _finish(fig, ax, empty_note: str | None = None):
    if empty_note:
        ax.text(0.5, 0.5, empty_note, ha="center", va="center", transform=ax.transAxes, fontsize=9, wrap=True)
    elif ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    import matplotlib.pyplot as plt

    plt.close(fig)
    return fig


# --------------------------------------------------------------------------- combined report

def runs_table(runs: list[Run]) -> str:
    header = ["run", "epochs", "test acc", "best acc", "nfe_forward", "nfe_backward", "act_mem_mb", "peak_mem_mb",
              "time_step_ms", "params", "status"]
    rows = []
    for run in runs:
        means, test = run.last_epoch_means(), run.final_test()
        s = run.summary or {}
        rows.append([f"`{run.name}`", fmt(test.get("epoch"), "d"), fmt(test.get("acc")), fmt(s.get("best_acc")),
                     fmt(means.get("nfe_forward"), ".1f"), fmt(means.get("nfe_backward"), ".1f"),
                     fmt(means.get("act_mem_mb"), ".1f"), fmt(means.get("peak_mem_mb"), ".1f"),
                     fmt(means.get("time_step_ms"), ".0f"), fmt(s.get("params"), ","),
                     "complete" if run.summary else "incomplete"])
    return md_table(header, rows)


def table1(runs: list[Run]) -> str:
    """Chen et al. 2018 Table 1 with our measured figures beside the paper's."""
    header = ["method", "test error", "paper", "params", "paper", "act_mem_mb", "peak_mem_mb", "paper memory",
              "time_step_ms", "nfe_forward", "paper time"]
    rows = []
    by_backbone = defaultdict(list)
    for run in runs:
        by_backbone[run.config["backbone"]].append(run)
    for backbone in TABLE1_ORDER + tuple(b for b in sorted(by_backbone) if b not in TABLE1_ORDER):
        paper = PAPER_TABLE1.get(backbone, {"error": "—", "params": "—", "memory": "—", "time": "—"})
        for run in by_backbone.get(backbone) or [None]:
            if run is None:
                rows.append([backbone + " (not run)", "—", paper["error"], "—", paper["params"], "—", "—",
                             paper["memory"], "—", "—", paper["time"]])
                continue
            means, test = run.last_epoch_means(), run.final_test()
            params = (run.summary or {}).get("params")
            rows.append([run.label, fmt(100 * (1 - test["acc"]), ".2f") + "%" if test else "—", paper["error"],
                         fmt(params / 1e6, ".3f") + " M" if params else "—", paper["params"],
                         fmt(means.get("act_mem_mb"), ".1f"), fmt(means.get("peak_mem_mb"), ".1f"), paper["memory"],
                         fmt(means.get("time_step_ms"), ".0f"), fmt(means.get("nfe_forward"), ".1f"),
                         paper["time"]])
    return md_table(header, rows)


def _epoch_means(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    per_epoch = defaultdict(list)
    for r in rows:
        if key in r:
            per_epoch[r["epoch"]].append(r[key])
    epochs = sorted(per_epoch)
    return epochs, [statistics.fmean(per_epoch[e]) for e in epochs]


def _tol_line(ax, rows: list[dict], xkey: str, ykey: str, label: str) -> None:
    """Points joined from loose to tight setting, each labelled with its tolerance (or steps)."""
    rows = sorted(rows, key=lambda r: (-(r.get("tol") or 0), r.get("steps") or 0))
    if not rows:
        return
    ax.plot([r[xkey] for r in rows], [r[ykey] for r in rows], "o-", label=label)
    for r in rows:
        text = f"{r['tol']:g}" if r.get("tol") else f"{r.get('steps')} st"
        ax.annotate(text, (r[xkey], r[ykey]), textcoords="offset points", xytext=(4, 4), fontsize=7)


def _sweep_lines(ax, run: Run, rows: list[dict], xkey: str, ykey: str) -> None:
    """One line per solver of a run's sweep: a sweep over several solvers is several curves."""
    for solver, group in _by_solver(rows).items():
        label = run.label if solver == run.config.get("solver") else f"{run.label}, evaluated with {solver}"
        _tol_line(ax, group, xkey, ykey, label)


def fig3a(runs: list[Run]):
    fig, ax = _figure("Fig. 3a: NFE vs numerical error (test-time sweep)", "nfe_forward", "ODE block error",
                      logy=True)
    for run in runs:
        _sweep_lines(ax, run, [r for r in run.sweep if r.get("ode_error")], "nfe_forward", "ode_error")
    has = any(r.get("ode_error") for run in runs for r in run.sweep)
    return _finish(fig, ax, None if has else "no test-time sweep in these runs:\nrun eval.py --checkpoint RUN/last.pt")


def fig3b(runs: list[Run]):
    """Forward time against NFE: test-time sweeps span the NFE range (one line per run); without
    them, the training steps (whose NFE varies little at a fixed tolerance)."""
    swept = [r for r in runs if r.sweep and any(row.get("nfe_forward") for row in r.sweep)]
    if swept:
        fig, ax = _figure("Fig. 3b: NFE vs forward time (test-time sweep)", "nfe_forward per batch",
                          "forward time per test batch (ms)")
        for run in swept:
            _sweep_lines(ax, run, [row for row in run.sweep if row.get("nfe_forward")], "nfe_forward", "time_ms")
        return _finish(fig, ax)
    fig, ax = _figure("Fig. 3b: NFE vs forward time (training steps)", "nfe_forward", "time_forward_ms")
    for run in runs:
        rows = [r for r in run.train_rows if "nfe_forward" in r]
        if rows:
            ax.scatter([r["nfe_forward"] for r in rows], [r["time_forward_ms"] for r in rows], s=6, alpha=0.5,
                       label=run.label)
    return _finish(fig, ax, None if any(r.is_ode for r in runs) else "no ODE runs")


def fig3c(runs: list[Run]):
    fig, ax = _figure("Fig. 3c: NFE forward vs backward (adjoint runs)", "nfe_forward", "nfe_backward")
    adjoint = [r for r in runs if r.is_ode and r.adjoint]
    top = 1
    for run in adjoint:
        xs = [r["nfe_forward"] for r in run.train_rows]
        ys = [r["nfe_backward"] for r in run.train_rows]
        top = max([top, *xs, *ys])
        ax.scatter(xs, ys, s=6, alpha=0.5, label=run.label)
    if adjoint:
        ax.plot([0, top], [0, top], "k--", lw=0.8, label="backward = forward")
        ax.plot([0, top], [0, top / 2], "k:", lw=0.8, label="backward = forward / 2 (paper)")
    return _finish(fig, ax, None if adjoint else "no adjoint runs: backward NFE is 0 with direct backprop;\n"
                                                  "add --adjoint runs to the grid")


def fig3d(runs: list[Run]):
    fig, ax = _figure("Fig. 3d: NFE over training", "epoch", "mean NFE per step")
    for run in runs:
        if not run.is_ode:
            continue
        epochs, values = _epoch_means(run.train_rows, "nfe_forward")
        line = ax.plot(epochs, values, "o-", label=f"{run.label} forward")[0]
        if run.adjoint:
            epochs, values = _epoch_means(run.train_rows, "nfe_backward")
            ax.plot(epochs, values, "s--", color=line.get_color(), label=f"{run.label} backward")
    return _finish(fig, ax, None if any(r.is_ode for r in runs) else "no ODE runs")


def fig_acc_vs_nfe(runs: list[Run]):
    fig, ax = _figure("Test accuracy vs NFE", "test nfe_forward per batch", "test acc")
    for run in runs:
        test = run.final_test()
        if test and "nfe_forward" in test:
            ax.scatter([test["nfe_forward"]], [test["acc"]], label=run.label)
        elif test:
            ax.axhline(test["acc"], ls="--", lw=0.8, color="gray", label=f"{run.label} (no ODE)")
    return _finish(fig, ax)


def fig_acc_vs_tol(runs: list[Run]):
    fig, ax = _figure("Test accuracy vs tolerance", "tolerance", "test acc", logx=True)
    trained = defaultdict(list)  # one line per kind of run: backbone, solver, direct or adjoint
    for r in runs:
        if r.config.get("rtol") and r.final_test():
            kind = f"{r.config['backbone']} {r.config['solver']} {'adjoint' if r.adjoint else 'direct'}"
            trained[kind].append((r.config["rtol"], r.final_test()["acc"]))
    for kind, points in trained.items():
        ax.plot(*zip(*sorted(points)), "o-", label=f"{kind}, trained at this tolerance")
    for run in runs:
        for solver, group in _by_solver([r for r in run.sweep if r.get("tol")]).items():
            points = sorted((r["tol"], r["acc"]) for r in group)
            with_solver = "" if solver == run.config.get("solver") else f" with {solver}"
            ax.plot(*zip(*points), "x--", label=f"{run.label}: evaluated{with_solver} at other tolerances")
    return _finish(fig, ax, None if trained or any(r.sweep for r in runs) else "no adaptive-solver runs")


def fig_memory_vs_nfe(runs: list[Run]):
    fig, ax = _figure("Activation memory vs NFE (training steps)", "nfe_forward", "act_mem_mb")
    for run in runs:
        rows = [r for r in run.train_rows if "act_mem_mb" in r]
        if not rows:
            continue
        if run.is_ode:
            ax.scatter([r["nfe_forward"] for r in rows], [r["act_mem_mb"] for r in rows], s=8, alpha=0.5,
                       marker="s" if run.adjoint else "o", label=run.label)
        else:
            ax.axhline(statistics.fmean(r["act_mem_mb"] for r in rows), ls="--", lw=0.8, color="gray",
                       label=f"{run.label} (fixed depth)")
    return _finish(fig, ax)


def measured_findings(runs: list[Run]) -> str:
    """What the runs show, stated as measured numbers (no claims carried over from the paper)."""
    lines = []
    for run in runs:
        if not run.is_ode:
            continue
        rows = run.train_rows
        if run.adjoint and rows:
            ratios = [r["nfe_backward"] / r["nfe_forward"] for r in rows if r.get("nfe_forward")]
            lines.append(f"- `{run.name}`: backward/forward NFE ratio median {statistics.median(ratios):.2f} "
                         f"(range {min(ratios):.2f}–{max(ratios):.2f}) over {len(ratios)} steps. The paper reports "
                         f"backward ≈ half of forward; this is what torchdiffeq's adjoint measured here.")
        fit = linear_fit([r["nfe_forward"] for r in rows], [r["act_mem_mb"] for r in rows])
        if fit:
            per_nfe = fit[0]
            lines.append(f"- `{run.name}`: act_mem_mb grows by {per_nfe:.3f} MiB per extra forward NFE "
                         f"({'adjoint: flat expected' if run.adjoint else 'direct backprop: linear expected'}).")
        else:
            lines.append(f"- `{run.name}`: NFE did not vary across steps, so memory against NFE has no slope to fit "
                         f"(act_mem_mb {statistics.fmean(r['act_mem_mb'] for r in rows):.1f} at every step).")
        per_nfe = [r["time_forward_ms"] / r["nfe_forward"] for r in rows[1:] if r.get("nfe_forward")]
        if per_nfe:
            lines.append(f"- `{run.name}`: forward pass {statistics.median(per_nfe):.2f} ms per NFE (median over "
                         f"{len(per_nfe)} steps of time_forward_ms / nfe_forward, stem and head included, first "
                         f"step left out as warm-up).")
        by_tol = {r["tol"]: r for r in run.sweep if r.get("tol")}
        if by_tol:
            verdict = still_an_ode(run.sweep, run.config.get("rtol"), run.config.get("solver"))
            if verdict:
                lines.append(f"- `{run.name}`: {verdict['text']}")
    return "\n".join(lines) if lines else "No ODE runs among these runs."


def combined_report(runs: list[Run], title: str = "odenet: training-run comparison") -> Report:
    figures = {"fig3a_nfe_vs_error": fig3a(runs), "fig3b_nfe_vs_time": fig3b(runs),
               "fig3c_nfe_forward_vs_backward": fig3c(runs), "fig3d_nfe_over_training": fig3d(runs),
               "acc_vs_nfe": fig_acc_vs_nfe(runs), "acc_vs_tol": fig_acc_vs_tol(runs),
               "memory_vs_nfe": fig_memory_vs_nfe(runs)}
    dataset = ", ".join(sorted({r.config["dataset"] for r in runs}))
    sections = [
        Section("Runs", f"Dataset: {dataset}. Test accuracy is the final model's; other columns are means over the "
                        f"last epoch's training steps.\n\n{runs_table(runs)}"),
        Section("Table 1 (Chen et al. 2018) with our measurements",
                "Test error of the final model; `act_mem_mb` = MiB of tensors saved for backward per step "
                "(measured, not an O() claim), `peak_mem_mb` = CUDA peak (— on CPU); `time_step_ms` = forward + "
                "backward + optimizer per batch. The paper's columns are its MNIST numbers (160 epochs on 60,000 "
                "images), so they compare with ours only for runs with that recipe.\n\n" + table1(runs)),
        Section("Figure 3", "(a) ODE-block output error against a much tighter reference solve, per test-time "
                            "tolerance; (b) forward time against NFE (test-time sweep where there is one, else the "
                            "training steps); (c) backward against forward NFE of the adjoint runs' training "
                            "steps; (d) mean NFE per epoch.",
                ["fig3a_nfe_vs_error", "fig3b_nfe_vs_time", "fig3c_nfe_forward_vs_backward",
                 "fig3d_nfe_over_training"]),
        Section("Accuracy, tolerance and memory", "", ["acc_vs_nfe", "acc_vs_tol", "memory_vs_nfe"]),
        Section("What these runs measured", measured_findings(runs)),
    ]
    return Report(title, sections, figures)


# --------------------------------------------------------------------------- test-time sweep report

ODE_DROP_POINTS = 1.0


def tighter(tol: float) -> float:
    """tol / 100 without binary noise (1e-5 / 100 is 1.0000000000000001e-07)."""
    return float(f"{tol / 100:.6g}")


def still_an_ode(rows: list[dict], train_tol: float | None, solver: str | None) -> dict | None:
    """Ott et al. (ICLR 2021): does accuracy survive a 100× tighter tolerance than training used?"""
    if train_tol is None:
        return None
    by_tol = {(r["solver"], r["tol"]): r for r in rows if r.get("tol")}
    tight_tol = tighter(train_tol)
    at_train = by_tol.get((solver, train_tol))
    at_tight = by_tol.get((solver, tight_tol))
    if not at_train or not at_tight:
        return None
    drop = 100 * (at_train["acc"] - at_tight["acc"])
    bad = drop > ODE_DROP_POINTS
    text = (f"accuracy at the training tolerance {train_tol:g}: {100 * at_train['acc']:.2f}%; at {tight_tol:g}: "
            f"{100 * at_tight['acc']:.2f}% (drop {drop:.2f} points). "
            + ("**The network learned the discretisation, not an ODE.**" if bad else
               "Accuracy holds: the trained model behaves as an ODE at this tolerance."))
    return {"train_tol": train_tol, "tight_tol": tight_tol, "acc_train_tol": at_train["acc"],
            "acc_tight_tol": at_tight["acc"], "drop_points": drop, "flagged": bad, "text": text}


def sweep_table(rows: list[dict]) -> str:
    header = ["solver", "tol / steps", "acc", "loss", "nfe_forward (min–max)", "accepted", "rejected", "ode_error",
              "time_ms", "images/s", "act_mem_mb", "peak_mem_mb", "flops/image"]
    body = []
    for r in rows:
        setting = fmt(r["tol"], "g") if r.get("tol") else (f"{r['steps']} steps" if r.get("steps") else "—")
        if r.get("tol") and r.get("atol") not in (None, r["tol"]):
            setting += f" (atol {r['atol']:g})"
        nfe = (f"{r['nfe_forward']:.1f} ({r['nfe_forward_min']}–{r['nfe_forward_max']})"
               if r.get("nfe_forward") is not None else "—")
        body.append([r.get("solver") or "—", setting, fmt(r["acc"]), fmt(r["loss"]), nfe,
                     fmt(r.get("steps_accepted"), ".1f"), fmt(r.get("steps_rejected"), ".1f"),
                     fmt(r.get("ode_error"), ".2e"), fmt(r.get("time_ms"), ".1f"), fmt(r.get("images_per_s"), ".0f"),
                     fmt(r.get("act_mem_mb"), ".1f"), fmt(r.get("peak_mem_mb"), ".1f"), fmt(r.get("flops"), ".3g")])
    return md_table(header, body)


def _by_solver(rows: list[dict]) -> dict[str, list[dict]]:
    groups = defaultdict(list)
    for r in rows:
        if r.get("solver"):
            groups[r["solver"]].append(r)
    return groups


def sweep_report(meta: dict[str, Any], rows: list[dict]) -> Report:
    """Report of one checkpoint's test-time sweep (what eval.py writes)."""
    figures = {}
    groups = _by_solver(rows)
    adaptive = {s: sorted((r for r in g if r.get("tol")), key=lambda r: -r["tol"]) for s, g in groups.items()}
    adaptive = {s: g for s, g in adaptive.items() if g}
    if adaptive:
        for name, key, ylabel, logy in (("acc_vs_tol", "acc", "test acc", False),
                                        ("nfe_vs_tol", "nfe_forward", "nfe_forward per batch", False),
                                        ("flops_vs_tol", "flops", "flops per image", True)):
            fig, ax = _figure(f"{ylabel} vs tolerance", "tolerance", ylabel, logx=True, logy=logy)
            for solver, g in adaptive.items():
                ax.plot([r["tol"] for r in g], [r[key] for r in g], "o-", label=solver)
            figures[name] = _finish(fig, ax)
    if groups:
        fig, ax = _figure("Fig. 3a: NFE vs numerical error", "nfe_forward per batch", "ODE block error", logy=True)
        for solver, g in groups.items():
            _tol_line(ax, [r for r in g if r.get("ode_error")], "nfe_forward", "ode_error", solver)
        figures["fig3a_nfe_vs_error"] = _finish(fig, ax)
        fig, ax = _figure("Fig. 3b: NFE vs forward time", "nfe_forward per batch", "time_ms per batch")
        for solver, g in groups.items():
            _tol_line(ax, g, "nfe_forward", "time_ms", solver)
        figures["fig3b_nfe_vs_time"] = _finish(fig, ax)
    verdict = meta.get("still_an_ode")
    ode_text = verdict["text"] if verdict else (
        "Not applicable (no ODE block)." if not groups else
        "Not evaluated: the sweep needs the training solver at the training tolerance and at 100× tighter.")
    sections = [
        Section("Checkpoint", f"`{meta['checkpoint']}` — {meta['backbone']} on {meta['dataset']}, trained with "
                              f"{meta.get('train_setting') or 'no ODE solver'}; {meta['images']} test images"
                              f"{' (limited)' if meta.get('limited') else ''}, device {meta['device']}."),
        Section("Sweep", sweep_table(rows) + "\n\n" + SWEEP_NOTES.format(ref=meta.get("reference"))),
        Section("Is it still an ODE? (Ott et al., ICLR 2021)", ode_text),
    ]
    if figures:
        sections.append(Section("Plots", "", list(figures)))
    return Report(f"Test-time sweep: {Path(meta['checkpoint']).parent.name}", sections, figures)


SWEEP_NOTES = (
    "`nfe_forward`: mean (min–max) function evaluations per test batch, including the 2 evaluations adaptive "
    "solvers spend choosing the first step. `ode_error`: relative L2 error of each ODE block's output against "
    "a reference solve of the same input ({ref}), the largest over blocks, averaged over batches. "
    "`flops/image`: fvcore count of stem and head once plus NFE × one field evaluation per ODE block "
    "(fvcore counts one multiply-add as one flop; element-wise ops are not counted). `act_mem_mb`: tensors a "
    "training step at this setting would save for backward (one batch). `peak_mem_mb`: CUDA only.")


def write_sweep_files(meta: dict[str, Any], rows: list[dict], out_dir: Path) -> None:
    """sweep.csv and sweep.json, the sources every report and plot is rebuilt from."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "sweep.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(SWEEP_COLUMNS), extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: r.get(k) for k in SWEEP_COLUMNS})
    (out_dir / "sweep.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")


# --------------------------------------------------------------------------- CLI

def main(argv: list[str] | None = None) -> int:
    """``odenet-report RUN_DIR... [--out DIR]``: the combined report of saved runs."""
    parser = argparse.ArgumentParser(prog="odenet-report", description=main.__doc__)
    parser.add_argument("runs", nargs="+", help="run directories, or folders holding run directories")
    parser.add_argument("--out", default=None, help="output folder (default: the common parent of the runs)")
    parser.add_argument("--title", default="odenet: training-run comparison")
    args = parser.parse_args(argv)
    try:
        runs = find_runs(args.runs)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path(_common_parent([r.path for r in runs]))
    written = write_report(combined_report(runs, args.title), out)
    print(f"report of {len(runs)} runs: {written['report.md']} and {written['report.html']}")
    return 0


def _common_parent(paths: list[Path]) -> Path:
    parents = [p.resolve().parent for p in paths]
    common = parents[0]
    while any(common not in [p, *p.parents] for p in parents):
        common = common.parent
    return common


if __name__ == "__main__":
    raise SystemExit(main())
