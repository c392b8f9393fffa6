"""Fitting a learned field to a true system's trajectory (torchdiffeq ode_demo's experiment).

:func:`train_step` and :func:`evaluate` return measurements as dicts; :func:`fit` runs a whole
job into a run directory (config.yaml, metrics.jsonl + TensorBoard, last.pt, summary.json,
plot_data.npz and fit.png).

Training minimises the MSE of sub-trajectories solved from their first true state (``loss``);
evaluation solves the whole trajectory from the true y0 at every grid time, observed or not, and
reports its MSE (``mse``, also logged as ``loss``) — the number a fit is judged by.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from odenet.config import ConfigError
from odenet.dynamics.config import FitConfig
from odenet.dynamics.data import Batch, observed_indices, predict_batch, predict_trajectory, sample_batch
from odenet.dynamics.fields import DynamicsModel, LearnedField
from odenet.dynamics.plots import fit_figure, fit_title
from odenet.dynamics.report import dynamics_report, load_fit_run
from odenet.dynamics.runs import check_run_dir, solver_guard
from odenet.dynamics.systems import System, Trajectory, build_system, simulate, true_field
from odenet.measure import Clock
from odenet.models.ode import reset_nfe, take_nfe
from odenet.naming import solver_name_parts
from odenet.reports import write_report
from odenet.run.checkpoint import save_checkpoint
from odenet.run.files import write_config, write_json
from odenet.run.log import RunLogger
from odenet.run.tensorboard import write_report as write_tensorboard_report
from odenet.train.step import optimizer_step

TRAIN_MEANS = ("loss", "nfe_forward", "nfe_backward", "nfe_backprop", "steps_accepted", "time_step_ms",
               "time_forward_ms", "time_backward_ms")
FIELD_GRID = 21  # points per axis of the vector-field plot


@dataclass
class Problem:
    """A system, its true trajectory and the grid indices the fit may observe."""

    system: System
    trajectory: Trajectory
    observed: torch.Tensor  # (M,) sorted grid indices, starting with 0


def make_problem(cfg: FitConfig) -> Problem:
    system = build_system(cfg.system, cfg.system_seed)
    trajectory = simulate(system, cfg.data_size)
    observed = observed_indices(cfg.data_size, cfg.irregular, torch.Generator().manual_seed(cfg.system_seed))
    return Problem(system, trajectory, observed)


def make_model(cfg: FitConfig) -> DynamicsModel:
    return DynamicsModel(LearnedField(cfg.field, cfg.features, bool(cfg.time_input)), cfg.solver_settings())


def train_step(model: DynamicsModel, optimizer: torch.optim.Optimizer, trajectory: Trajectory,
               batch: Batch) -> dict[str, float]:
    """One optimizer step on a batch of sub-trajectories → loss (= mse), NFE by phase and times."""
    def compute():
        pred, target = predict_batch(model, trajectory, batch)
        loss = F.mse_loss(pred, target)
        return loss, {"mse": loss}

    return optimizer_step(model, optimizer, compute, measure_memory=False)


@torch.no_grad()
def evaluate(model: DynamicsModel, trajectory: Trajectory) -> tuple[dict[str, float], torch.Tensor]:
    """MSE of the whole learned trajectory from the true y0 → (measurements, prediction (N, D))."""
    clock = Clock(trajectory.y.device)
    reset_nfe(model)
    t0 = clock.now()
    pred = predict_trajectory(model, trajectory)
    elapsed = clock.now() - t0
    nfe = take_nfe(model)
    mse = F.mse_loss(pred, trajectory.y).item() if torch.isfinite(pred).all() else float("inf")
    return {"loss": mse, "mse": mse, "time_ms": elapsed * 1e3, "nfe_forward": nfe["nfe_forward"],
            "steps_accepted": nfe["steps_accepted"], "steps_rejected": nfe["steps_rejected"]}, pred


def still_mse(trajectory: Trajectory) -> float:
    """MSE of y(t) ≡ y0: the scale of the motion, against which a final MSE reads as a fit or not."""
    return F.mse_loss(trajectory.y[:1].expand_as(trajectory.y), trajectory.y).item()


def default_run_name(cfg: FitConfig) -> str:
    parts = [cfg.system, cfg.field, cfg.features, *solver_name_parts(cfg.to_dict())]
    if cfg.irregular:
        parts.append(f"irr{cfg.irregular:g}")
    return "-".join([*parts, f"s{cfg.seed}"])


def run_dir_of(cfg: FitConfig) -> Path:
    return Path(cfg.out_dir) / (cfg.run_name or default_run_name(cfg))


class Fit:
    """One fitting job: built from a resolved config, run by :meth:`run`."""

    def __init__(self, cfg: FitConfig, problem: Problem | None = None) -> None:
        self.cfg = cfg
        self.run_dir = run_dir_of(cfg)
        check_run_dir(self.run_dir)
        self.problem = problem or make_problem(cfg)
        torch.manual_seed(cfg.seed)
        self.model = make_model(cfg)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        # Annealing to 0 lets the last iterations settle: in ode_demo-style fits a constant rate
        # leaves the whole-trajectory MSE bouncing between ~0.02 and ~0.6 for spiral.
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, cfg.iters)
        self.batches = torch.Generator().manual_seed(cfg.seed)
        self.params = sum(p.numel() for p in self.model.parameters())

    def run(self, log: bool = True) -> dict[str, Any]:
        cfg = self.cfg
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_config(self.run_dir, cfg.to_dict())
        logger = RunLogger(self.run_dir, cfg.to_dict(), classifier=False)
        started = time.perf_counter()
        completed = False
        try:
            first, pred0 = self._evaluate(0, logger)
            rows, (final, pred) = self._train(logger, log)
            summary = self.summary(first, final, rows, time.perf_counter() - started)
            self._save(pred0, pred, summary, logger)
            completed = True
        finally:
            logger.close(completed)
        return summary

    def _train(self, logger: RunLogger, log: bool) -> tuple[list[dict], tuple[dict, torch.Tensor]]:
        cfg, p = self.cfg, self.problem
        rows = []
        for step in range(1, cfg.iters + 1):
            batch = sample_batch(p.observed, cfg.batch_time, cfg.batch_size, p.trajectory.dt, self.batches)
            with solver_guard("training step", step):
                row = train_step(self.model, self.optimizer, p.trajectory, batch)
            row["lr"] = self.optimizer.param_groups[0]["lr"]
            self.scheduler.step()
            logger.log({"split": "train", "epoch": 1, "step": step, **row})
            rows.append(row)
            if step % cfg.eval_every == 0 or step == cfg.iters:
                last = self._evaluate(step, logger)
                if log:
                    print(progress_line(cfg, step, rows[-cfg.eval_every:], last[0]), flush=True)
        return rows, last

    def _evaluate(self, step: int, logger: RunLogger) -> tuple[dict, torch.Tensor]:
        with solver_guard("evaluation", step):
            test, pred = evaluate(self.model, self.problem.trajectory)
        logger.log({"split": "test", "epoch": 1, "step": step, **test})
        return test, pred

    def summary(self, first: dict, final: dict, rows: list[dict], wall_s: float) -> dict[str, Any]:
        means = {k: float(np.mean([r[k] for r in rows])) for k in TRAIN_MEANS if k in rows[0]}
        return {"run_dir": str(self.run_dir), "config": self.cfg.to_dict(), "system": self.problem.system.info,
                "params": self.params, "observed": len(self.problem.observed), "data_size": self.cfg.data_size,
                "mse_initial": first["mse"], "mse_final": final["mse"], "mse_ratio": first["mse"] / final["mse"],
                "mse_still": still_mse(self.problem.trajectory),
                "nfe_forward_eval": final["nfe_forward"], "train_mean": means, "wall_time_s": wall_s,
                "versions": {"torch": torch.__version__}}

    def _save(self, pred0: torch.Tensor, pred: torch.Tensor, summary: dict, logger: RunLogger) -> None:
        save_checkpoint(self.run_dir / "last.pt", {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "step": self.cfg.iters, "config": self.cfg.to_dict(),
            "metrics": {k: summary[k] for k in ("mse_initial", "mse_final")}})
        write_json(self.run_dir / "summary.json", summary)
        data = plot_data(self.model, self.problem, pred0, pred)
        np.savez_compressed(self.run_dir / "plot_data.npz", **data)
        figure = fit_figure(data, fit_title(self.cfg.to_dict(), summary))
        figure.savefig(self.run_dir / "fit.png", dpi=110, bbox_inches="tight")
        logger.tb.add_figure("figures/fit", figure, global_step=self.cfg.iters)


@torch.no_grad()
def plot_data(model: DynamicsModel, problem: Problem, pred0: torch.Tensor, pred: torch.Tensor) -> dict[str, np.ndarray]:
    """Everything :func:`odenet.dynamics.plots.fit_figure` draws, as numpy arrays."""
    true = problem.trajectory.y
    lo, hi = true.min(0).values.double().numpy(), true.max(0).values.double().numpy()
    pad = 0.15 * np.maximum(hi - lo, 0.2)
    # float64 grid: matplotlib's streamplot rejects float32 linspace steps as "not equally spaced".
    gx, gy = np.meshgrid(*(np.linspace(lo[i] - pad[i], hi[i] + pad[i], FIELD_GRID) for i in range(2)))  # (G, G)
    points = torch.from_numpy(np.stack([gx.ravel(), gy.ravel()], axis=1)).float()
    t_field = float(problem.trajectory.t[-1])  # where a time-dependent field is drawn
    learned = model.field(torch.tensor(t_field), points)  # called directly: not an NFE of any solve
    actual = true_field(problem.system, t_field, points)
    return {"t": problem.trajectory.t.numpy(), "y_true": true.numpy(), "y_pred": pred.numpy(),
            "y_initial": pred0.numpy(), "observed": problem.observed.numpy(), "grid_x": gx,
            "grid_y": gy, "field_pred": learned.reshape(FIELD_GRID, FIELD_GRID, 2).numpy(),
            "field_true": actual.reshape(FIELD_GRID, FIELD_GRID, 2).numpy(), "field_time": np.array(t_field),
            "time_dependent": np.array(problem.system.time_dependent)}


def progress_line(cfg: FitConfig, step: int, rows: list[dict], test: dict) -> str:
    mean = lambda key: float(np.mean([r[key] for r in rows]))  # noqa: E731
    return (f"{cfg.system} iter {step}/{cfg.iters} | train loss {mean('loss'):.4g} nfe_forward "
            f"{mean('nfe_forward'):.1f} nfe_backward {mean('nfe_backward'):.1f} time_step_ms "
            f"{mean('time_step_ms'):.1f} | trajectory mse {test['mse']:.4g} (nfe_forward {test['nfe_forward']})")


def fit(cfg: FitConfig, log: bool = True) -> dict[str, Any]:
    """Run one resolved fit end to end; returns what ``summary.json`` holds."""
    return Fit(cfg).run(log)


# --------------------------------------------------------------------------- several systems

def is_complete(cfg: FitConfig) -> bool:
    """True when the run directory holds a finished fit of exactly this config (fit-all then reuses it).

    Raises:
        ConfigError: it holds another or an unfinished run, which fit-all must not mix in.
    """
    run_dir = run_dir_of(cfg)
    if not (run_dir / "metrics.jsonl").exists():
        return False
    saved = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").is_file() else None
    if saved == cfg.to_dict() and (run_dir / "summary.json").is_file():
        return True
    what = "an unfinished run" if saved == cfg.to_dict() else "a run with other settings"
    raise ConfigError(f"{run_dir} holds {what}; use another --out-dir or delete that folder")


def fit_all(configs: list[FitConfig], out_dir: Path) -> Path:
    """Fit each config (finished identical runs are reused), then write the combined report into ``out_dir``."""
    todo = [cfg for cfg in configs if not is_complete(cfg)]  # every check before any run starts
    jobs = [Fit(cfg) for cfg in todo]
    print(f"fit-all: {len(configs)} systems in {out_dir} ({len(configs) - len(todo)} already fitted)", flush=True)
    for job in jobs:
        job.run()
    return write_fit_report([load_fit_run(run_dir_of(cfg)) for cfg in configs], out_dir)


def write_fit_report(runs: list, out_dir: Path) -> Path:
    """report.md, report.html and PNGs into ``out_dir``; the same figures and text to TensorBoard."""
    report = dynamics_report(runs)
    write_report(report, out_dir)
    write_tensorboard_report(report, str(out_dir / "_report"), "report", images=True)
    return out_dir
