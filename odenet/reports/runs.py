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
    sweep_meta: dict[str, Any] = field(default_factory=dict)
    display: str | None = None  # the label among other runs (set by label_runs); None: run_label alone
    folder: str | None = None  # the folder's name among other runs: parent/name where names collide

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
        return self.display or run_label(self.config)

    @property
    def dataset(self) -> str:
        return self.config.get("dataset") or "—"

    @property
    def epochs_done(self) -> int | None:
        """The last epoch with a test evaluation (else the last training epoch), None before any."""
        rows = self.test_rows or self.train_rows
        return rows[-1]["epoch"] if rows else None

    @property
    def test_images(self) -> int | None:
        """Images of the final test evaluation (rows written before the count was logged: None)."""
        return self.final_test().get("images")

    @property
    def status(self) -> str:
        """"complete" / "incomplete", with why the numbers are not a full run's ("smoke: ...")."""
        return run_status(self.config, self.summary is not None, self.epochs_done)

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
    saved = json.loads(sweep_path.read_text()) if sweep_path.is_file() else {}
    try:
        rows = read_metrics(path / "metrics.jsonl")
    except MetricsError as exc:  # report callers catch one error family
        raise ReportError(str(exc)) from exc
    return Run(path, config, rows, summary, saved.get("rows", []), saved.get("meta") or {})


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


SMOKE_BATCHES = 100  # fewer training batches per epoch than this: a smoke run
SHORT_EPOCHS = 5  # fewer epochs than this is a smoke run: accuracy still climbing steeply, far from converged


def run_status(config: dict[str, Any], finished: bool, epochs_done: int | None = None) -> str:
    """A run's status cell: "complete" or "incomplete", plus "smoke (...)" or "short (...)" saying why
    its numbers are not a full run's.

    Smoke: ``limit_test_batches`` set, or ``limit_train_batches`` below :data:`SMOKE_BATCHES` (its numbers
    check that the code runs, not what the model can do); short: fewer than :data:`SHORT_EPOCHS` epochs or
    epochs cut to ``limit_train_batches`` of at least SMOKE_BATCHES batches (a budgeted run, e.g. the
    study's 235 batches of 128: trained on purpose, far from converged).
    """
    reasons = []
    if config.get("limit_train_batches"):
        reasons.append(f"{config['limit_train_batches']} train batches/epoch")
    if config.get("limit_test_batches"):
        n = config["limit_test_batches"]
        reasons.append(f"{n} test batch{'es' if n != 1 else ''}")
    epochs = config.get("epochs") if finished or epochs_done is None else epochs_done
    if epochs is not None and epochs < SHORT_EPOCHS:
        reasons.append(f"{epochs} epoch{'s' if epochs != 1 else ''}")
    state = "complete" if finished else "incomplete"
    smoke = (config.get("limit_train_batches") or SMOKE_BATCHES) < SMOKE_BATCHES or config.get("limit_test_batches")
    kind = "smoke" if smoke else "short"
    return f"{state}, {kind} ({', '.join(reasons)})" if reasons else state


def is_smoke(run: Run) -> bool:
    """A smoke or short run (see :func:`run_status`): not a result to compare with a paper."""
    return ", smoke" in run.status or ", short" in run.status


def label_runs(runs: list[Run]) -> list[Run]:
    """Give each run the label tables and legends show among ``runs``: its run label, plus the
    dataset when the runs mix datasets, plus its folder (parent/name) when labels still collide;
    and its folder name, parent/name where two runs share a name (two sweeps' ``resnet-s0``)."""
    mixed = len({r.dataset for r in runs}) > 1
    labels = [f"{run_label(r.config)} [{r.dataset}]" if mixed else run_label(r.config) for r in runs]
    for r, label in zip(runs, labels):
        r.display = f"{label} ({r.path.parent.name}/{r.name})" if labels.count(label) > 1 else label
    names = [r.name for r in runs]
    for r in runs:
        r.folder = f"{r.path.parent.name}/{r.name}" if names.count(r.name) > 1 else r.name
    return runs
