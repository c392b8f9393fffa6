"""Matched quality: a method against the plain ODE-Net of the same seed, read off their test-time sweeps — the
NFE each needs to reach the plain model's accuracy at its training tolerance (accuracy against NFE along the
dopri5 sweep, interpolated linearly) and the NFE each needs to reach the plain model's solve error there (the
ODE block's output error against a float64 reference, interpolated in log error); their ratio over seeds with
a 95% interval, and the verdict that interval allows. Torch-free."""

from __future__ import annotations

import math
from dataclasses import dataclass

from odenet.reports.render import md_table
from odenet.reports.runs import Run
from odenet.reports.seeds import Estimate, Method, estimate

ACC_SLACK = 0.001  # "equal accuracy": within 0.1 point (10 of 10,000 images) of the reference's


def sweep_curve(run: Run, solver: str, key: str) -> list[tuple[float, float]]:
    """(nfe_forward, ``key``) of ``run``'s sweep rows of ``solver``, by increasing NFE."""
    rows = [r for r in run.sweep
            if r.get("solver") == solver and r.get("nfe_forward") is not None and r.get(key) is not None]
    # along increasing NFE; at equal NFE the looser tolerance first (the order the solver meets them)
    return [(r["nfe_forward"], r[key]) for r in sorted(rows, key=lambda r: (r["nfe_forward"], -(r.get("tol") or 0)))]


def nfe_to_reach(points: list[tuple[float, float]], target: float, *, lower_is_better: bool = False,
                 log: bool = False) -> float | None:
    """The least NFE at which the curve reaches ``target``: the first crossing along increasing NFE,
    interpolated linearly (in log y with ``log``); None when it never does."""
    reached = (lambda y: y <= target) if lower_is_better else (lambda y: y >= target)
    scale = (lambda y: math.log(max(y, 1e-300))) if log else (lambda y: y)
    for k, (n, y) in enumerate(points):
        if not reached(y):
            continue
        if k == 0:
            return n
        n0, y0 = points[k - 1]
        a, b, c = scale(y0), scale(y), scale(target)
        return n if b == a else n0 + (c - a) / (b - a) * (n - n0)
    return None


def operating_point(run: Run) -> dict | None:
    """The sweep row at the run's own training solver and tolerance (the final evaluation's setting)."""
    solver, tol = run.config.get("solver"), run.config.get("rtol")
    return next((r for r in run.sweep if r.get("solver") == solver and r.get("tol") == tol), None)


@dataclass
class Matched:
    """One method against the reference, seed by seed: NFE ratios at equal accuracy and at equal solve error."""

    method: Method
    at_accuracy: Estimate | None
    at_error: Estimate | None
    fixed_step: Estimate | None  # the cheapest fixed-step setting reaching the accuracy target, in NFE
    reference_fixed_step: Estimate | None
    seeds: int
    missing: list[str]
    short_of_accuracy: int = 0  # seeds whose dopri5 curve never reaches the reference's accuracy
    at_loosest: int = 0  # seeds on which both curves are at the accuracy target already at the loosest tolerance
    short_of_error: int = 0  # seeds whose curve never gets down to the reference's solve error


def matched(method: Method, reference: Method) -> Matched:
    """``method`` against ``reference`` on the runs of the seeds both have."""
    acc_ratios, err_ratios, fixed, ref_fixed, missing = [], [], [], [], []
    short = {"acc": 0, "err": 0, "loosest": 0}
    for seed in method.seeds:
        run, ref = method.run_of_seed(seed), reference.run_of_seed(seed)
        point = operating_point(ref) if ref else None
        if run is None or ref is None or point is None or not run.sweep:
            missing.append(f"seed {seed}")
            continue
        solver = ref.config["solver"]
        target = point["acc"] - ACC_SLACK
        ours = nfe_to_reach(sweep_curve(run, solver, "acc"), target)
        theirs = nfe_to_reach(sweep_curve(ref, solver, "acc"), target)
        if ours is not None and theirs:
            acc_ratios.append(ours / theirs)
        short["acc"] += ours is None and bool(theirs)
        curves = [sweep_curve(r, solver, "acc") for r in (run, ref)]
        short["loosest"] += all(curves) and (ours, theirs) == (curves[0][0][0], curves[1][0][0])  # at their fewest NFE
        if point.get("ode_error"):
            ours, theirs = (nfe_to_reach(sweep_curve(r, solver, "ode_error"), point["ode_error"],
                                         lower_is_better=True, log=True) for r in (run, ref))
            if ours is not None and theirs:
                err_ratios.append(ours / theirs)
            short["err"] += ours is None and bool(theirs)
        fixed.append(cheapest_fixed_step(run, target))
        ref_fixed.append(cheapest_fixed_step(ref, target))
    return Matched(method, estimate(acc_ratios), estimate(err_ratios), estimate(fixed), estimate(ref_fixed),
                   len(method.seeds) - len(missing), missing, short_of_accuracy=short["acc"],
                   short_of_error=short["err"], at_loosest=short["loosest"])


