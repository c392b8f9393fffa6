"""Configs of the three commands (fit, fit-all, latent): dataclasses → flags and YAML keys via odenet.config.

Precedence is the project's: dataclass defaults < ``--config`` YAML < flags. Every bad value is
a :class:`ConfigError` raised before anything is written; the resolved config (``auto`` filled
in, settings that do not apply blanked) is what ``config.yaml`` and the checkpoint store.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from odenet.config import ConfigError, flag, opt
from odenet.dynamics.fields import list_features, list_fields
from odenet.dynamics.spirals import SPIRAL_POINTS
from odenet.dynamics.systems import SYSTEMS, build_system, list_systems
from odenet.solve import SolverOptions, resolve_solver_options
from odenet.registry import closest
from odenet.run.dirs import check_run_name, check_writable


def _systems() -> str:
    return ", ".join(list_systems())


def _fields() -> str:
    return ", ".join(list_fields())


def _features() -> str:
    return "auto, " + ", ".join(list_features())


@dataclass
class ConfigFile:
    config: str | None = opt(None, "YAML file of options (keys = long flags without --); flags override it",
                             cli_only=True, metavar="FILE")


# A dataclass's fields are its bases' in reverse method-resolution order: --config first, then the solver's.
@dataclass
class DynamicsSolverOptions(SolverOptions, ConfigFile):
    """How the learned ODE is integrated (the same flags as train.py's solver options)."""

    tol: float | None = opt(1e-5, "adaptive solvers: rtol = atol = TOL")
    max_num_steps: int | None = opt(5000, "adaptive solvers fail after this many steps per solve (runaway guard)")

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "config"}


@dataclass
class FitOptions(DynamicsSolverOptions):
    """What fitting a learned field to one true system depends on (every option but the system)."""

    field: str = opt("2-50-2", "learned field network", choices_help=_fields)
    features: str = opt("auto", "what the field sees of the state; auto = the system's choice: cubic (y**3, as "
                                "ode_demo) for the y'=y^3 A systems, y for the others", choices_help=_features)
    time_input: bool | None = opt(None, "feed t to the field (default: only for time-dependent systems)")
    data_size: int = opt(1000, "time points of the true trajectory (equally spaced over the system's span)")
    irregular: float = opt(0.0, "drop this fraction of the observation times at random (0 <= P < 1)",
                           metavar="P")
    iters: int = opt(1500, "training iterations")
    batch_time: int = opt(10, "observed times per training sub-trajectory")
    batch_size: int = opt(50, "sub-trajectories per iteration")
    lr: float = opt(1e-2, "Adam learning rate, cosine-annealed to 0 over --iters")
    eval_every: int = opt(100, "evaluate the whole trajectory every N iterations (and at 0 and the end)")
    system_seed: int = opt(0, "seed of the random systems (random-matrix, mlp-field) and of --irregular")
    seed: int = opt(0, "seed of the field's initial weights and of the batches")
    threads: int = opt(1, "torch CPU threads (these models are tiny: more threads mostly add synchronisation)")
    out_dir: str = opt("runs/dynamics", "parent folder of run directories", metavar="DIR")


@dataclass
class FitConfig(FitOptions):
    system: str = opt("spiral", "true system to fit", choices_help=_systems)
    run_name: str | None = opt(None, "run directory name (default: "
                                     "system-field-features-solver-tol-backprop[-irrP]-seed)",
                               metavar="NAME")


@dataclass
class FitAllConfig(FitOptions):
    systems: list[str] = opt(SYSTEMS.in_order(), "systems to fit, each in OUT_DIR/<system>", metavar="S1,S2")
    out_dir: str = opt("runs/dynamics-all", "folder of the runs and the combined report", metavar="DIR")


@dataclass
class LatentConfig(DynamicsSolverOptions):
    """The latent-ODE VAE on noisy irregularly sampled spirals (Chen et al. 2018, §5)."""

    tol: float | None = opt(1e-3, "adaptive solvers: rtol = atol = TOL")
    spirals: int = opt(300, "training spirals (half clockwise, half counter-clockwise on average)")
    test_spirals: int = opt(100, "held-out spirals for the reconstruction and extrapolation MSE")
    window: int = opt(100, "grid points of each spiral's observed window")
    observations: int = opt(30, "observed points per spiral, drawn at random inside its window (irregular)")
    extrapolate: int = opt(100, "grid points after the window on which extrapolation is scored")
    noise_std: float = opt(0.3, "std of the Gaussian observation noise (also the likelihood's)")
    latent_dim: int = opt(4, "dimension of z")
    hidden: int = opt(20, "hidden units of the latent field and the decoder")
    rnn_hidden: int = opt(25, "hidden units of the recognition RNN")
    iters: int = opt(1000, "training iterations (full batch of --spirals)")
    lr: float = opt(1e-2, "Adam learning rate")
    eval_every: int = opt(100, "evaluate on the test spirals every N iterations (and at 0 and the end)")
    seed: int = opt(0, "seed of the data, weights and reparameterisation noise")
    threads: int = opt(1, "torch CPU threads (these models are small: more threads mostly add synchronisation)")
    out_dir: str = opt("runs/latent", "parent folder of run directories", metavar="DIR")
    run_name: str | None = opt(None, "run directory name (default: latent-solver-tol-backprop-seed)",
                               metavar="NAME")


