"""The combined report over fitted systems, from saved run directories alone (no torch).

Reads each run's ``config.yaml``, ``summary.json``, ``metrics.jsonl`` and ``plot_data.npz``;
writes nothing itself (``odenet.reports.write_report`` and ``odenet.run.tensorboard.write_report`` do).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from odenet.dynamics.plots import fit_figure, fit_title, mse_curves_figure
from odenet.naming import backprop, solver_setting
from odenet.reports import Report, ReportError, Section, fmt, md_table
from odenet.run.metrics import MetricsError, read_metrics


@dataclass
class FitRun:
    path: Path
    config: dict[str, Any]
    summary: dict[str, Any]
    rows: list[dict[str, Any]]

    @property
    def name(self) -> str:
        """The run directory's name: the system's name in fit-all's folders."""
        return self.path.name

    def plot_data(self) -> dict[str, np.ndarray]:
        with np.load(self.path / "plot_data.npz") as data:
            return dict(data)

    def test_curve(self) -> tuple[np.ndarray, np.ndarray]:
        rows = [r for r in self.rows if r["split"] == "test"]
        return np.array([r["step"] for r in rows]), np.array([r["mse"] for r in rows])


def load_fit_run(path: str | Path) -> FitRun:
    path = Path(path)
    if not (path / "summary.json").is_file():
        raise ReportError(f"{path} is not a finished fit (no summary.json); run it again")
    try:
        rows = read_metrics(path / "metrics.jsonl")
    except MetricsError as exc:
        raise ReportError(str(exc)) from None
    return FitRun(path, yaml.safe_load((path / "config.yaml").read_text()),
                  json.loads((path / "summary.json").read_text()), rows)


def fit_table(runs: list[FitRun]) -> str:
    header = ["run", "field (input)", "solver", "backprop", "observed", "iters", "mse of y≡y0", "mse initial",
              "mse final", "initial / final", "y≡y0 / final", "nfe_forward", "nfe_backward", "time_step_ms",
              "eval nfe_forward", "wall s"]
    rows = []
    for run in runs:
        c, s = run.config, run.summary
        means = s["train_mean"]
        setting = f"{c['solver']} {solver_setting(c)}"
        inputs = c["features"] + (" + t" if c["time_input"] else "")
        rows.append([f"`{run.name}`", f"{c['field']} ({inputs})", setting, backprop(c),
                     f"{s['observed']}/{s['data_size']}", fmt(c["iters"], "d"), fmt(s["mse_still"], ".3g"),
                     fmt(s["mse_initial"], ".3g"),
                     fmt(s["mse_final"], ".3g"), fmt(s["mse_ratio"], ".3g") + "×",
                     fmt(s["mse_still"] / s["mse_final"], ".3g") + "×", fmt(means.get("nfe_forward"), ".1f"),
                     fmt(means.get("nfe_backward"), ".1f"), fmt(means.get("time_step_ms"), ".1f"),
                     fmt(s["nfe_forward_eval"], "d"), fmt(s["wall_time_s"], ".0f")])
    return md_table(header, rows)


TABLE_NOTES = (
    "`mse of y≡y0`: the MSE of standing still at y0, the scale of the motion. "
    "`mse initial` / `mse final`: mean squared error of the whole trajectory solved from the true y0 with the "
    "field before and after training, at every grid time (observed or not). `nfe_forward`, `nfe_backward`, "
    "`time_step_ms`: means over training iterations (a batch of sub-trajectories each). `eval nfe_forward`: "
    "evaluations of the final whole-trajectory solve.")


def findings(runs: list[FitRun]) -> str:
    """What the runs measured, one line each, in numbers."""
    lines = []
    for run in runs:
        s, means = run.summary, run.summary["train_mean"]
        below_still = s["mse_still"] / s["mse_final"]
        verdict = "a fit" if below_still >= 10 else "not a fit: less than 10× below standing still"
        lines.append(f"- `{run.name}`: whole-trajectory MSE {s['mse_initial']:.3g} → {s['mse_final']:.3g} "
                     f"({s['mse_ratio']:.3g}× lower; {below_still:.3g}× below standing still at y0, "
                     f"{verdict}) in {run.config['iters']} iterations and {s['wall_time_s']:.0f} s; "
                     f"{means['nfe_forward']:.1f} forward and {means['nfe_backward']:.1f} backward evaluations "
                     f"per training step.")
    return "\n".join(lines)


def dynamics_report(runs: list[FitRun], title: str = "odenet: learning dynamical systems from trajectories") -> Report:
    if not runs:
        raise ReportError("no fitted systems to report on")
    names = [run.name for run in runs]
    if len(set(names)) < len(names):
        raise ReportError(f"two runs share the directory name {max(names, key=names.count)!r}; report runs whose "
                          f"folders have different names")
    figures = {f"fit_{run.name}": fit_figure(run.plot_data(), fit_title(run.config, run.summary)) for run in runs}
    figures["mse_during_training"] = mse_curves_figure({run.name: run.test_curve() for run in runs})
    sections = [Section("Systems", f"{fit_table(runs)}\n\n{TABLE_NOTES}"),
                Section("What these runs measured", findings(runs)),
                Section("MSE during training", "", ["mse_during_training"])]
    sections += [Section(run.name, "True trajectory solid, learned dotted; right: the learned vector field "
                                   "(streamlines) with the true field's directions (arrows).", [f"fit_{run.name}"])
                 for run in runs]
    return Report(title, sections, figures)

