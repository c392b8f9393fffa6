"""Heartbeats as phase portraits: recordings, beats cut at their peaks, and the split by beat and by recording.

Recordings (nothing downloads):

* ``ppg-1``, ``ppg-2``, ``ppg-3`` — the real photoplethysmogram (pulse) recordings shipped inside the
  heartpy wheel (``heartpy/data/data.csv`` at 100 Hz; ``data2.csv`` with a millisecond timer column;
  ``data3.csv`` with time stamps). They are PPG, not ECG.
* ``ecg-1``, ``ecg-2``, ``ecg-3`` — synthetic ECG from ECGSYN (McSharry et al. 2003, "A dynamical model for
  generating synthetic electrocardiogram signals", IEEE TBME 50(3)) as neurokit2's ``ecg_simulate``
  computes it, at 60, 75 and 90 beats per minute with heart-rate variability.
* a path to a one-column text/CSV file, at ``--sample-rate`` Hz.

Beats (:func:`cut_beats`): band-pass (zero-phase Butterworth; PPG 0.5–10 Hz, ECG 0.5–40 Hz), peaks by
``scipy.signal.find_peaks`` spaced at least 60 % of the dominant period (autocorrelation) apart and at
least 30 % of the typical beat height prominent; beat k runs from a third of the previous peak interval
before peak k to the same point before peak k + 1, so it is one whole cycle with its peak a third in.
Each beat is resampled to P points of phase φ ∈ [0, 1); x' is the cubic Savitzky–Golay first derivative
over 50 ms at the recording's own rate, times the beat's duration (dx/dφ, per beat). A beat is kept when
its duration is within 30 % of the recording's median and its shape correlates with the recording's
median beat at least ``min_correlation`` (template matching). A segment is H consecutive kept beats.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import signal as sps

from odenet.errors import UserError

PPG_FILES = {"ppg-1": "data.csv", "ppg-2": "data2.csv", "ppg-3": "data3.csv"}
ECG_SYNTHETIC = {"ecg-1": 60, "ecg-2": 75, "ecg-3": 90}  # mean heart rate (bpm); the name's number seeds it
ECG_RATE = 250.0  # Hz of the synthetic ECG
BANDS = {"ppg": (0.5, 10.0), "ecg": (0.5, 40.0)}  # Hz: a PPG's shape lives below ~10 Hz, an ECG's QRS below 40
PERIOD_RANGE = (0.3, 2.0)  # seconds: 200 to 30 beats per minute
ONSET = 1 / 3  # a beat starts this fraction of the previous peak interval before its peak
SG_SECONDS = 0.05  # Savitzky–Golay window of the derivative


def list_recordings() -> list[str]:
    return [*PPG_FILES, *ECG_SYNTHETIC]


@dataclass(frozen=True)
class Recording:
    name: str
    signal: np.ndarray  # (N,)
    rate: float  # Hz
    kind: str  # "ppg" or "ecg" (the band-pass band)
    label: str  # what it is, for tables: "PPG (real)", "ECG (synthetic, ECGSYN)"


# --------------------------------------------------------------------------- loading

def heartpy_data_dir() -> Path:
    """heartpy's data folder, found without importing heartpy (its import needs setuptools' pkg_resources)."""
    spec = importlib.util.find_spec("heartpy")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the real PPG recordings come inside the heartpy package, which is not installed; "
                        "pip install heartpy, or use the synthetic ecg-1,ecg-2,ecg-3")
    return Path(spec.submodule_search_locations[0]) / "data"


def load_ppg(name: str) -> Recording:
    """One of heartpy's PPG recordings; the sampling rate is heartpy's (data.csv) or read from its time column."""
    path = heartpy_data_dir() / PPG_FILES[name]
    if name == "ppg-1":  # heartpy's examples: sample_rate = 100.0
        return Recording(name, np.loadtxt(path), 100.0, "ppg", "PPG (real)")
    import pandas as pd  # noqa: PLC0415 (loaded on demand: only the file with time stamps needs it)

    table = pd.read_csv(path)
    if name == "ppg-2":  # "timer" in milliseconds
        rate = 1000.0 / float(np.median(np.diff(table["timer"].to_numpy())))
    else:  # "datetime" stamps, quantised to ~15 ms, so the rate is samples over the whole span
        stamps = pd.to_datetime(table["datetime"], format="ISO8601")
        rate = (len(table) - 1) / (stamps.iloc[-1] - stamps.iloc[0]).total_seconds()
    return Recording(name, table["hr"].to_numpy(float), rate, "ppg", "PPG (real)")


def synthetic_ecg(name: str, seconds: float) -> Recording:
    """ECGSYN through neurokit2, noise-free, seeded by the name's number (ecg-2 → seed 2)."""
    import neurokit2 as nk  # noqa: PLC0415 (imported on demand: ~2 s of start-up, only for the synthetic ECG)

    seed = int(name.rsplit("-", 1)[1])
    ecg = nk.ecg_simulate(duration=seconds, sampling_rate=ECG_RATE, heart_rate=ECG_SYNTHETIC[name], heart_rate_std=3,
                          method="ecgsyn", noise=0.0, random_state=seed)
    return Recording(name, np.asarray(ecg, float), ECG_RATE, "ecg", "ECG (synthetic, ECGSYN)")


