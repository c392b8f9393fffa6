"""The test-time sweep of one checkpoint over solvers and tolerances (``eval.py``), written as sweep.json.

For every setting: accuracy, loss, NFE per batch (mean, min, max), accepted/rejected steps,
time per batch and images/s, activation and CUDA memory, fvcore FLOPs per image, and the
numerical error of every ODE block's output against a much tighter reference solve of the
same input (Chen et al. 2018, Fig. 3a).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from odenet.config import ConfigError, flag, opt, parse
from odenet.data import build_loaders
from odenet.evaluate.console import Progress, format_table, setting_label
from odenet.evaluate.per_sample_eval import PerSampleEval
from odenet.evaluate.probes import BlockRecorder, FlopCounter, Reference, act_mem_mb
from odenet.models.ode import ode_blocks, regularization_off, reset_nfe, set_solver
from odenet.solve import SOLVERS, SolverError, is_adaptive
from odenet.naming import solver_label
from odenet.registry import closest
from odenet.reports import still_an_ode, sweep_report, tighter, write_report, write_sweep_files
from odenet.errors import RunFailure
from odenet.run.checkpoint import load_checkpoint, load_weights
from odenet.run.dirs import check_writable
from odenet.run.tensorboard import write_report as write_tensorboard_report
from odenet.train.build import build_model, pick_device, speed_up
from odenet.train.config import TrainConfig, recipe_inapplicable, saved_train_config
from odenet.train.interrupts import out_of_memory
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
    limit_test_batches: int | None = opt(None, "evaluate on the first N test batches only (default: as many as "
                                               "training's evaluation used)", metavar="N")
    batch_size: int | None = opt(None, "test batch size (default: the checkpoint's test batch size)")
    timing_repeats: int = opt(3, "timed passes over the test batches per setting; time_ms is their median",
                              metavar="N")
    timing_warmup: int = opt(1, "untimed forward passes of the first test batch before each setting's timed "
                                "passes", metavar="N")
    data_dir: str | None = opt(None, "dataset folder (default: the checkpoint's)", metavar="DIR")
    device: str = opt("auto", "auto, cpu or cuda")
    out: str | None = opt(None, "output folder (default: the checkpoint's run directory)", metavar="DIR")
    per_sample: bool = opt(False, "also solve each test image with its own step control at every adaptive setting: "
                                  "per_sample.csv, per_sample_images.npz and a report section")
    tensorboard: bool = opt(True, "also write the report's figures and text to TensorBoard in the output folder")
    config: str | None = opt(None, "YAML file of these options", cli_only=True, metavar="FILE")


# The tightest tolerances a sweep accepts. --tols run the model's float32 state: a relative
# tolerance below float32's machine epsilon (1.19e-7, the spacing of floats near 1) asks for
# errors no float32 step can represent, so the step control chases rounding noise until dt
# underflows or max_num_steps runs out. The float64 reference (epsilon 2.2e-16) has the same
# limit further down; 1e-12 leaves the ~1e3 ulps that the RMS norm of an error estimate (a
# difference of stage sums, each rounded, over thousands of state elements) needs, and it is
# 1e-5 of the tightest float32 row's tolerance, so no sweep needs a tighter one. Below it the
# reference (allowed a million steps) spun for minutes (1e-32: > 170 s on 2 CPU cores).
FLOAT32_TOL_FLOOR = 1e-7
FLOAT64_TOL_FLOOR = 1e-12
FLOOR_REASON = {"tols": "the float32 model (machine epsilon 1.2e-7)",
                "reference_tol": "the float64 reference solve (its error estimate reaches rounding noise)"}
# A row's time is flagged noisy when its timed passes spread by more than this fraction of their
# median: neighbouring tolerances of a sweep differ by 20-40% in NFE (and so in time), so a
# larger spread can hide, or invent, the trend between neighbouring rows.
NOISY_SPREAD = 0.2
DOPRI8_NOTE = ("dopri8 in float32: its step control reacts to rounding noise; NFE not reproducible within ~10% "
               "(stock torchdiffeq alike)")


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
    for name, floor in (("tols", FLOAT32_TOL_FLOOR), ("reference_tol", FLOAT64_TOL_FLOOR)):
        values = getattr(cfg, name)
        for v in (values if isinstance(values, list) else [values]):
            if v is not None and not (math.isfinite(v) and v > 0):
                raise ConfigError(f"{flag(name)} must be positive numbers, got {v}")
            if v is not None and v < floor:
                raise ConfigError(f"{flag(name)} {v:g} is below what {FLOOR_REASON[name]} can honour; give "
                                  f"tolerances of at least {floor:g}")
    for name, least in (("batch_size", 1), ("reference_images", 1), ("limit_test_batches", 1),
                        ("timing_repeats", 1), ("timing_warmup", 0)):
        value = getattr(cfg, name)
        if value is not None and value < least:
            raise ConfigError(f"{flag(name)} must be at least {least}, got {value}")
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
    for name, why in inapplicable_sweep_options(cfg.solvers or [train.solver]).items():
        if getattr(cfg, name):
            raise ConfigError(why)
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


def inapplicable_sweep_options(solvers: list[str]) -> dict[str, str]:
    """--tols without an adaptive solver among ``solvers``, --steps without a fixed-step one, each with why."""
    found = {}
    if not any(is_adaptive(s) for s in solvers):
        found["tols"] = (f"--tols apply to adaptive solvers, and the sweep's ({', '.join(solvers)}) take steps: drop "
                         f"--tols, or add an adaptive solver to --solvers")
    if all(is_adaptive(s) for s in solvers):
        found["steps"] = (f"--steps apply to fixed-step solvers, and the sweep's ({', '.join(solvers)}) choose their "
                          f"own: drop --steps, or add a fixed-step solver to --solvers")
    return found


def apply_setting(model: nn.Module, s: Setting) -> None:
    if s.tol is not None:
        set_solver(model, method=s.solver, tol=s.tol, atol=s.atol, steps=None, seminorm=False)
    else:
        set_solver(model, method=s.solver, steps=s.steps, seminorm=False)


def sweep_checkpoint(cfg: EvalConfig, progress: Callable[[int, int, dict], None] | None = None,
                     after_setting: Callable[[SettingRun, Setting], None] | None = None,
                     ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run the sweep → (meta, rows). ``progress(done, total, row)`` is called after each setting, and
    ``after_setting(run, setting)`` while the model still holds that setting (the per-sample pass).

    Raises:
        ConfigError / CheckpointError / data errors: bad input (before anything is evaluated).
        SolverError: a setting's solve (or its reference solve) failed; the message names the setting.
    """
    device = pick_device(cfg.device)
    state = load_checkpoint(cfg.checkpoint, map_location="cpu", required=("model", "config", "epoch"))
    train = saved_train_config(state, cfg.checkpoint)
    if cfg.data_dir and "data_dir" in recipe_inapplicable({"dataset": train.dataset}):
        raise ConfigError(recipe_inapplicable({"dataset": train.dataset})["data_dir"])
    settings = plan_settings(cfg, train)
    batch_size = cfg.batch_size or train.test_batch_size
    data = build_loaders(train.dataset, batch_size=train.batch_size, test_batch_size=batch_size,
                         data_dir=Path(cfg.data_dir or train.data_dir) if (cfg.data_dir or train.data_dir) else None)
    train_images = train_test_images(train, data.test_size)
    # What training evaluated unless told otherwise: its number of test images, at this batch size.
    limit = cfg.limit_test_batches or (math.ceil(train_images / batch_size) if train_images < data.test_size
                                       else None)
    model = build_model(train, data).to(device)
    load_weights(model, state, cfg.checkpoint, "pass a last.pt or best.pt that train.py wrote")
    model.eval()
    tols = [s.tol for s in settings if s.tol is not None]
    ref_tol = cfg.reference_tol or (tighter(min(tols)) if tols else 1e-7)
    reference = Reference(model, ref_tol, cfg.reference_images) if ode_blocks(model) else None
    flops = FlopCounter(model, (data.spec.channels, data.spec.image_size, data.spec.image_size))
    # Evaluated as trained (after the float64 reference and FLOP tracing have copied the model):
    # a bf16 field stays bf16. torch.compile only changes speed and is left out.
    speed_up(model, channels_last=train.channels_last, amp=train.amp)
    probe = probe_batch(data.test, train.batch_size)
    timing = {"warmup": cfg.timing_warmup, "repeats": cfg.timing_repeats}
    run = SettingRun(model, data.test, device, limit, reference, flops, probe, timing, train.channels_last)
    rows = []
    for s in settings:
        rows.append(run(s))
        if after_setting is not None:
            after_setting(run, s)
        if progress is not None:
            progress(len(rows), len(settings), rows[-1])
    meta = {"checkpoint": str(cfg.checkpoint), "backbone": train.backbone, "dataset": train.dataset,
            "train_setting": solver_label(train.to_dict()) or None, "train_tol": train.rtol,
            "train_solver": train.solver,
            "reference": (f"float64 dopri5 at rtol = atol = {ref_tol:g}, first {cfg.reference_images} images of each "
                          f"batch") if reference else None,
            "images": rows[0]["images"], "limited": rows[0]["images"] < train_images,
            "batch_size": min(batch_size, rows[0]["images"]),  # what ran: a larger --batch-size held them all
            "train_test_images": train_images, "act_mem_batch_size": len(probe[1]), "timing": timing,
            "notes": sweep_notes(rows, model), "device": str(device), "epoch": state["epoch"],
            "config": train.to_dict()}
    meta["still_an_ode"] = still_an_ode(rows, train.rtol, train.solver, dataset=train.dataset)
    return meta, rows


