"""The ``heartbeats`` command's config: recordings, beat cutting, the models compared, and training.

Precedence is the project's (defaults < ``--config`` YAML < flags); every bad value is a
:class:`ConfigError` raised before anything is written.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from odenet.config import ConfigError, flag, opt
from odenet.dynamics.config import DynamicsSolverOptions, check_output, check_positive, resolve_solver
from odenet.dynamics.heartbeats import BANDS, list_recordings
from odenet.registry import closest

# The models compared on one split, in the report's order. "latent-ode" is the seed's set-up.
VARIANTS = {
    "latent-ode": "latent ODE, MLP field (the seed's set-up)",
    "latent-ode-kinetic": "latent ODE + kinetic-energy penalty λ∫‖f‖²dt on the training solves",
    "latent-ode-stable": "latent ODE, stable field f(z) = −softplus(a)⊙z + W·tanh(MLP(z))",
    "latent-gru": "same encoder and decoder, GRU-cell latent dynamics (baseline)",
    "mean-beat": "the training set's mean beat, whatever is observed (baseline)",
}
WINDOWS = ("first", "any")


@dataclass
class HeartbeatsConfig(DynamicsSolverOptions):
    """Latent-ODE VAE on heartbeat phase portraits (x, x'): reconstruction, interpolation, extrapolation."""

    tol: float | None = opt(1e-3, "adaptive solvers: rtol = atol = TOL")
    max_num_steps: int | None = opt(2000, "adaptive solvers fail after this many steps per solve (runaway guard)")
    recordings: list[str] = opt(["ppg-1", "ppg-2", "ppg-3"], "recordings: built-in names (" + ", ".join(
        list_recordings()) + ") or one-column text/CSV files", metavar="R1,R2")
    holdout_recording: str | None = opt("ppg-1", "recording never trained on (scored as test-recording); none: "
                                                 "no held-out recording")
    sample_rate: float | None = opt(None, "sampling rate in Hz of the recordings given as files")
    file_kind: str = opt("ppg", "band-pass of file recordings", choices_help=lambda: ", ".join(BANDS))
    ecg_seconds: float = opt(300.0, "seconds of each synthetic ECG recording (ECGSYN)")
    beat_points: int = opt(64, "points per beat after resampling (phase φ ∈ [0, 1) of one cycle)")
    horizon_beats: int = opt(3, "beats per segment: the observed beat and the ones extrapolation is scored on")
    min_correlation: float = opt(0.9, "keep a beat when its shape correlates this much with its recording's "
                                      "median beat")
    test_fraction: float = opt(0.2, "last fraction (in time) of each training recording's beats held out")
    observe: float = opt(0.5, "fraction of a beat observed (the window); the rest is extrapolated")
    observations: int = opt(16, "observed points per window, drawn at random inside it (irregular)")
    train_windows: list[str] = opt(list(WINDOWS), "where training windows start: first = at a beat's start, as "
                                   "in the seed's set-up (the rest of a beat is never seen); any = at a random "
                                   "phase of the first beat. One set of runs each", metavar="W1,W2")
    noise_std: float = opt(0.1, "std of the Gaussian likelihood (standardised units)")
    latent_dim: int = opt(8, "dimension of z")
    hidden: int = opt(32, "hidden units of the latent field and the decoder")
    rnn_hidden: int = opt(32, "hidden units of the recognition RNN")
    variants: list[str] = opt(list(VARIANTS), "models compared on the same split: " + ", ".join(VARIANTS),
                              metavar="V1,V2")
    kinetic: float = opt(1.0, "λ of latent-ode-kinetic's ∫‖f‖²dt (a mean over z's dimensions), beside the "
                              "−ELBO of a window (a sum over its observed points)")
    iters: int = opt(600, "training iterations")
    batch_size: int = opt(128, "training windows per iteration")
    lr: float = opt(1e-2, "Adam learning rate, cosine-annealed to 0 over --iters")
    eval_every: int = opt(100, "evaluate every N iterations (and at 0 and the end)")
    eval_beats: int = opt(200, "at most this many segments per scored set (evenly spaced in time)")
    seeds: list[int] = opt([0, 1, 2], "seeds of the weights, windows and posterior samples; one run per "
                                      "variant and seed", metavar="S1,S2")
    threads: int = opt(1, "torch CPU threads (these models are small: more threads mostly add synchronisation)")
    out_dir: str = opt("runs/heartbeats", "parent folder of run directories", metavar="DIR")
    run_name: str | None = opt(None, "folder of this experiment inside --out-dir (default: "
                                     "heartbeats-obsFRACTION)", metavar="NAME")

    def window(self) -> int:
        """Grid points of the observed window."""
        return max(1, round(self.observe * self.beat_points))


def _check_lists(cfg: HeartbeatsConfig) -> None:
    for name, values in (("recordings", cfg.recordings), ("variants", cfg.variants), ("seeds", cfg.seeds),
                         ("train_windows", cfg.train_windows)):
        if not values:
            raise ConfigError(f"{flag(name)} is empty; give at least one")
        if len(set(values)) != len(values):
            raise ConfigError(f"{flag(name)} lists an entry twice ({','.join(map(str, values))}); give each once")
    for variant in cfg.variants:
        if variant not in VARIANTS:
            raise ConfigError(f"unknown variant {variant!r} in --variants{closest(variant, list(VARIANTS))}; "
                              f"valid: {', '.join(VARIANTS)}")
    for name in cfg.recordings:
        if name not in list_recordings() and not Path(name).is_file():
            hint = closest(name, list_recordings())
            raise ConfigError(f"--recordings: {name!r} is neither a built-in recording{hint} nor a file; valid "
                              f"names: {', '.join(list_recordings())}")
    if any(name not in list_recordings() for name in cfg.recordings) and cfg.sample_rate is None:
        raise ConfigError("--recordings names a file, whose sampling rate is not known; add --sample-rate HZ")
    if cfg.holdout_recording is not None and cfg.holdout_recording not in cfg.recordings:
        raise ConfigError(f"--holdout-recording {cfg.holdout_recording!r} is not in --recordings; name one of "
                          f"{','.join(cfg.recordings)} or none")
    if cfg.holdout_recording is not None and len(cfg.recordings) < 2:
        raise ConfigError("--holdout-recording leaves no recording to train on; add recordings or give none")


def resolve_heartbeats(cfg: HeartbeatsConfig, explicit: set[str]) -> HeartbeatsConfig:
    """Validate (every list, range and name) and fill in the solver options.

    Raises:
        ConfigError: a value out of range, an unknown recording or variant, an empty list.
    """
    _check_lists(cfg)
    check_positive(cfg, ("ecg_seconds", "noise_std", "lr", "sample_rate"))
    check_positive(cfg, ("latent_dim", "hidden", "rnn_hidden", "iters", "batch_size", "eval_every", "threads",
                         "observations", "eval_beats"))
    check_positive(cfg, ("beat_points",), at_least=8)
    check_positive(cfg, ("horizon_beats",), at_least=1)
    for name, low, high in (("observe", 0.0, 1.0), ("min_correlation", -1.0, 1.0), ("test_fraction", 0.0, 1.0)):
        value = getattr(cfg, name)
        if not (math.isfinite(value) and low < value <= high):
            raise ConfigError(f"{flag(name)} must be in ({low:g}, {high:g}], got {value}")
    if cfg.kinetic < 0 or not math.isfinite(cfg.kinetic):
        raise ConfigError(f"--kinetic must be a number >= 0, got {cfg.kinetic}")
    for where in cfg.train_windows:
        if where not in WINDOWS:
            raise ConfigError(f"--train-windows: {where!r} is not one of {', '.join(WINDOWS)}")
    if cfg.file_kind not in BANDS:
        raise ConfigError(f"--file-kind must be one of {', '.join(BANDS)}, got {cfg.file_kind!r}")
    if cfg.observations > cfg.window():
        raise ConfigError(f"--observations {cfg.observations} cannot exceed the {cfg.window()} points of the observed "
                          f"window (--observe {cfg.observe:g} of --beat-points {cfg.beat_points}); lower it")
    for seed in cfg.seeds:
        if not 0 <= seed < 2 ** 31:
            raise ConfigError(f"--seeds must be between 0 and 2**31 - 1, got {seed}")
    check_output(cfg)
    return dataclasses.replace(cfg, **resolve_solver(cfg, explicit))


def experiment_name(cfg: HeartbeatsConfig) -> str:
    return cfg.run_name or f"heartbeats-obs{cfg.observe:g}"
