"""Runs grouped into methods over seeds, and the intervals every study table reports. Torch-free.

A *method* is a set of runs whose configs differ only in their seed (and where they were written);
its numbers are the mean over its seeds with a 95% Student-t interval, mean ± t₀.₉₇₅,ₙ₋₁ · s / √n,
so a difference between two methods is called only where their intervals do not overlap.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from odenet.naming import method_name
from odenet.reports.runs import Run

# Two-sided 95% quantiles of Student's t, by degrees of freedom (n - 1 for n seeds).
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}
# Keys that say where or how a run was launched, not what was trained (the thread count changes the last digits
# of float sums, not the method; the per-image view leaves training bit for bit unchanged).
LAUNCH_KEYS = ("seed", "run_name", "out_dir", "resume", "force", "progress", "device", "workers", "data_dir",
               "download", "config", "checkpoint_every", "threads", "per_sample_every")


def t975(dof: int) -> float:
    """t₀.₉₇₅ with ``dof`` degrees of freedom (the next smaller tabulated value's, conservatively)."""
    return T975[max(k for k in T975 if k <= dof)] if dof < 30 else 1.96 + 2.4 / dof


@dataclass(frozen=True)
class Estimate:
    """A mean over seeds and its 95% interval's half-width (None with a single seed)."""

    mean: float
    half: float | None
    n: int

    @property
    def low(self) -> float:
        return self.mean - (self.half or 0.0)

    @property
    def high(self) -> float:
        return self.mean + (self.half or 0.0)

    def text(self, spec: str = ".4g") -> str:
        """"0.912 ± 0.004", or "0.912" for one seed."""
        return format(self.mean, spec) if self.half is None else f"{self.mean:{spec}} ± {self.half:{spec}}"

    def separates(self, other: Estimate) -> bool:
        """Whether the two 95% intervals do not overlap (both need ≥ 2 seeds)."""
        if self.half is None or other.half is None:
            return False
        return self.high < other.low or other.high < self.low


def estimate(values: Iterable[float | None]) -> Estimate | None:
    """Mean and 95% t-interval of the values present; None when there are none."""
    xs = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not xs:
        return None
    if len(xs) == 1:
        return Estimate(xs[0], None, 1)
    return Estimate(statistics.fmean(xs), t975(len(xs) - 1) * statistics.stdev(xs) / math.sqrt(len(xs)), len(xs))


@dataclass
class Method:
    """Runs that differ only in their seed."""

    name: str
    runs: list[Run] = field(default_factory=list)

    @property
    def config(self) -> dict[str, Any]:
        return self.runs[0].config

    @property
    def seeds(self) -> list[int]:
        return sorted(r.config.get("seed", 0) for r in self.runs)

    @property
    def is_ode(self) -> bool:
        return self.runs[0].is_ode

    def run_of_seed(self, seed: int) -> Run | None:
        return next((r for r in self.runs if r.config.get("seed", 0) == seed), None)

    def over_seeds(self, value: Callable[[Run], float | None]) -> Estimate | None:
        return estimate(value(r) for r in self.runs)


def method_key(config: dict[str, Any]) -> tuple:
    """What a method is: everything in its config but the seed and where it was launched."""
    return tuple(sorted((k, repr(v)) for k, v in config.items() if k not in LAUNCH_KEYS))


def group_methods(runs: list[Run]) -> list[Method]:
    """The methods among ``runs``, in the order their first run appears; names made unique when two
    methods would read the same (they then carry their run label)."""
    groups: dict[tuple, Method] = {}
    for run in runs:
        key = method_key(run.config)
        groups.setdefault(key, Method(method_name(run.config))).runs.append(run)
    methods = sorted(groups.values(), key=_reading_order)
    names = [m.name for m in methods]
    for m in methods:
        if names.count(m.name) > 1:
            m.name = f"{m.name} [{m.runs[0].label}]"
    return methods


BACKBONE_ORDER = ("mlp", "stem-only", "resnet", "resnet18", "rknet", "odenet", "odenet18", "odenet-mlp")
LEVER_KEYS = ("kinetic_reg", "jacobian_reg", "error_reg", "steer", "augment_dim")


def _reading_order(m: Method) -> tuple:
    """References first (no ODE block), then RK-Net, the plain ODE-Net, its adjoint twin, and the levers."""
    c = m.config
    backbone = BACKBONE_ORDER.index(c["backbone"]) if c["backbone"] in BACKBONE_ORDER else len(BACKBONE_ORDER)
    levers = sum(bool(c.get(k)) for k in LEVER_KEYS) + (c.get("first_step") == "reuse")
    return m.is_ode, backbone, levers, bool(c.get("adjoint")), m.name


def has_seeds(methods: list[Method]) -> bool:
    """Whether any method was trained with more than one seed (a study, not a single grid of runs)."""
    return any(len(set(m.seeds)) > 1 for m in methods)
