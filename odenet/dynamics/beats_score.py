"""The heartbeat experiment's data in tensors, and every measurement of a model on it.

Errors are in standardised units: each channel (x and dx/dφ) has mean 0 and variance 1 over the
training beats, so an MSE of 1 is the spread of the data itself. Scored windows are built once, with
one fixed generator, so every run of an experiment is scored on the same beats and the same observed
points.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from odenet.dynamics.beats_config import HeartbeatsConfig
from odenet.dynamics.beats_model import BeatWindows, MeanBeat, predict, scored_windows
from odenet.dynamics.heartbeats import BeatCount, beat_marks, cut_beats, load_recording, split
from odenet.errors import UserError
from odenet.models import SolverError, reset_nfe, take_nfe

DIVERGED = 2.0  # a prediction is "off the data" when some |x̂| passes this many times the set's largest |x|
SCALES = (1.0, 2.0, 4.0)  # radii, in units of the training region's radius R, where the field's pull is read
MASK_SEED = 12345  # the observed points of the scored windows: the same for every run
PORTRAITS = 30  # beats per recording in the data figure


@dataclass(frozen=True)
class BeatData:
    """Standardised segments: the training set and the scored windows of each non-empty set."""

    counts: list[BeatCount]
    sizes: dict[str, int]  # segments per set, before the --eval-beats cap
    center: np.ndarray  # (2,) the training beats' channel means (x, dx/dφ)
    scale: np.ndarray  # (2,) ... and standard deviations
    train: torch.Tensor  # (N, H·P, 2)
    scored: dict[str, BeatWindows]  # "train" (a subsample), "test-beats", "test-recording"
    recordings: dict[str, torch.Tensor]  # (S,) each scored window's recording, per set
    mean_beat: torch.Tensor  # (P, 2)
    views: dict[str, dict[str, np.ndarray]]  # per recording: a stretch with peaks and starts, some beats


def evenly(count: int, cap: int) -> np.ndarray:
    """At most ``cap`` indices of ``range(count)``, evenly spaced (so a subsample spans the whole recording)."""
    return np.unique(np.linspace(0, count - 1, min(count, cap)).round().astype(int))


def prepare_data(cfg: HeartbeatsConfig) -> BeatData:
    """Load and cut every recording, split, standardise with the training beats' statistics.

    Raises:
        UserError: a recording that cannot be cut (NaNs, wrong rate, too short), or no training beats.
    """
    recordings = [load_recording(name, cfg.ecg_seconds, cfg.sample_rate, cfg.file_kind) for name in cfg.recordings]
    cut = [cut_beats(rec, cfg.beat_points, cfg.horizon_beats, cfg.min_correlation) for rec in recordings]
    sets = split([segments for segments, _ in cut], cfg.holdout_recording, cfg.test_fraction, cfg.horizon_beats)
    if len(sets["train"]) < 2:
        raise UserError(f"the recordings leave {len(sets['train'])} training segments after holding out "
                        f"{cfg.holdout_recording} and the last {cfg.test_fraction:g} of each; add recordings or "
                        f"lower --test-fraction or --horizon-beats")
    flat = sets["train"].x.reshape(-1, 2)
    center, scale = flat.mean(0), flat.std(0)

    def standard(x: np.ndarray) -> torch.Tensor:
        return torch.tensor((x - center) / scale, dtype=torch.float32)

    generator = torch.Generator().manual_seed(MASK_SEED)
    picks = {name: evenly(len(s), cfg.eval_beats) for name, s in sets.items() if len(s)}
    scored = {name: scored_windows(standard(sets[name].x[pick]), cfg, generator) for name, pick in picks.items()}
    sources = {name: torch.as_tensor(sets[name].recording[pick]) for name, pick in picks.items()}
    train = standard(sets["train"].x)
    views = {rec.name: {**beat_marks(rec), "beats": standard(seg.x[evenly(len(seg), PORTRAITS), : cfg.beat_points])
                        .numpy()} for rec, (seg, _) in zip(recordings, cut)}
    return BeatData([count for _, count in cut], {name: len(s) for name, s in sets.items()}, center, scale, train,
                    scored, sources, train[:, : cfg.beat_points].mean(0), views)


def within_spread(x: torch.Tensor, groups: torch.Tensor) -> float:
    """The MSE of predicting each window by its own recording's mean window: the between-beat variance
    within recordings (a model that only knows which recording a beat came from scores this)."""
    total = sum(((x[groups == g] - x[groups == g].mean(0)) ** 2).sum() for g in groups.unique())
    return float(total / x.numel())


def score(model: nn.Module, windows: BeatWindows, points: int, groups: torch.Tensor
          ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Measurements of x̂ from each window's observations, and the per-time arrays figures need.

    ``mse_observed`` at the observed points, ``mse_interp`` at the window's other points, ``mse_rest`` on
    the rest of the first beat, ``mse_beat2``... on the following beats, ``mse_extrap`` on all points after
    the window; ``diverged``: fraction of beats whose |x̂| passes DIVERGED × the set's largest |x| (off the
    data); ``diversity``: the between-beat variance of the reconstructions over the window over that of the
    true windows (0 = one shape for every beat); ``skill``: 1 − window MSE / ``spread``, the MSE of each
    recording's own mean window (≤ 0: nothing of a beat's own shape is reconstructed, at best its recording's
    average form); ``groups`` (S,) says which recording each window is from. A failed solve (a blow-up the
    solver gives up on) is ``solve_failed`` = 1.
    """
    reset_nfe(model)
    started = time.perf_counter()
    try:
        x_hat, z = predict(model, windows)
    except SolverError as exc:
        take_nfe(model)
        return {"solve_failed": 1.0, "diverged": 1.0, "reason": str(exc)}, {}
    elapsed_ms = (time.perf_counter() - started) * 1e3
    true, w = windows.true, windows.window
    err = (x_hat - true) ** 2  # (S, T, 2)
    in_window = err[:, :w]
    spread = within_spread(true[:, :w], groups)
    row = {"mse_observed": in_window[windows.mask].mean().item(),
           "mse_interp": in_window[~windows.mask].mean().item() if (~windows.mask).any() else float("nan"),
           "mse_window": in_window.mean().item(), "spread": spread,
           "skill": 1 - in_window.mean().item() / spread if spread > 0 else float("nan"),
           "mse_rest": err[:, w:points].mean().item() if w < points else float("nan")}
    for k in range(2, true.shape[1] // points + 1):
        row[f"mse_beat{k}"] = err[:, (k - 1) * points : k * points].mean().item()
    row["mse_extrap"] = err[:, w:].mean().item() if w < err.shape[1] else float("nan")
    peak = x_hat.abs().amax(dim=(1, 2))
    row.update(max_abs=peak.max().item(), diverged=(peak > DIVERGED * true.abs().max()).float().mean().item(),
               diversity=(x_hat[:, :w].var(0).mean() / true[:, :w].var(0).mean()).item(),
               solve_failed=0.0, time_ms=elapsed_ms, nfe_forward=take_nfe(model).get("nfe_forward", 0))
    arrays = {"mse_curve": err.mean(dim=(0, 2)).numpy(), "pred": x_hat.clamp(-1e3, 1e3).numpy()}
    if z is not None:
        arrays["z_norm"] = z.norm(dim=-1).median(dim=0).values.numpy()  # (T,)
        arrays["z_window"] = z[:, :w].norm(dim=-1).flatten().numpy()
    return row, arrays


@torch.no_grad()
def field_growth(field: nn.Module, radius: float, latent_dim: int, seed: int) -> dict[str, float]:
    """How the latent field pulls at radii c·R (c in SCALES) outside the region R the training windows
    visited: the mean radial speed ⟨f(z), z/‖z‖⟩ over 256 random directions (> 0 pushes outwards), and the
    fraction of directions pushing outwards. A field that pushes out faster the farther out it is grows
    exponentially once a trajectory leaves the data."""
    generator = torch.Generator().manual_seed(seed)
    u = torch.randn(256, latent_dim, generator=generator)
    u = u / u.norm(dim=1, keepdim=True)
    row = {}
    for c in SCALES:
        radial = (field(torch.zeros(()), c * radius * u) * u).sum(-1)
        row[f"radial_speed_{c:g}R"] = radial.mean().item()
        row[f"outward_{c:g}R"] = (radial > 0).float().mean().item()
    return row


def escape_time(z_norm: np.ndarray, radius: float, points: int) -> float | None:
    """First time (in beats) at which the median ‖z(t)‖ passes R; None if it never does."""
    beyond = np.flatnonzero(z_norm > radius)
    return float(beyond[0] / points) if len(beyond) else None


def is_latent_ode(model: nn.Module) -> bool:
    return hasattr(model, "ode")


def is_trained(model: nn.Module) -> bool:
    return not isinstance(model, MeanBeat)
