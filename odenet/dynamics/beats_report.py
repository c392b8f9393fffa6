"""The heartbeat experiment's report, from ``experiment.json`` and ``plot_data.npz`` alone (no torch).

Every table cell over runs is the mean ± standard deviation over the seeds that finished, with the
number of runs beside it; every figure says how many beats and seeds its numbers come from.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from odenet.dynamics.beats_plots import convergence_figure, horizon_figure, portraits_figure, segmentation_figure
from odenet.reports import Report, Section, fmt, md_table

SETS = {"train": "training beats", "test-beats": "held-out beats", "test-recording": "held-out recording"}
ODE_VARIANTS = ("latent-ode", "latent-ode-kinetic", "latent-ode-stable")


def runs_of(record: Mapping, where: str, variant: str) -> list[dict]:
    """The runs of ``variant`` trained on ``where`` windows (the mean beat, trained on nothing, for every ``where``)."""
    return [r for r in record["runs"] if r["variant"] == variant and (variant == "mean-beat" or r["windows"] == where)]


def values(runs: list[dict], path: tuple[str, ...]) -> list[float]:
    """The measurement at ``path`` (e.g. ("final", "test-beats", "mse_rest")) of each run that has it."""
    out = []
    for run in runs:
        value: Any = run
        for key in path:
            value = value.get(key) if isinstance(value, Mapping) else None
        if isinstance(value, (int, float)):
            out.append(float(value))
    return out


def stat(xs: list[float], spec: str = ".3g") -> str:
    """"m ± sd" over runs ("m" for one run, "—" for none); non-finite values (blow-ups) are shown as such."""
    if not xs:
        return "—"
    if not all(np.isfinite(xs)):
        return f"{sum(not np.isfinite(x) for x in xs)}× inf"
    return fmt(float(np.mean(xs)), spec) + (f" ± {fmt(float(np.std(xs)), spec)}" if len(xs) > 1 else "")


def data_text(record: Mapping) -> str:
    c, sizes, scored = record["config"], record["sizes"], record["scored"]
    rows = [[f"`{k['name']}`", k["label"], fmt(k["rate"], ".4g"), fmt(k["seconds"], ".0f"), k["peaks"], k["beats"],
             k["kept"], k["segments"], "held-out recording" if k["name"] == c["holdout_recording"] else
             "training + held-out beats"] for k in record["counts"]]
    table = md_table(["recording", "what", "Hz", "seconds", "peaks", "whole beats", "kept beats",
                      f"segments of {c['horizon_beats']} beats", "role"], rows)
    window = max(1, round(c["observe"] * c["beat_points"]))
    return (f"{table}\n\nSegments: {sizes['train']} training, {sizes['test-beats']} held-out beats (the last "
            f"{c['test_fraction']:g} of each training recording, in time; segments sharing a beat with training "
            f"dropped), {sizes['test-recording']} from the held-out recording; scored on at most "
            f"{c['eval_beats']} per set, evenly spaced in time ("
            f"{', '.join(f'{SETS[k]} {v}' for k, v in scored.items())})."
            f" Each beat is {c['beat_points']} points of phase; a window observes {c['observations']} random points "
            f"of the first {window} (the first {c['observe']:g} of a beat) and the model predicts all "
            f"{c['horizon_beats']} beats. Units: each channel standardised over the training beats, so an MSE of "
            f"1 is the data's own spread.")


def lead(arrays: Mapping[str, np.ndarray], record: Mapping, run: str) -> float | None:
    """How far (in beats) after the window a run's held-out MSE stays at or below the mean beat's: the
    horizon over which its extrapolation is worth more than the average beat. None without both curves."""
    mine, mean = arrays.get(f"{run}/test-beats/mse_curve"), arrays.get("mean-beat/test-beats/mse_curve")
    if mine is None or mean is None:
        return None
    c = record["config"]
    window = max(1, round(c["observe"] * c["beat_points"]))
    worse = np.flatnonzero(mine[window:] > mean[window:])
    return float((worse[0] if len(worse) else len(mine) - window) / c["beat_points"])


def results_table(record: Mapping, where: str, arrays: Mapping[str, np.ndarray]) -> str:
    later = range(2, record["config"]["horizon_beats"] + 1)
    header = ["model", "runs", "loss (last)", "window MSE: training", "held-out beats", "held-out recording",
              "interp. MSE", "skill: training", "skill: held-out beats", "diversity", "rest of beat 1",
              *[f"beat {k}" for k in later], "off the data", "max \\|x̂\\|",
              "ahead of the mean beat (beats)",
              "nfe_forward", "time_step_ms"]
    rows = []
    for variant in record["config"]["variants"]:
        runs = runs_of(record, where, variant)
        ok = [r for r in runs if r["status"] == "done"]
        held = ("final", "test-beats")
        rows.append([f"`{variant}`", f"{len(ok)}/{len(runs)}", stat(values(ok, ("train_last", "loss")), ".4g"),
                     *[stat(values(ok, ("final", s, "mse_window"))) for s in SETS],
                     stat(values(ok, (*held, "mse_interp"))), stat(values(ok, ("final", "train", "skill")), ".2f"),
                     stat(values(ok, (*held, "skill")), ".2f"), stat(values(ok, (*held, "diversity")), ".2f"),
                     stat(values(ok, (*held, "mse_rest"))),
                     *[stat(values(ok, (*held, f"mse_beat{k}"))) for k in later],
                     stat([100 * v for v in values(runs, (*held, "diverged"))], ".0f") + " %",
                     stat(values(ok, (*held, "max_abs"))),
                     stat([x for x in (lead(arrays, record, r["run"]) for r in ok) if x is not None], ".2f")
                     if variant != "mean-beat" else "—",
                     stat(values(ok, ("train_last", "nfe_forward")), ".1f"),
                     stat(values(ok, ("train_last", "time_step_ms")), ".1f")])
    return md_table(header, rows)


RESULT_NOTES = (
    "MSE in standardised units on the scored beats. `window MSE`: all points of the observed window "
    "(reconstruction); `interp. MSE`: the window's points that were not observed; `skill`: 1 − window MSE / "
    "the MSE of each recording's own mean window (≤ 0: no beat's own shape is reconstructed, at best its "
    "recording's average form); "
    "`rest of beat 1`, `beat 2`, ...: extrapolation. `diversity`: the variance across held-out beats of the "
    "reconstructed windows over that of the true windows (0 = the same shape for every beat, as the mean "
    "beat). `off the data`: held-out beats whose prediction passes twice the largest |x| of any of them (or "
    "whose solve failed). `ahead of the mean beat`: for how long after the window the prediction's MSE stays "
    "at or below the mean beat's (the horizon worth extrapolating). `loss (last)`: the mean training loss of "
    "the last evaluation interval; `nfe_forward`, `time_step_ms`: per training step.")


def growth_table(record: Mapping) -> str:
    header = ["training windows", "model", "R", "leaves R at (beats)", "radial speed at R", "at 2R", "at 4R",
              "pushing out at 4R", "stable bound B/λ (in R)"]
    rows = []
    for where in record["config"]["train_windows"]:
        for variant in (*ODE_VARIANTS, "latent-gru"):
            runs = [r for r in runs_of(record, where, variant) if "radius" in r]
            if not runs:
                continue
            escapes = [r["escape_beats"].get("test-beats") for r in runs]
            left = [e for e in escapes if e is not None]
            rows.append([where, f"`{variant}`", stat(values(runs, ("radius",))),
                         (stat(left, ".2f") + f" ({len(left)}/{len(runs)} runs)") if left else f"never (0/{len(runs)})",
                         *[stat(values(runs, ("growth", f"radial_speed_{c}R"))) for c in ("1", "2", "4")],
                         stat([100 * v for v in values(runs, ("growth", "outward_4R"))], ".0f") + " %",
                         stat(values(runs, ("stable_radius",)))])
    return md_table(header, rows) + (
        "\n\nR: the 99th percentile of ‖z‖ over the training windows (the region the data put z in). "
        "`leaves R at`: when the held-out beats' median ‖z(t)‖ first passes R (for the GRU, z is its hidden "
        "state). `radial speed`: the mean of ⟨f(z), z/‖z‖⟩ over 256 "
        "random directions at ‖z‖ = R, 2R, 4R (> 0: the field pushes outwards, and a speed growing with the "
        "radius means exponential growth once outside); `pushing out`: the share of those directions.")


def findings(record: Mapping) -> str:
    """One line per kind of training windows, in numbers: the seed's set-up against the mean beat."""
    lines = []
    for where in record["config"]["train_windows"]:
        mean = runs_of(record, where, "mean-beat")
        for variant in record["config"]["variants"]:
            runs = [r for r in runs_of(record, where, variant) if r["status"] == "done"]
            if variant == "mean-beat" or not runs:
                continue
            held = ("final", "test-beats")
            failed = len(runs_of(record, where, variant)) - len(runs)
            lines.append(
                f"- `{variant}`, {where} windows ({len(runs)} seeds{f', {failed} failed' if failed else ''}): held-out "
                f"window MSE {stat(values(runs, (*held, 'mse_window')))} (mean beat "
                f"{stat(values(mean, (*held, 'mse_window')))}), skill {stat(values(runs, (*held, 'skill')), '.2f')}, "
                f"diversity "
                f"{stat(values(runs, (*held, 'diversity')), '.2f')}; "
                f"rest of the beat {stat(values(runs, (*held, 'mse_rest')))} (mean beat "
                f"{stat(values(mean, (*held, 'mse_rest')))}), last beat "
                f"{stat(values(runs, (*held, 'mse_beat' + str(record['config']['horizon_beats']))))}; "
                f"max |x̂| {stat(values(runs, (*held, 'max_abs')))}.")
    return "\n".join(lines)


