"""The test-time sweep of one checkpoint over solvers and tolerances (``eval.py``), written as sweep.json.

For every setting: accuracy, loss, NFE per batch (mean, min, max), accepted/rejected steps,
time per batch and images/s, activation and CUDA memory, fvcore FLOPs per image, and the
numerical error of every ODE block's output against a much tighter reference solve of the
same input (Chen et al. 2018, Fig. 3a).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from odenet.config import ConfigError, flag, opt, parse
from odenet.data import build_loaders
from odenet.evaluate.probes import BlockRecorder, FlopCounter, Reference, act_mem_mb
from odenet.models.ode import ode_blocks, reset_nfe, set_solver
from odenet.models.solvers import SOLVERS, is_adaptive
from odenet.naming import solver_label
from odenet.registry import closest
from odenet.reports import still_an_ode, sweep_report, tighter, write_report, write_sweep_files
from odenet.run.checkpoint import load_checkpoint
from odenet.run.tensorboard import write_report as write_tensorboard_report
from odenet.train.build import build_model, pick_device, speed_up
from odenet.train.config import TrainConfig
from odenet.train.step import evaluate, to_device


@dataclass
class EvalConfig:
    checkpoint: str = opt("", "checkpoint to evaluate (a run's last.pt or best.pt)", metavar="PATH")
    tols: list[float] | None = opt(None, "tolerances (rtol = atol) for adaptive solvers, e.g. 1e-1,1e-2,1e-3",
                                   metavar="T1,T2")
    solvers: list[str] | None = opt(None, "solvers to sweep (default: the training solver)", metavar="S1,S2")
    steps: list[int] | None = opt(None, "step counts for fixed-step solvers, e.g. 2,4,8", metavar="N1,N2")
    reference_tol: float | None = opt(None, "tolerance of the reference solve (float64 dopri5; default: the "
                                            "tightest tolerance / 100)")
    reference_images: int = opt(64, "images per batch compared against the reference solve", metavar="N")
    limit_test_batches: int | None = opt(None, "evaluate on the first N test batches only", metavar="N")
    batch_size: int | None = opt(None, "test batch size (default: the checkpoint's)")
    data_dir: str | None = opt(None, "dataset folder (default: the checkpoint's)", metavar="DIR")
    device: str = opt("auto", "auto, cpu or cuda")
    out: str | None = opt(None, "output folder (default: the checkpoint's run directory)", metavar="DIR")
    tensorboard: bool = opt(True, "also write the report's figures and text to TensorBoard in the output folder")
    config: str | None = opt(None, "YAML file of these options", cli_only=True, metavar="FILE")


@dataclass(frozen=True)
class Setting:
    solver: str | None
    tol: float | None = None  # rtol
    steps: int | None = None
    atol: float | None = None  # None: atol = tol


def parse_eval_args(argv: list[str] | None = None) -> EvalConfig:
    cfg, _ = parse(EvalConfig, argv, prog="eval.py",
                          description="Test-time tolerance sweep of one checkpoint: accuracy, NFE, time, memory, "
                                      "FLOPs and numerical error per solver and tolerance.")
    if not cfg.checkpoint:
        raise ConfigError("--checkpoint is required: pass a run's last.pt or best.pt")
    for name in ("tols", "reference_tol"):
        values = getattr(cfg, name)
        for v in (values if isinstance(values, list) else [values]):
            if v is not None and not (math.isfinite(v) and v > 0):
                raise ConfigError(f"{flag(name)} must be positive numbers, got {v}")
    for n in cfg.steps or []:
        if n < 1:
            raise ConfigError(f"--steps must be at least 1, got {n}")
    for solver in cfg.solvers or []:
        if solver not in SOLVERS:
            raise ConfigError(f"unknown solver {solver!r} in --solvers{closest(solver, list(SOLVERS))}; valid: "
                              f"{', '.join(SOLVERS)}")
    return cfg


def plan_settings(cfg: EvalConfig, train: TrainConfig) -> list[Setting]:
    """The (solver, tol | steps) grid; the training setting and 100× tighter are always included."""
    if train.solver is None:
        given = [flag(n) for n in ("tols", "solvers", "steps") if getattr(cfg, n)]
        if given:
            raise ConfigError(f"{', '.join(given)} asked of a {train.backbone} checkpoint, which has no ODE solver; "
                              f"drop {'them' if len(given) > 1 else 'it'}")
        return [Setting(None)]
    settings: list[Setting] = []
    # A tolerance of the sweep is rtol; atol keeps the training's atol / rtol ratio, so the row at the
    # training tolerance is exactly the training setting (usually rtol = atol).
    ratio = train.atol / train.rtol if train.rtol and train.atol else 1.0
    for solver in cfg.solvers or [train.solver]:
        if is_adaptive(solver):
            tols = list(cfg.tols or [])
            if solver == train.solver and train.rtol is not None:
                tols += [train.rtol, tighter(train.rtol)]
            if not tols:
                raise ConfigError(f"adaptive solver {solver} needs --tols (e.g. --tols 1e-1,1e-3,1e-5)")
            settings += [Setting(solver, tol=t, atol=None if ratio == 1.0 else float(f"{t * ratio:.6g}"))
                         for t in sorted(set(tols), reverse=True)]
        else:
            steps = list(cfg.steps or ([train.steps] if solver == train.solver and train.steps else []))
            if not steps:
                raise ConfigError(f"fixed-step solver {solver} takes --steps (e.g. --steps 2,4,8), not tolerances")
            settings += [Setting(solver, steps=n) for n in sorted(set(steps))]
    return settings


def apply_setting(model: nn.Module, s: Setting) -> None:
    if s.tol is not None:
        set_solver(model, method=s.solver, rtol=s.tol, atol=s.tol if s.atol is None else s.atol, steps=None,
                   seminorm=False)
    else:
        set_solver(model, method=s.solver, steps=s.steps, seminorm=False)


def sweep_checkpoint(cfg: EvalConfig) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run the sweep → (meta, rows). Raises ConfigError / CheckpointError / data errors on bad input."""
    device = pick_device(cfg.device)
    state = load_checkpoint(cfg.checkpoint, map_location="cpu", required=("model", "config", "epoch"))
    train = _train_config(state, cfg.checkpoint)
    settings = plan_settings(cfg, train)
    data = build_loaders(train.dataset, batch_size=train.batch_size,
                         test_batch_size=cfg.batch_size or train.test_batch_size,
                         data_dir=Path(cfg.data_dir or train.data_dir) if (cfg.data_dir or train.data_dir) else None)
    model = build_model(train, data).to(device)
    model.load_state_dict(state["model"])
    model.eval()
    tols = [s.tol for s in settings if s.tol is not None]
    ref_tol = cfg.reference_tol or (tighter(min(tols)) if tols else 1e-7)
    reference = Reference(model, ref_tol, cfg.reference_images) if ode_blocks(model) else None
    flops = FlopCounter(model, (data.spec.channels, data.spec.image_size, data.spec.image_size))
    # Evaluated as trained (after the float32 reference and FLOP tracing have copied the model):
    # a bf16 field stays bf16. torch.compile only changes speed and is left out.
    speed_up(model, channels_last=train.channels_last, amp=train.amp)
    _warm_up(model, data.test, device, train.channels_last)
    rows = [_evaluate_setting(model, s, data.test, device, cfg.limit_test_batches, reference, flops,
                              train.channels_last) for s in settings]
    meta = {"checkpoint": str(cfg.checkpoint), "backbone": train.backbone, "dataset": train.dataset,
            "train_setting": solver_label(train.to_dict()) or None, "train_tol": train.rtol,
            "train_solver": train.solver,
            "reference": (f"float64 dopri5 at rtol = atol = {ref_tol:g}, first {cfg.reference_images} images of each "
                          f"batch") if reference else None,
            "images": rows[0]["images"], "limited": cfg.limit_test_batches is not None, "device": str(device),
            "epoch": state["epoch"], "config": train.to_dict()}
    meta["still_an_ode"] = still_an_ode(rows, train.rtol, train.solver)
    return meta, rows