def load_file(path: str, rate: float | None, kind: str) -> Recording:
    if rate is None:
        raise UserError(f"recording file {path} needs its sampling rate; add --sample-rate HZ")
    try:
        values = np.loadtxt(path, delimiter="," if path.endswith(".csv") else None, ndmin=1)
    except (OSError, ValueError) as exc:
        raise UserError(f"recording file {path} cannot be read as one column of numbers ({str(exc)[:80]}); "
                        f"give a text or CSV file with one sample per line") from None
    return Recording(Path(path).stem, values.reshape(-1).astype(float), rate, kind, f"{kind.upper()} (file)")


def load_recording(name: str, ecg_seconds: float, rate: float | None = None, kind: str = "ppg") -> Recording:
    if name in PPG_FILES:
        return load_ppg(name)
    if name in ECG_SYNTHETIC:
        return synthetic_ecg(name, ecg_seconds)
    return load_file(name, rate, kind)


# --------------------------------------------------------------------------- beats

@dataclass(frozen=True)
class Segments:
    """Runs of H consecutive beats, each beat resampled to P phase points: (x, dx/dφ) per point."""

    x: np.ndarray  # (N, H·P, 2), x scaled by the recording's median beat height
    recording: np.ndarray  # (N,) index into names
    beat: np.ndarray  # (N,) index of the segment's first beat in its recording
    duration: np.ndarray  # (N, H) seconds of each beat
    names: tuple[str, ...]
    points: int  # P

    def __len__(self) -> int:
        return len(self.x)

    def take(self, index: np.ndarray) -> Segments:
        return Segments(self.x[index], self.recording[index], self.beat[index], self.duration[index], self.names,
                        self.points)


@dataclass(frozen=True)
class BeatCount:
    """What segmenting one recording found, for the report."""

    name: str
    label: str
    rate: float
    seconds: float
    peaks: int
    beats: int  # whole cycles between peaks
    kept: int  # beats passing the duration and template checks
    segments: int


def check_signal(rec: Recording) -> None:
    """One sentence for a recording that cannot be cut: NaNs, a bad rate, too short to filter."""
    bad = int((~np.isfinite(rec.signal)).sum())
    if bad:
        raise UserError(f"recording {rec.name} has {bad} NaN or infinite samples; remove or interpolate them "
                        f"before cutting beats")
    if not (np.isfinite(rec.rate) and rec.rate > 2 * BANDS[rec.kind][0]):
        raise UserError(f"recording {rec.name}: sampling rate {rec.rate:g} Hz is not usable; give the rate in Hz "
                        f"(--sample-rate)")
    if len(rec.signal) < 3 * PERIOD_RANGE[1] * rec.rate:
        raise UserError(f"recording {rec.name} lasts {len(rec.signal) / rec.rate:.3g} s, too short for one beat "
                        f"and its neighbours; give at least {3 * PERIOD_RANGE[1]:g} s")