def train_test_images(train: TrainConfig, test_size: int) -> int:
    """How many test images training's own evaluation used (all, unless --limit-test-batches)."""
    if train.limit_test_batches is None:
        return test_size
    return min(test_size, train.limit_test_batches * train.test_batch_size)


def probe_batch(loader, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``size`` test images and labels (fewer if the test set is smaller): a training batch's worth."""
    images, labels, have = [], [], 0
    for x, y in loader:
        images.append(x[: size - have])
        labels.append(y[: size - have])
        have += len(images[-1])
        if have >= size:
            break
    return torch.cat(images), torch.cat(labels)


def sweep_notes(rows: list[dict[str, Any]], model: nn.Module) -> list[str]:
    """Caveats the report prints beside the numbers."""
    notes = []
    dtype = next(model.parameters()).dtype
    if dtype == torch.float32 and any(r["solver"] == "dopri8" for r in rows):
        notes.append(DOPRI8_NOTE)
    return notes


@dataclass
class SettingRun:
    """Measures one setting of the sweep: accuracy, NFE and reference error from one pass,
    time from ``timing["repeats"]`` passes after ``timing["warmup"]`` untimed ones, act_mem_mb
    at the training batch size (``probe``), FLOPs."""

    model: nn.Module
    loader: Any
    device: torch.device
    limit: int | None
    reference: Reference | None
    flops: FlopCounter
    probe: tuple[torch.Tensor, torch.Tensor]
    timing: dict[str, int]
    channels_last: bool = False

    def __call__(self, s: Setting) -> dict[str, Any]:
        if s.solver is not None:
            apply_setting(self.model, s)
        try:
            row = self._measure()
        except SolverError as exc:
            label = setting_label(s.solver, s.tol, s.steps)
            raise SolverError(f"setting {label} of the sweep failed: {exc.reason}", exc.solver,
                              exc.phase) from None
        atol = (s.tol if s.atol is None else s.atol) if s.tol is not None else None
        return {"solver": s.solver, "tol": s.tol, "atol": atol, "steps": s.steps, **row}

    def _measure(self) -> dict[str, Any]:
        # The model as deployed: the regularisers' integrals (RNODE's extra states and Jacobian products,
        # ERNODE's error sums) are training work, kept out of time_ms; steps, NFE and outputs are the same.
        with regularization_off(self.model):
            self._warm_up()
            row, errors = self._first_pass()
            passes = [row] + [self._evaluate() for _ in range(self.timing["repeats"] - 1)]
        row.update(timing_summary(passes))
        images, labels = to_device(self.probe, self.device, self.channels_last)
        # peak_mem_mb stays evaluate's (the inference batches'); this probe keeps a training graph
        row["act_mem_mb"] = act_mem_mb(self.model, images, labels)
        reset_nfe(self.model)  # the memory probe's evaluations are not part of the sweep
        blocks = ode_blocks(self.model)
        nfe = {name: row.get(f"nfe_forward/{name}", row.get("nfe_forward", 0.0)) for name in blocks}
        row["flops"] = self.flops.per_image(nfe)
        row["ode_error"] = sum(errors) / len(errors) if errors else None
        return row

    @torch.no_grad()
    def _warm_up(self) -> None:
        """Untimed passes of the first batch, so that no one-off start-up cost lands in time_ms."""
        images, _ = to_device(next(iter(self.loader)), self.device, self.channels_last)
        for _ in range(self.timing["warmup"]):
            self.model(images)
        reset_nfe(self.model)

    def _first_pass(self) -> tuple[dict[str, Any], list[float]]:
        """The pass that also measures each batch's numerical error (outside its timed region)."""
        recorder = BlockRecorder(self.model)
        errors: list[float] = []

        def measure_error() -> None:  # the largest block error of the batch just evaluated
            if self.reference is not None:
                batch = len(errors)
                errors.append(max(self.reference.error(name, batch, x, y) for name, (x, y) in recorder.io.items()))
            recorder.io.clear()  # nothing of this batch stays allocated into the next one's peak_mem_mb

        try:
            return self._evaluate(after_batch=measure_error), errors
        finally:
            recorder.remove()

    def _evaluate(self, after_batch=None) -> dict[str, Any]:
        return evaluate(self.model, self.loader, self.device, limit=self.limit, after_batch=after_batch,
                        channels_last=self.channels_last)


def timing_summary(passes: list[dict[str, Any]]) -> dict[str, Any]:
    """time_ms (per batch) and images_per_s as the median over timed passes, with min, max and the noise flag."""
    times = [p["time_ms"] for p in passes]
    median = statistics.median(times)
    return {"time_ms": median, "time_ms_min": min(times), "time_ms_max": max(times),
            "time_noisy": (max(times) - min(times)) > NOISY_SPREAD * median,
            "images_per_s": statistics.median(p["images_per_s"] for p in passes)}


def run_eval(cfg: EvalConfig, show: bool = True) -> Path:
    """Sweep, print its progress and table (unless not ``show``), then write sweep.csv/json,
    report.md/html, PNGs and TensorBoard entries.

    Returns the output folder. Nothing is written unless every setting was measured.
    """
    out = Path(cfg.out) if cfg.out else Path(cfg.checkpoint).parent
    check_writable(out, "--out")  # before any setting is measured, not after
    per_sample = PerSampleEval() if cfg.per_sample else None
    with out_of_memory(f"the sweep of {cfg.checkpoint}", "nothing was written", "a smaller --batch-size"):
        meta, rows = sweep_checkpoint(cfg, progress=Progress() if show else None, after_setting=per_sample)
    if show:
        print(format_table(meta, rows))
    meta["per_sample"] = cfg.per_sample
    try:
        # An earlier sweep's --per-sample outputs belong to it: removed before this sweep is written, so that no
        # report shows them beside a sweep they are not of (a --per-sample sweep writes its own after sweep.json).
        for stale in [*(out / f for f in ("per_sample.csv", "per_sample.json", "per_sample_images.npz")),
                      *out.glob("per_sample_*.png")]:
            stale.unlink(missing_ok=True)
        write_sweep_files(meta, rows, out)
        report = sweep_report(meta, rows)
        if per_sample is not None:
            per_sample.finish(out, report, show=show, tensorboard=cfg.tensorboard)
        write_report(report, out)
        if cfg.tensorboard:
            write_tensorboard_report(report, str(out), "sweep")
    except OSError as exc:
        raise RunFailure(f"writing the sweep to {out} failed ({exc.strerror or exc}); the checkpoint is unchanged: "
                         f"free space or choose another --out, and run eval.py again") from None
    return out