def heartbeats_report(record: Mapping, arrays: Mapping[str, np.ndarray]) -> Report:
    c = record["config"]
    seeds, beats = len(c["seeds"]), record["scored"].get("test-beats", 0)
    window = max(1, round(c["observe"] * c["beat_points"]))
    figures = {"beats_segmentation": segmentation_figure(_views(arrays), {k["name"]: k["label"]
                                                                        for k in record["counts"]})}
    rows = [(name, k) for name, picks in (("test-beats", (0, 2)), ("test-recording", (1,)))
            if f"data/{name}/true" in arrays for k in picks if k < len(arrays[f"data/{name}/true"])]
    for where in c["train_windows"]:
        runs = [run_id for variant in c["variants"] for run_id in _first_seed(record, where, variant)]
        figures[f"portraits_{where}"] = portraits_figure(
            arrays, runs, [r.removeprefix(f"{where}-") for r in runs], rows, window,
            f"training windows {where}: held-out windows, observed first {c['observe']:g} of a beat; seed "
            f"{c['seeds'][0]} of {seeds}")
    curves = {w: {v: _arrays(arrays, record, w, v, "test-beats/mse_curve") for v in c["variants"]}
              for w in c["train_windows"]}
    latent = {w: {v: _arrays(arrays, record, w, v, "test-beats/z_norm") for v in c["variants"]}
              for w in c["train_windows"]}
    figures["error_vs_horizon"] = horizon_figure(curves, latent, arrays["t"], window / c["beat_points"],
                                                 f"{beats} held-out beats, {seeds} seeds; grey: the observed window")
    figures["convergence"] = convergence_figure({w: {v: _arrays(arrays, record, w, v, "loss") for v in c["variants"]
                                                     if v != "mean-beat"} for w in c["train_windows"]},
                                                f"training loss, {seeds} seeds")
    sections = [Section("Data", data_text(record), ["beats_segmentation"]),
                *[Section(f"Results, training windows: {w}", f"{results_table(record, w, arrays)}\n\n{RESULT_NOTES}",
                          [f"portraits_{w}"]) for w in c["train_windows"]],
                Section("Error against horizon", f"MSE per time point over {beats} held-out beats (line: mean over "
                        f"{seeds} seeds; band: their range).", ["error_vs_horizon"]),
                Section("Outside the data: the latent field", growth_table(record)),
                Section("Convergence", f"Training loss of every run ({seeds} seeds per model); the final values "
                        f"are the tables' `loss (last)` column.", ["convergence"]),
                Section("What these runs measured", findings(record))]
    return Report(f"Latent ODE on heartbeat phase portraits ({record['wall_time_s']:.0f} s)", sections, figures)


def _views(arrays: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    views: dict[str, dict[str, np.ndarray]] = {}
    for key, value in arrays.items():
        if key.startswith("recording/"):
            _, name, part = key.split("/")
            views.setdefault(name, {})[part] = value
    return views


def _first_seed(record: Mapping, where: str, variant: str) -> list[str]:
    runs = [r["run"] for r in runs_of(record, where, variant)]
    return runs[:1]


def _arrays(arrays: Mapping[str, np.ndarray], record: Mapping, where: str, variant: str, key: str) -> list[np.ndarray]:
    return [arrays[f"{r['run']}/{key}"] for r in runs_of(record, where, variant) if f"{r['run']}/{key}" in arrays]


def load_report(folder: str | Path) -> Report:
    """The report of a finished experiment, rebuilt from its ``experiment.json`` and ``plot_data.npz``."""
    folder = Path(folder)
    with np.load(folder / "plot_data.npz") as arrays:
        return heartbeats_report(json.loads((folder / "experiment.json").read_text()), dict(arrays))
