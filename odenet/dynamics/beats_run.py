"""The heartbeat experiment: one run per (training windows, variant, seed) on one split, then the report.

Each run directory holds ``config.yaml`` (the experiment's config narrowed to the run's windows, variant
and seed), ``metrics.jsonl`` and TensorBoard events (train rows every step; ``train``, ``test-beats``
and ``test-recording`` evaluations, each its own split), ``summary.json`` and ``last.pt``. A run whose
training diverges is recorded as failed (its reason kept) and the others go on: failing to converge is
one of the things measured. The experiment folder gets ``experiment.json``, ``plot_data.npz`` and the
report (:mod:`odenet.dynamics.beats_report`, built from those two files alone).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from odenet.dynamics.beats_config import HeartbeatsConfig, experiment_name
from odenet.dynamics.beats_model import StableField, build_model, kinetic_weight, objective, training_windows
from odenet.dynamics.beats_report import heartbeats_report
from odenet.dynamics.beats_score import (BeatData, escape_time, evenly, field_growth, is_latent_ode, is_trained,
                                         prepare_data, score)
from odenet.dynamics.runs import check_run_dir, solver_guard
from odenet.errors import ConfigError, RunFailure
from odenet.reports import write_report
from odenet.run.checkpoint import save_checkpoint
from odenet.run.files import write_config, write_json
from odenet.run.log import RunLogger
from odenet.train.step import optimizer_step

EXAMPLES = 4  # held-out windows per set whose predictions the figures draw
TRAIN_MEANS = ("loss", "elbo", "log_px", "kl", "reg_kinetic", "nfe_forward", "nfe_backward", "time_step_ms")


def examples(count: int) -> np.ndarray:
    """The held-out windows the figures draw: spread over the set (neighbouring segments share beats)."""
    return evenly(count, EXAMPLES)


def run_id(where: str, variant: str, seed: int) -> str:
    return "mean-beat" if variant == "mean-beat" else f"{where}-{variant}-s{seed}"


def plan(cfg: HeartbeatsConfig) -> list[tuple[str, str, int]]:
    """(windows, variant, seed) of every run; the mean beat depends on none of them and runs once."""
    runs = [(where, variant, seed) for where in cfg.train_windows for variant in cfg.variants for seed in cfg.seeds
            if variant != "mean-beat"]
    return ([(cfg.train_windows[0], "mean-beat", cfg.seeds[0])] if "mean-beat" in cfg.variants else []) + runs


def run_experiment(cfg: HeartbeatsConfig, log: bool = True) -> dict[str, Any]:
    """Every run of ``plan(cfg)``, then ``experiment.json``, ``plot_data.npz`` and the report; returns the
    experiment's record (experiment.json's content)."""
    out = Path(cfg.out_dir) / experiment_name(cfg)
    if (out / "experiment.json").exists():
        raise ConfigError(f"{out} already holds a heartbeats experiment; choose another --run-name or --out-dir, "
                          f"or delete it")
    started = time.perf_counter()
    data = prepare_data(cfg)
    record: dict[str, Any] = {"config": cfg.to_dict(), "counts": [dataclasses.asdict(c) for c in data.counts],
                              "sizes": data.sizes, "scored": {k: len(w.true) for k, w in data.scored.items()},
                              "center": data.center.tolist(), "scale": data.scale.tolist(), "runs": []}
    arrays: dict[str, np.ndarray] = {f"data/{name}/{key}": getattr(w, key).numpy()[examples(len(w.true))]
                                     for name, w in data.scored.items() if name != "train"
                                     for key in ("true", "obs", "mask")}
    arrays["t"] = next(iter(data.scored.values())).t.numpy()
    arrays.update({f"recording/{name}/{key}": value for name, view in data.views.items()
                   for key, value in view.items()})
    for where, variant, seed in plan(cfg):
        name = run_id(where, variant, seed)
        summary, run_arrays = train_run(cfg, data, where, variant, seed, out / name)
        record["runs"].append(summary)
        arrays.update({f"{name}/{key}": value for key, value in run_arrays.items()})
        if log:
            print(_progress(summary), flush=True)
    record["wall_time_s"] = time.perf_counter() - started
    write_json(out / "experiment.json", record)
    np.savez_compressed(out / "plot_data.npz", **arrays)
    write_report(heartbeats_report(record, arrays), out)
    record["out"] = str(out)
    return record


def train_run(cfg: HeartbeatsConfig, data: BeatData, where: str, variant: str, seed: int, run_dir: Path
              ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Train one model (the mean beat: none), score it on every set; → (summary, arrays for the figures)."""
    check_run_dir(run_dir)
    config = dataclasses.replace(cfg, train_windows=[where], variants=[variant], seeds=[seed]).to_dict()
    torch.manual_seed(seed)
    model = build_model(cfg, variant, data.mean_beat)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_config(run_dir, config)
    logger = RunLogger(run_dir, config, classifier=False)
    summary: dict[str, Any] = {"run": run_id(where, variant, seed), "windows": where, "variant": variant,
                               "seed": seed, "params": sum(p.numel() for p in model.parameters()),
                               "status": "done"}
    started, rows, completed = time.perf_counter(), [], False
    try:
        if is_trained(model):
            try:
                _train(cfg, data, model, where, variant, seed, logger, rows)
            except RunFailure as exc:
                summary.update(status="failed", reason=str(exc))
        final, outs = _evaluate(model, data, cfg, len(rows), logger)
        summary.update(steps=len(rows), final=final, wall_time_s=time.perf_counter() - started,
                       train_last=_means(rows[-cfg.eval_every:]))
        summary.update(_diagnostics(model, cfg, outs, seed))
        save_checkpoint(run_dir / "last.pt", {"model": model.state_dict(), "step": len(rows), "config": config,
                                              "center": data.center.tolist(), "scale": data.scale.tolist()})
        write_json(run_dir / "summary.json", summary)
        completed = True
    finally:
        logger.close(completed)
    arrays = {"loss": np.array([r["loss"] for r in rows], dtype=np.float32)}
    for name, out in outs.items():
        if name != "train":
            arrays.update({f"{name}/{k}": v[examples(len(v))] if k == "pred" else v for k, v in out.items()
                           if k in ("pred", "mse_curve", "z_norm")})
    return summary, arrays


