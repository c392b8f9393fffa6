"""Training-run directories as saved: config.yaml, metrics.jsonl, summary.json and sweep.json."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from odenet.errors import UserError
from odenet.naming import run_label
from odenet.run.metrics import MetricsError, read_metrics


class ReportError(UserError):
    """Input that cannot be reported on; the message says which and why."""


@dataclass
class Run:
    """One training run directory, as saved."""

    path: Path
    config: dict[str, Any]
    rows: list[dict[str, Any]]
    summary: dict[str, Any] | None
    sweep: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def is_ode(self) -> bool:
        return self.config.get("solver") is not None

    @property
    def adjoint(self) -> bool:
        return bool(self.config.get("adjoint"))

    @property
    def label(self) -> str:
        return run_label(self.config)

    @property
    def train_rows(self) -> list[dict]:
        return [r for r in self.rows if r["split"] == "train"]

    @property
    def test_rows(self) -> list[dict]:
        return [r for r in self.rows if r["split"] == "test"]

    def final_test(self) -> dict[str, Any]:
        """The last evaluation on the test split, or {} when there was none."""
        return self.test_rows[-1] if self.test_rows else {}

    def last_epoch_means(self) -> dict[str, float]:
        """Each numeric key's mean over the last epoch's training steps."""
        rows = self.train_rows
        if not rows:
            return {}
        last = [r for r in rows if r["epoch"] == rows[-1]["epoch"]]
        keys = {k for r in last for k, v in r.items() if isinstance(v, (int, float)) and k not in ("epoch", "step")}
        return {k: statistics.fmean(r[k] for r in last if k in r) for k in keys}


def load_run(path: str | Path) -> Run:
    """The run saved in ``path``.

    Raises:
        ReportError: ``path`` has no config.yaml, or its metrics.jsonl is damaged.
    """
    path = Path(path)
    if not (path / "config.yaml").is_file():
        raise ReportError(f"{path} is not a run directory (no config.yaml)")
    config = yaml.safe_load((path / "config.yaml").read_text())
    summary_path = path / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    sweep_path = path / "sweep.json"
    sweep = json.loads(sweep_path.read_text())["rows"] if sweep_path.is_file() else []
    try:
        rows = read_metrics(path / "metrics.jsonl")
    except MetricsError as exc:  # report callers catch one error family
        raise ReportError(str(exc)) from exc
    return Run(path, config, rows, summary, sweep)


def find_runs(paths: list[str | Path]) -> list[Run]:
    """Run directories among ``paths`` or directly inside them, in sorted order.

    Raises:
        ReportError: a path does not exist, or none holds a run directory.
    """
    found: list[Path] = []
    for p in map(Path, paths):
        if (p / "config.yaml").is_file():
            found.append(p)
        elif p.is_dir():
            found.extend(sorted(d for d in p.iterdir() if (d / "config.yaml").is_file()))
        else:
            raise ReportError(f"{p} does not exist")
    if not found:
        raise ReportError(f"no run directories (folders with config.yaml) in {', '.join(map(str, paths))}")
    return [load_run(p) for p in found]


def common_parent(paths: list[Path]) -> Path:
    """The deepest folder holding every one of ``paths`` (where a report of them goes by default)."""
    parents = [p.resolve().parent for p in paths]
    common = parents[0]
    while any(common not in [p, *p.parents] for p in parents):
        common = common.parent
    return common
