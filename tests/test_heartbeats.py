"""Heartbeats: recordings, beats cut at peaks, the split, the models' pieces, a short run and its report."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math

import numpy as np
import pytest
import torch

from odenet.cli import dynamics_main as main
from odenet.dynamics.beats_config import HeartbeatsConfig, resolve_heartbeats
from odenet.dynamics.beats_model import (LatentGRU, StableField, build_model, kinetic_energy, objective, predict,
                                         random_mask, scored_windows, training_windows)
from odenet.dynamics.beats_plots import horizon_figure, portraits_figure
from odenet.dynamics.beats_score import within_spread
from odenet.dynamics.heartbeats import Recording, cut_beats, dominant_period, load_recording, split
from odenet.errors import UserError
from odenet.run.metrics import read_metrics

pytestmark = pytest.mark.usefixtures("one_thread")

RATE = 100.0
PERIOD = 0.8  # seconds: 75 beats per minute


def pulses(seconds: float, seed: int = 0, period: float = PERIOD, rate: float = RATE) -> tuple[np.ndarray, int]:
    """A PPG-like signal: a systolic pulse per period (amplitude varying ±30 % from beat to beat) and a
    smaller diastolic one 0.3 s after it; → (signal, number of systolic peaks)."""
    t = np.arange(int(seconds * rate)) / rate
    centres = period * (np.arange(int(seconds / period)) + 0.5)
    amplitude = 1 + 0.3 * np.random.default_rng(seed).uniform(-1, 1, len(centres))
    x = sum(a * (np.exp(-0.5 * ((t - c) / 0.06) ** 2) + 0.3 * np.exp(-0.5 * ((t - c - 0.3) / 0.08) ** 2))
            for a, c in zip(amplitude, centres))
    return x, len(centres)


def recording(signal: np.ndarray, rate: float = RATE, name: str = "synthetic") -> Recording:
    return Recording(name, signal, rate, "ppg", "PPG (test)")


def config(**changes) -> HeartbeatsConfig:
    return resolve_heartbeats(dataclasses.replace(HeartbeatsConfig(), **changes), set(changes))


# --------------------------------------------------------------------------- beats

def test_beats_are_cut_at_every_peak_into_segments_of_whole_cycles():
    signal, peaks = pulses(20.0)
    segments, count = cut_beats(recording(signal), points=32, horizon=3, min_correlation=0.9)
    assert (count.peaks, count.beats, count.kept, count.segments) == (peaks, peaks - 2, peaks - 2, peaks - 4)
    assert segments.x.shape == (peaks - 4, 3 * 32, 2) and segments.duration.shape == (peaks - 4, 3)
    assert np.allclose(segments.duration, PERIOD, atol=0.02)
    assert list(segments.beat) == list(range(peaks - 4))
    # Each beat starts a third of a period before its peak: the peak sits a third of the way in.
    first = segments.x[:, :32, 0]
    assert np.all(np.abs(first.argmax(1) - 32 / 3) <= 1)
    # x' is dx/dφ (per beat): the derivative along the resampled beat, times nothing more.
    phase_derivative = np.gradient(segments.x[5, :32, 0], 1 / 32)
    assert np.corrcoef(phase_derivative[2:-2], segments.x[5, 2:30, 1])[0, 1] > 0.99
    assert np.allclose(phase_derivative[4:28], segments.x[5, 4:28, 1], atol=0.15 * np.abs(phase_derivative).max())


def test_dominant_period_is_the_beat_interval():
    signal, _ = pulses(30.0)
    assert dominant_period(signal, RATE) == pytest.approx(PERIOD, abs=0.02)


def test_a_beat_unlike_the_others_is_dropped_with_its_segments():
    signal, peaks = pulses(20.0)
    t = np.arange(len(signal)) / RATE
    signal = signal - 0.8 * np.exp(-0.5 * ((t - 10.45) / 0.05) ** 2)  # a dip in one beat's diastole
    segments, count = cut_beats(recording(signal), points=32, horizon=3, min_correlation=0.9)
    assert count.kept == count.beats - 1 and count.segments == peaks - 4 - 3


def test_split_holds_out_the_last_beats_and_a_whole_recording_without_sharing_a_beat():
    parts = [cut_beats(recording(pulses(40.0, seed)[0], name=f"r{seed}"), 16, 3, 0.9)[0] for seed in range(3)]
    sets = split(parts, "r2", 0.25, 3)
    assert set(sets["test-recording"].recording) == {2} and len(sets["test-recording"]) == len(parts[2])
    for r in (0, 1):
        train = sets["train"].beat[sets["train"].recording == r]
        test = sets["test-beats"].beat[sets["test-beats"].recording == r]
        assert len(train) and len(test) and train.max() + 3 <= test.min()  # no beat in both
    assert len(sets["train"]) + len(sets["test-beats"]) < len(parts[0]) + len(parts[1])  # straddling ones dropped


@pytest.mark.skipif(importlib.util.find_spec("heartpy") is None, reason="heartpy is not installed")
def test_heartpy_ppg_recording_is_read_at_its_rate_and_cut():
    rec = load_recording("ppg-1", 0.0)
    assert rec.rate == 100.0 and rec.signal.shape == (2483,) and rec.label == "PPG (real)"
    _, count = cut_beats(rec, 64, 3, 0.9)
    assert (count.peaks, count.beats, count.kept, count.segments) == (24, 22, 22, 20)


@pytest.mark.parametrize("signal, rate, message", [
    (np.r_[pulses(20.0)[0][:500], np.nan, pulses(20.0)[0][501:]], RATE, "has 1 NaN or infinite samples"),
    (pulses(3.0)[0], RATE, "lasts 3 s, too short for one beat"),
    (pulses(80.0)[0], 1000.0, "repeats every 0.08 s at the stated 1000 Hz (750 beats per minute), not a heart "
                              "rate; check its sampling rate"),
    (pulses(200.0)[0], 10.0, "(8 beats per minute), not a heart rate; check its sampling rate"),
])
def test_bad_signals_are_one_sentence(signal, rate, message):
    with pytest.raises(UserError, match=None) as info:
        cut_beats(recording(signal, rate), 32, 3, 0.9)
    assert message in str(info.value) and str(info.value).count(";") == 1


# --------------------------------------------------------------------------- models

def test_windows_observe_the_first_part_and_score_every_point():
    cfg = config(beat_points=16, observe=0.5, observations=4, batch_size=5, out_dir="runs")
    x = torch.arange(10 * 48 * 2, dtype=torch.float32).reshape(10, 48, 2)
    windows = scored_windows(x, cfg, torch.Generator().manual_seed(0))
    assert windows.true.shape == (10, 48, 2) and windows.obs.shape == (10, 8, 2) and windows.t[16] == 1.0
    assert (windows.mask.sum(1) == 4).all() and windows.mask[:, 0].all()
    first = training_windows(x, cfg, "first", torch.Generator().manual_seed(0))
    assert first.true.shape == (5, 8, 2) and torch.equal(first.true[:, 0, 0] % 96, torch.zeros(5))
    anywhere = training_windows(x, cfg, "any", torch.Generator().manual_seed(0))
    offsets = (anywhere.true[:, 0, 0] % 96) / 2
    assert offsets.max() < 16 and (offsets > 0).any()
    assert random_mask(3, 8, 8, torch.Generator()).all()


def test_stable_field_pulls_every_far_trajectory_into_its_ball():
    torch.manual_seed(0)
    field = StableField(latent_dim=4, hidden=16)
    radius = field.radius()
    z = torch.randn(64, 4)
    z = 10 * radius * z / z.norm(dim=1, keepdim=True)
    radial = (field(torch.zeros(()), z) * z).sum(1)
    assert (radial < 0).all()  # inward everywhere on a sphere outside B/λ
    for _ in range(2000):  # Euler to t = 20: inside the ball, never out again
        z = z + 0.01 * field(torch.zeros(()), z)
    assert z.norm(dim=1).max() <= radius


def test_skill_is_measured_against_each_recordings_own_mean():
    x = torch.cat([torch.zeros(3, 4, 2), torch.ones(2, 4, 2)])  # two recordings, each one shape
    assert within_spread(x, torch.tensor([0, 0, 0, 1, 1])) == 0.0
    assert within_spread(x, torch.zeros(5, dtype=torch.long)) == pytest.approx(0.24)  # 2/5 · 3/5


def test_kinetic_energy_integrates_the_mean_squared_speed():
    z = torch.ones(3, 11, 4)
    t = torch.linspace(0, 2, 11)
    assert kinetic_energy(lambda _t, z: 3 * z, z, t).item() == pytest.approx(18.0)  # ∫₀² 9 dt


def test_every_variant_trains_one_step_and_predicts_every_point():
    cfg = config(beat_points=16, observations=4, batch_size=6, latent_dim=3, hidden=8, rnn_hidden=8, out_dir="runs")
    x = torch.randn(12, 48, 2)
    generator = torch.Generator().manual_seed(0)
    windows = scored_windows(x, cfg, generator)
    for variant in ("latent-ode", "latent-ode-kinetic", "latent-ode-stable", "latent-gru", "mean-beat"):
        torch.manual_seed(0)
        model = build_model(cfg, variant, x[:, :16].mean(0))
        if variant != "mean-beat":
            loss, parts = objective(model, training_windows(x, cfg, "any", generator), cfg.noise_std,
                                    1.0 if variant.endswith("kinetic") else 0.0, generator)
            loss.backward()
            assert math.isfinite(loss.item()) and all(p.grad is not None for p in model.parameters())
            assert ("reg_kinetic" in parts) == (not isinstance(model, LatentGRU))
        pred, z = predict(model, windows)
        assert pred.shape == (12, 48, 2) and torch.isfinite(pred).all() and (z is None) == (variant == "mean-beat")


# --------------------------------------------------------------------------- the command

def write_recording(path, seconds: float, seed: int) -> str:
    np.savetxt(path, pulses(seconds, seed)[0])
    return str(path)


def test_short_run_learns_a_synthetic_beat_and_writes_runs_and_report(tmp_path):
    files = [write_recording(tmp_path / f"pulse{k}.txt", 60.0, k) for k in range(2)]
    out = tmp_path / "runs"
    args = ["heartbeats", "--recordings", ",".join(files), "--sample-rate", "100", "--holdout-recording",
            files[1], "--variants", "latent-ode,mean-beat", "--train-windows", "first", "--seeds", "0",
            "--iters", "300", "--eval-every", "100", "--beat-points", "32", "--observations", "8",
            "--batch-size", "32", "--out-dir", str(out), "--run-name", "r"]
    assert main(args) == 0
    record = json.loads((out / "r" / "experiment.json").read_text())
    assert [r["run"] for r in record["runs"]] == ["mean-beat", "first-latent-ode-s0"]
    assert all(r["status"] == "done" for r in record["runs"])
    mean_beat = record["runs"][0]["final"]["test-beats"]
    run = out / "r" / "first-latent-ode-s0"
    rows = [r for r in read_metrics(run / "metrics.jsonl") if r["split"] == "test-beats"]
    assert [r["step"] for r in rows] == [0, 100, 200, 300]
    # It learned the beat: below the mean beat on held-out beats, and each beat's own height (±30 %).
    assert rows[-1]["mse_window"] < 0.1 * rows[0]["mse_window"] and rows[-1]["mse_window"] < mean_beat["mse_window"]
    assert rows[-1]["skill"] > 0.1 and rows[-1]["diversity"] > 0.2 and mean_beat["diversity"] == 0
    for name in ("config.yaml", "summary.json", "last.pt"):
        assert (run / name).is_file()
    assert any(p.name.startswith("events.out.tfevents") for p in run.iterdir())
    for name in ("report.md", "report.html", "error_vs_horizon.png", "portraits_first.png", "beats_segmentation.png",
                 "convergence.png", "plot_data.npz"):
        assert (out / "r" / name).is_file()
    report = (out / "r" / "report.md").read_text()
    assert "| `latent-ode` | 1/1 |" in report and "held-out recording" in report


@pytest.mark.parametrize("args, message", [
    (("--variants", "latent-odee"), "unknown variant 'latent-odee' in --variants (did you mean 'latent-ode'?)"),
    (("--observations", "40"), "--observations 40 cannot exceed the 32 points of the observed window"),
    (("--holdout-recording", "ppg-9"), "--holdout-recording 'ppg-9' is not in --recordings"),
    (("--recordings", "nowhere.csv"), "--recordings: 'nowhere.csv' is neither a built-in recording"),
    (("--observe", "0"), "--observe must be in (0, 1], got 0.0"),
    (("--train-windows", "middle"), "--train-windows: 'middle' is not one of first, any"),
])
def test_bad_options_exit_2_and_write_nothing(tmp_path, capsys, args, message):
    assert main(["heartbeats", "--out-dir", str(tmp_path / "runs"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not (tmp_path / "runs").exists()


def test_a_recording_at_a_wrong_rate_exits_2_with_one_sentence(tmp_path, capsys):
    path = write_recording(tmp_path / "pulse.txt", 80.0, 0)
    assert main(["heartbeats", "--recordings", path, "--sample-rate", "1000", "--holdout-recording", "none",
                 "--out-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "(750 beats per minute), not a heart rate; check its sampling rate" in err and err.count("\n") == 1


# --------------------------------------------------------------------------- figures

def test_horizon_figure_draws_one_line_per_model_and_the_window():
    t = np.arange(96) / 32
    curves = {"first": {"latent-ode": [np.full(96, 2.0), np.full(96, 4.0)], "mean-beat": [np.full(96, 0.5)]}}
    fig = horizon_figure(curves, {"first": {"latent-ode": [np.ones(96)]}}, t, 0.5, "t")
    top = fig.axes[0]
    means = {line.get_label(): line.get_ydata() for line in top.get_lines() if not line.get_label().startswith("_")}
    assert set(means) == {"latent-ode (2 seeds)", "mean-beat (no training)"}
    assert np.allclose(means["latent-ode (2 seeds)"], 3.0)
    assert top.patches[0].get_x() == 0 and top.patches[0].get_width() == pytest.approx(0.5)  # the window


def test_portraits_cut_a_blow_up_at_the_data_and_say_so():
    true = np.stack([np.cos(np.linspace(0, 6 * np.pi, 96)), np.sin(np.linspace(0, 6 * np.pi, 96))], -1)[None]
    arrays = {"data/test-beats/true": true, "data/test-beats/obs": true[:, :16], "data/test-beats/mask":
              np.ones((1, 16), bool), "a/test-beats/pred": true * np.exp(np.linspace(0, 5, 96))[None, :, None],
              "b/test-beats/pred": true}
    fig = portraits_figure(arrays, ["a", "b"], ["a", "b"], [("test-beats", 0)], 16, "t")
    blown, fine = fig.axes
    assert blown.get_xlim()[1] < 2 and "max |x̂| = 1" in blown.texts[0].get_text()
    assert not fine.texts and len(fine.get_lines()) == 4  # true, observed, reconstruction, extrapolation