def _train(cfg, data: BeatData, model, where: str, variant: str, seed: int, logger: RunLogger,
           rows: list[dict]) -> None:
    """The training loop; each step's row is appended to ``rows`` (kept when a later step fails)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cfg.iters)
    generator = torch.Generator().manual_seed(seed)  # windows, observed points and posterior samples
    weight = kinetic_weight(cfg, variant)
    _evaluate(model, data, cfg, 0, logger)
    for step in range(1, cfg.iters + 1):
        batch = training_windows(data.train, cfg, where, generator)
        with solver_guard("training step", step, diverged="the ELBO is not finite; lower --lr"):
            row = optimizer_step(model, optimizer, lambda: objective(model, batch, cfg.noise_std, weight, generator),
                                 measure_memory=False)
        schedule.step()
        rows.append(row)
        logger.log({"split": "train", "epoch": 1, "step": step, **row})
        if step % cfg.eval_every == 0 and step < cfg.iters:
            _evaluate(model, data, cfg, step, logger)


def _evaluate(model, data: BeatData, cfg: HeartbeatsConfig, step: int, logger: RunLogger
              ) -> tuple[dict[str, dict], dict[str, dict[str, np.ndarray]]]:
    """Score every set and log one row per set; → ({set: measurements}, {set: arrays})."""
    model.eval()
    final, outs = {}, {}
    for name, windows in data.scored.items():
        final[name], outs[name] = score(model, windows, cfg.beat_points, data.recordings[name])
        logger.log({"split": name, "epoch": 1, "step": step, **{k: v for k, v in final[name].items()
                                                                  if k != "reason"}})
    model.train()
    return final, outs


def _diagnostics(model, cfg: HeartbeatsConfig, outs: dict[str, dict[str, np.ndarray]], seed: int
                 ) -> dict[str, Any]:
    """Where and why extrapolation leaves the data: the radius R of the region the training windows put z in
    (99th percentile of ‖z‖), when the held-out beats' median ‖z(t)‖ passes it and, for a latent ODE, the
    field's radial pull outside it (:func:`field_growth`) and the stable field's bound B/λ (in units of R).
    The held-out sets' ``z_norm`` curves are rescaled to units of R in place, as the figures draw them."""
    if "z_window" not in outs.get("train", {}):
        return {}
    radius = float(np.percentile(outs["train"]["z_window"], 99))
    out: dict[str, Any] = {"radius": radius, "escape_beats": {}}
    for name, arrays in outs.items():
        if name != "train" and "z_norm" in arrays:
            out["escape_beats"][name] = escape_time(arrays["z_norm"], radius, cfg.beat_points)
            arrays["z_norm"] = arrays["z_norm"] / radius
    if is_latent_ode(model):
        out["growth"] = field_growth(model.ode.func, radius, cfg.latent_dim, seed)
    if is_latent_ode(model) and isinstance(model.ode.func, StableField):
        out["stable_radius"] = model.ode.func.radius() / radius
    return out


def _means(rows: list[dict]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in rows])) for k in TRAIN_MEANS if rows and k in rows[0]}


def _progress(s: dict[str, Any]) -> str:
    if s["status"] == "failed":
        return f"{s['run']}: FAILED — {s['reason']}"
    beats = s["final"].get("test-beats", {})
    text = (f"{s['run']}: held-out beats mse window {beats.get('mse_window', float('nan')):.3g} "
            f"rest {beats.get('mse_rest', float('nan')):.3g} extrap {beats.get('mse_extrap', float('nan')):.3g} "
            f"(max |x̂| {beats.get('max_abs', float('nan')):.3g})")
    return text + (f"; {s['wall_time_s']:.0f} s" if "wall_time_s" in s else "")