def dominant_period(x: np.ndarray, rate: float) -> float:
    """Seconds of the strongest repetition: the median over windows (8 s, or an eighth of the recording if
    longer) of the lag of the highest (biased) autocorrelation after its first zero crossing.

    The biased estimate shrinks with the lag, so the fundamental wins over its multiples; the median over
    windows keeps a dropout or a burst of motion from deciding. Windows of at least an eighth of the
    recording still hold many beats when the stated rate is far too low.
    """
    span = max(int(4 * PERIOD_RANGE[1] * rate), len(x) // 8)
    periods = [_acf_period(x[i : i + span]) / rate for i in range(0, max(len(x) - span, 0) + 1, span)]
    return float(np.median(periods))


def _acf_period(x: np.ndarray) -> float:
    x = x - x.mean()
    spectrum = np.fft.rfft(x, 2 * len(x))
    acf = np.fft.irfft(spectrum * np.conj(spectrum))[: len(x) // 2]
    below = np.flatnonzero(acf <= 0)
    return float(below[0] + np.argmax(acf[below[0]:])) if len(below) else float("inf")


def band_pass(rec: Recording) -> np.ndarray:
    low, high = BANDS[rec.kind]
    high = min(high, 0.45 * rec.rate)
    sos = sps.butter(2, [low, high], btype="band", fs=rec.rate, output="sos")
    return sps.sosfiltfilt(sos, rec.signal)


def find_beat_peaks(x: np.ndarray, rate: float, period: float) -> np.ndarray:
    """Peak sample indices: at least 60 % of a period apart and 30 % of the typical beat height prominent."""
    span = max(int(2 * period * rate), 2)
    heights = [np.ptp(x[i : i + span]) for i in range(0, len(x) - span + 1, span)]
    peaks, _ = sps.find_peaks(x, distance=max(int(0.6 * period * rate), 1), prominence=0.3 * float(np.median(heights)))
    return peaks


def beat_bounds(rec: Recording) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The band-passed signal, its peaks and where its beats start (fractional samples): beat k is
    [bounds[k], bounds[k + 1]). Raises UserError for a recording that cannot be cut (:func:`check_signal`,
    or a dominant period that is no heart rate: a wrong sampling rate)."""
    check_signal(rec)
    period = dominant_period(rec.signal, rec.rate)
    if not PERIOD_RANGE[0] <= period <= PERIOD_RANGE[1]:
        raise UserError(f"recording {rec.name} repeats every {period:.3g} s at the stated {rec.rate:g} Hz "
                        f"({60 / period:.0f} beats per minute), not a heart rate; check its sampling rate")
    x = band_pass(rec)
    peaks = find_beat_peaks(x, rec.rate, period)
    return x, peaks, peaks[1:] - ONSET * np.diff(peaks)


def beat_marks(rec: Recording, seconds: float = 8.0) -> dict[str, np.ndarray]:
    """``seconds`` from the middle of the band-passed recording, its peaks and beat starts (in seconds), for
    the segmentation figure."""
    x, peaks, bounds = beat_bounds(rec)
    first = max(0, len(x) // 2 - int(seconds * rec.rate / 2))
    last = min(len(x), first + int(seconds * rec.rate))
    inside = lambda at: at[(at >= first) & (at < last)]  # noqa: E731
    return {"t": np.arange(first, last) / rec.rate, "x": x[first:last], "peaks": inside(peaks) / rec.rate,
            "starts": inside(bounds) / rec.rate}


def resample(x: np.ndarray, start: float, end: float, points: int) -> np.ndarray:
    """``x`` (samples) at ``points`` equally spaced fractional positions of [start, end)."""
    return np.interp(start + (end - start) * np.arange(points) / points, np.arange(len(x)), x)


def cut_beats(rec: Recording, points: int, horizon: int, min_correlation: float) -> tuple[Segments, BeatCount]:
    """All segments of ``horizon`` consecutive kept beats of ``rec`` (see the module docstring).

    Raises:
        UserError: NaNs, an unusable sampling rate (its beats would be faster than 200 or slower than 30
            per minute), or a recording too short for one segment.
    """
    x, peaks, bounds = beat_bounds(rec)
    dx = sps.savgol_filter(x, _odd(max(5, round(SG_SECONDS * rec.rate))), 3, deriv=1, delta=1 / rec.rate)
    beats = np.stack([np.stack([resample(x, a, b, points), resample(dx, a, b, points) * (b - a) / rec.rate], -1)
                      for a, b in zip(bounds[:-1], bounds[1:])]) if len(bounds) > 1 else np.zeros((0, points, 2))
    duration = np.diff(bounds) / rec.rate
    keep = _kept(beats, duration, min_correlation)
    starts = [k for k in range(len(beats) - horizon + 1) if keep[k : k + horizon].all()]
    count = BeatCount(rec.name, rec.label, rec.rate, len(rec.signal) / rec.rate, len(peaks), len(beats),
                      int(keep.sum()), len(starts))
    if not starts:
        raise UserError(f"recording {rec.name} ({count.seconds:.1f} s) has {count.kept} clean beats and no "
                        f"{horizon} in a row; give a longer recording or lower --horizon-beats")
    height = float(np.median(np.ptp(beats[keep, :, 0], axis=1)))
    runs = np.stack([beats[k : k + horizon].reshape(horizon * points, 2) for k in starts])
    runs = (runs - [float(np.median(beats[keep, :, 0])), 0.0]) / height
    return Segments(runs, np.zeros(len(starts), int), np.array(starts),
                    np.stack([duration[k : k + horizon] for k in starts]), (rec.name,), points), count


def _odd(n: int) -> int:
    return n if n % 2 else n + 1


def _kept(beats: np.ndarray, duration: np.ndarray, min_correlation: float) -> np.ndarray:
    """Duration within 30 % of the median, and the x shape correlating with the median beat (template).

    The correlation is the best over shifts of up to P/16 points: a peak's phase moves with the ratio of
    neighbouring intervals, and a sharp QRS a few points off would otherwise read as another shape.
    """
    if len(beats) == 0:
        return np.zeros(0, bool)
    typical = np.abs(duration / np.median(duration) - 1) <= 0.3
    shape = beats[:, :, 0] - beats[:, :, 0].mean(1, keepdims=True)
    shape = shape / np.maximum(np.linalg.norm(shape, axis=1, keepdims=True), 1e-12)
    template = np.median(shape[typical] if typical.any() else shape, axis=0)
    template = template / max(float(np.linalg.norm(template)), 1e-12)
    lag = max(beats.shape[1] // 16, 0)
    corr = np.max([np.roll(shape, s, axis=1) @ template for s in range(-lag, lag + 1)], axis=0)
    return typical & (corr >= min_correlation)


# --------------------------------------------------------------------------- splits

SPLITS = ("train", "test-beats", "test-recording")


def concat(parts: list[Segments], names: tuple[str, ...]) -> Segments:
    """Segments of several recordings as one set; ``recording`` indexes ``names``."""
    if not parts:
        return Segments(np.zeros((0, 0, 2)), np.zeros(0, int), np.zeros(0, int), np.zeros((0, 0)), names, 0)
    index = [np.full(len(p), names.index(p.names[0])) for p in parts]
    return Segments(np.concatenate([p.x for p in parts]), np.concatenate(index),
                    np.concatenate([p.beat for p in parts]), np.concatenate([p.duration for p in parts]), names,
                    parts[0].points)


def split(per_recording: list[Segments], holdout: str | None, test_fraction: float,
          horizon: int) -> dict[str, Segments]:
    """train / test-beats (the last ``test_fraction`` of each training recording's beats, in time) /
    test-recording (every segment of ``holdout``). Segments that would share a beat across train and
    test-beats are dropped, so no held-out beat is ever seen in training."""
    names = tuple(p.names[0] for p in per_recording)
    train, test = [], []
    for part in per_recording:
        if part.names[0] == holdout:
            continue
        cut = part.beat.min() + (1 - test_fraction) * (part.beat.max() + horizon - part.beat.min())
        train.append(part.take(np.flatnonzero(part.beat + horizon <= cut)))
        test.append(part.take(np.flatnonzero(part.beat >= cut)))
    held = [p for p in per_recording if p.names[0] == holdout]
    return {"train": concat(train, names), "test-beats": concat(test, names), "test-recording": concat(held, names)}