@torch.no_grad()
def _warm_up(model: nn.Module, loader, device: torch.device, channels_last: bool) -> None:
    """One untimed forward pass, so that the first setting's time_ms holds no one-off start-up cost."""
    images, _ = to_device(next(iter(loader)), device, channels_last)
    model(images)
    reset_nfe(model)


def _train_config(state: dict, path: str) -> TrainConfig:
    try:
        return TrainConfig(**state["config"])
    except TypeError as exc:
        raise ConfigError(f"checkpoint {path} holds a config this version cannot read ({exc}); evaluate it with "
                          f"the odenet version that wrote it") from None


def _evaluate_setting(model: nn.Module, s: Setting, loader, device: torch.device, limit: int | None,
                      reference: Reference | None, flops: FlopCounter, channels_last: bool = False) -> dict[str, Any]:
    if s.solver is not None:
        apply_setting(model, s)
    recorder = BlockRecorder(model)
    errors: list[float] = []

    def measure_error() -> None:  # the largest block error of the batch just evaluated
        if reference is not None:
            batch = len(errors)
            errors.append(max(reference.error(name, batch, x, y) for name, (x, y) in recorder.io.items()))
        recorder.io.clear()  # nothing of this batch stays allocated into the next one's peak_mem_mb

    try:
        row = evaluate(model, loader, device, limit=limit, after_batch=measure_error, channels_last=channels_last)
    finally:
        recorder.remove()
    images, labels = to_device(next(iter(loader)), device, channels_last)
    # peak_mem_mb stays evaluate's (the inference batches'); this probe keeps a training graph
    row["act_mem_mb"] = act_mem_mb(model, images, labels)
    reset_nfe(model)  # the memory probe's evaluations are not part of the sweep
    blocks = ode_blocks(model)
    nfe = {name: row.get(f"nfe_forward/{name}", row.get("nfe_forward", 0.0)) for name in blocks}
    row["flops"] = flops.per_image(nfe)
    row["ode_error"] = sum(errors) / len(errors) if errors else None
    atol = (s.tol if s.atol is None else s.atol) if s.tol is not None else None
    return {"solver": s.solver, "tol": s.tol, "atol": atol, "steps": s.steps, **row}


def run_eval(cfg: EvalConfig) -> Path:
    """Sweep, then write sweep.csv/json, report.md/html, PNGs and TensorBoard entries; returns the folder."""
    meta, rows = sweep_checkpoint(cfg)
    out = Path(cfg.out) if cfg.out else Path(cfg.checkpoint).parent
    write_sweep_files(meta, rows, out)
    report = sweep_report(meta, rows)
    write_report(report, out)
    if cfg.tensorboard:
        write_tensorboard_report(report, str(out), "sweep")
    return out