# --------------------------------------------------------------------------- validation

def check_positive(cfg: Any, names: tuple[str, ...], at_least: int = 1) -> None:
    for name in names:
        value = getattr(cfg, name)
        if value is None:
            continue
        if isinstance(value, int) and value < at_least:
            raise ConfigError(f"{flag(name)} must be at least {at_least}, got {value}")
        if isinstance(value, float) and not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{flag(name)} must be a positive number, got {value}")


def check_output(cfg: Any) -> None:
    """Seeds in numpy's range, --run-name one folder inside --out-dir, --out-dir writable; before any write."""
    for name in ("seed", "system_seed"):
        value = getattr(cfg, name, 0)
        if not 0 <= value < 2 ** 32:
            raise ConfigError(f"{flag(name)} must be between 0 and 2**32 - 1, got {value}")
    check_run_name(getattr(cfg, "run_name", None))
    check_writable(Path(cfg.out_dir))


def resolve_solver(cfg: Any, explicit: set[str]) -> dict[str, Any]:
    """Changes that make ``cfg``'s solver options say what will run: the project's one rule, with
    ``--steps`` required for fixed-step solvers (steps per unit of time; no default here)."""
    check_positive(cfg, ("tol", "rtol", "atol", "adjoint_tol"))
    check_positive(cfg, ("max_num_steps", "steps"))
    if cfg.adjoint_tol is not None and not cfg.adjoint:
        raise ConfigError("--adjoint-tol does not apply without --adjoint; add --adjoint or drop --adjoint-tol")
    return resolve_solver_options(dataclasses.asdict(cfg), explicit, default_steps=None)


def _check_fit_options(cfg: FitOptions) -> None:
    if cfg.field not in list_fields():
        raise ConfigError(f"unknown --field {cfg.field!r}{closest(cfg.field, list_fields())}; valid: {_fields()}")
    if cfg.features != "auto" and cfg.features not in list_features():
        raise ConfigError(f"unknown --features {cfg.features!r}; valid: {_features()}")
    if not (math.isfinite(cfg.irregular) and 0 <= cfg.irregular < 1):
        raise ConfigError(f"--irregular must be in [0, 1) (the fraction of observation times dropped), "
                          f"got {cfg.irregular}")
    check_positive(cfg, ("data_size", "iters", "batch_size", "eval_every", "lr", "threads"))
    check_positive(cfg, ("batch_time",), at_least=2)
    observed = cfg.data_size - round(cfg.irregular * (cfg.data_size - 1))
    if observed < cfg.batch_time:
        raise ConfigError(f"--batch-time {cfg.batch_time} needs at least {cfg.batch_time} observed times, but "
                          f"--data-size {cfg.data_size} with --irregular {cfg.irregular:g} keeps {observed}; "
                          f"lower --batch-time or --irregular, or raise --data-size")
    windows = observed - cfg.batch_time + 1
    if windows < cfg.batch_size:
        raise ConfigError(f"--batch-size {cfg.batch_size} needs {cfg.batch_size} distinct sub-trajectories, but "
                          f"{observed} observed times give {windows} of --batch-time {cfg.batch_time}; lower "
                          f"--batch-size or --batch-time, or raise --data-size")


def resolve_fit(cfg: FitConfig, explicit: set[str]) -> FitConfig:
    """Validate and fill ``auto`` settings from the system.

    Raises:
        ConfigError: unknown system / field / features / solver, or a value out of range.
    """
    _check_fit_options(cfg)
    check_output(cfg)
    system = build_system(cfg.system, cfg.system_seed)
    changes = resolve_solver(cfg, explicit)
    changes["features"] = system.features if cfg.features == "auto" else cfg.features
    changes["time_input"] = system.time_dependent if cfg.time_input is None else cfg.time_input
    return dataclasses.replace(cfg, **changes)


def fit_configs(cfg: FitAllConfig, explicit: set[str]) -> list[FitConfig]:
    """One resolved :class:`FitConfig` per system, run directory ``OUT_DIR/<system>``."""
    if not cfg.systems:
        raise ConfigError("--systems is empty; give at least one system (e.g. spiral)")
    if len(set(cfg.systems)) != len(cfg.systems):
        raise ConfigError(f"--systems lists a system twice ({','.join(cfg.systems)}); give each once")
    common = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(FitOptions)}
    return [resolve_fit(FitConfig(**common, system=name, run_name=name), explicit) for name in cfg.systems]


def resolve_latent(cfg: LatentConfig, explicit: set[str]) -> LatentConfig:
    check_positive(cfg, ("spirals", "test_spirals", "window", "observations", "extrapolate", "latent_dim",
                         "hidden", "rnn_hidden", "iters", "eval_every", "lr", "noise_std", "threads"))
    check_output(cfg)
    if cfg.observations > cfg.window:
        raise ConfigError(f"--observations {cfg.observations} cannot exceed --window {cfg.window} (the points "
                          f"are drawn inside the window); lower --observations or raise --window")
    if 2 * cfg.window + cfg.extrapolate > SPIRAL_POINTS:
        raise ConfigError(f"--window {cfg.window} and --extrapolate {cfg.extrapolate} need 2·window + extrapolate "
                          f"<= {SPIRAL_POINTS} spiral grid points (windows start at least one window in); lower them")
    return dataclasses.replace(cfg, **resolve_solver(cfg, explicit))