def cheapest_fixed_step(run: Run, target: float) -> float | None:
    """The fewest NFE of a fixed-step sweep row (rk4, euler, ...) whose accuracy reaches ``target``."""
    fixed = [r["nfe_forward"] for r in run.sweep if r.get("steps") and r.get("acc", 0) >= target]
    return min(fixed) if fixed else None


def own_cheapest(method: Method) -> tuple[Estimate | None, Estimate | None, Estimate | None]:
    """Over ``method``'s seeds, each run against its own accuracy at the training tolerance (less ACC_SLACK): the
    NFE at the training tolerance, the fewest NFE of its adaptive solver's sweep reaching that accuracy, and the
    fewest of a fixed-step row."""
    at_training, adaptive, fixed = [], [], []
    for run in method.runs:
        point = operating_point(run)
        if point is None:
            continue
        target = point["acc"] - ACC_SLACK
        at_training.append(point["nfe_forward"])
        adaptive.append(nfe_to_reach(sweep_curve(run, run.config["solver"], "acc"), target))
        fixed.append(cheapest_fixed_step(run, target))
    return estimate(at_training), estimate(adaptive), estimate(fixed)


def own_cheapest_table(method: Method) -> str:
    at_training, adaptive, fixed = own_cheapest(method)
    cell = lambda e: e.text(".1f") if e else "not reached"  # noqa: E731
    return md_table(["method", "seeds", "NFE at the training tolerance", "fewest dopri5 NFE at that accuracy",
                     "fewest fixed-step NFE at that accuracy"],
                    [[method.name, str(len(method.runs)), cell(at_training), cell(adaptive), cell(fixed)]])


def reference_method(methods: list[Method]) -> Method | None:
    """The plain ODE-Net the levers are compared with: adaptive, direct, no lever (the first such)."""
    for m in methods:
        c = m.config
        if m.is_ode and c.get("rtol") and not c.get("adjoint") and c.get("first_step") in (None, "auto") \
                and not any(c.get(k) for k in ("kinetic_reg", "jacobian_reg", "error_reg", "steer", "augment_dim")):
            return m
    return None


def accuracy_verdict(c: Matched) -> str:
    """:func:`verdict` of the NFE ratio at equal accuracy, unless the sweep never crossed the target: when both
    models are at it already at their fewest NFE (the loosest tolerances swept), the ratio compares those first
    points, not where the curves reach the target."""
    if c.at_loosest and c.at_loosest == c.seeds and not c.short_of_accuracy:
        return "not claimed: both at the target already at the loosest tolerance swept"
    return verdict(c.at_accuracy, c.short_of_accuracy)


def _ratio_cell(ratio: Estimate | None, short: int, seeds: int) -> str:
    text = ratio.text(".2f") if ratio else "—"
    return text if not short else f"{text} (never reached on {short} of {seeds} seeds)" if ratio else \
        f"never reached on {short} of {seeds} seeds"


def verdict(ratio: Estimate | None, short: int = 0) -> str:
    """What a ratio's interval allows to say; ``short``: seeds on which the level was never reached."""
    if ratio is None:
        return "never reaches the reference's level" if short else "not measured"
    if short:
        return "not claimed: some seeds never reach the reference's level"
    if ratio.half is None:
        return "one seed: not claimed"
    if ratio.high < 1:
        return "cheaper"
    if ratio.low > 1:
        return "dearer"
    return "no difference resolved"


def matched_table(comparisons: list[Matched], reference: Method) -> str:
    header = ["method", "seeds", "NFE ratio at equal accuracy", "verdict", "NFE ratio at equal solve error",
              "verdict", "fewest fixed-step NFE at that accuracy"]
    rows = [[reference.name + " (reference)", str(len(reference.runs)), "1", "—", "1", "—",
             comparisons[0].reference_fixed_step.text(".1f") if comparisons and comparisons[0].reference_fixed_step
             else "—"]]
    for c in comparisons:
        rows.append([c.method.name, str(c.seeds), _ratio_cell(c.at_accuracy, c.short_of_accuracy, c.seeds),
                     accuracy_verdict(c),
                     _ratio_cell(c.at_error, c.short_of_error, c.seeds), verdict(c.at_error, c.short_of_error),
                     c.fixed_step.text(".1f") if c.fixed_step else "not reached"])
    return md_table(header, rows)


def compare_all(methods: list[Method]) -> tuple[Method | None, list[Matched]]:
    reference = reference_method(methods)
    if reference is None:
        return None, []
    others = [m for m in methods if m.is_ode and m is not reference]
    return reference, [matched(m, reference) for m in others]
