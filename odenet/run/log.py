"""The one place that writes a run's measurements: metrics.jsonl rows and TensorBoard scalars.

Every row has ``split`` ("train" or "test"), ``epoch``, ``step`` and measurement keys; the
same key is the JSON key and, prefixed with the split, the TensorBoard tag
(``train/nfe_forward``, ``test/acc``), so runs of every backbone overlay in TensorBoard.
A classifier run also keeps its view (:mod:`odenet.run.tensorboard`) up to date: HParams, the chart
layout and, after each evaluation, the epoch's means ``train_epoch/<key>``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from torch.utils.tensorboard import SummaryWriter

from odenet.run.events import EventsFile
from odenet.run.metrics import read_metrics
from odenet.run.tensorboard import (VIEW, epoch_means, experiment_summary, layout_summary, scalar_summary,
                                    session_end, session_start)

NON_SCALARS = ("split", "epoch", "step")
PER_SAMPLE_FILE = "per_sample_train.jsonl"


class RunLogger:
    """Appends rows to ``metrics.jsonl`` and TensorBoard scalars with the same names.

    Args:
        purge_step: when resuming, TensorBoard events after this step (written by the
            interrupted run after its last checkpoint) are discarded.
        classifier: keep the classifier runs' view (HParams, chart layout, epoch means); the dynamics
            experiments have their own tags.
    """

    def __init__(self, run_dir: Path, config: dict[str, Any], purge_step: int | None = None,
                 classifier: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.config = config
        # The rows kept so far (a resumed run's): the view's epoch means are rebuilt from them.
        kept = read_metrics(self.run_dir / "metrics.jsonl") if (self.run_dir / "metrics.jsonl").is_file() else []
        self._jsonl = (self.run_dir / "metrics.jsonl").open("a")
        self.tb = SummaryWriter(str(self.run_dir), purge_step=purge_step)
        self.view = RunView(self.run_dir, config, kept) if classifier else None

    def log(self, row: dict[str, Any]) -> None:
        self._jsonl.write(json.dumps(row) + "\n")
        self._jsonl.flush()
        for key, value in row.items():
            if key not in NON_SCALARS and isinstance(value, (int, float)) and math.isfinite(value):
                self.tb.add_scalar(f"{row['split']}/{key}", value, row["step"])
        if self.view is not None:
            self.view.log(row)

    def log_per_sample(self, row: dict[str, Any]) -> None:
        """One training-time per-sample evaluation (:mod:`odenet.train.per_sample_view`): a line of
        ``per_sample_train.jsonl``, the histogram ``sample/nfe_forward`` of its per-image values and its
        summary numbers (``nfe_forward_p50``, ``nfe_forward_batched``, ...) as scalars ``sample/<key>``."""
        with (self.run_dir / PER_SAMPLE_FILE).open("a") as out:
            out.write(json.dumps(row) + "\n")
        self.tb.add_histogram("sample/nfe_forward", np.asarray(row["nfe_forward"], dtype=np.float64), row["step"])
        for key, value in row.items():
            if key.startswith("nfe_forward_"):
                self.tb.add_scalar(f"sample/{key}", value, row["step"])

    def close(self, completed: bool = False) -> None:
        """Close the files; ``completed`` marks the HParams session as finished."""
        if self.view is not None:
            self.view.close(completed)
        self._jsonl.close()
        self.tb.close()


class RunView:
    """A run's view while it trains (``<run>/*.odenet``, rewritten whole when the run is resumed and by the
    report): HParams with a fixed choice of columns, the chart layout, each finished epoch's means."""

    def __init__(self, run_dir: Path, config: Mapping[str, Any], rows: list[Mapping[str, Any]]) -> None:
        self.file = EventsFile(run_dir, VIEW)
        self.file.add(experiment_summary())
        self.file.add(layout_summary())
        self.file.add(session_start(config))
        self.rows: list[Mapping[str, Any]] = []
        for row in rows:
            self.log(row)
        self.file.flush()

    def log(self, row: Mapping[str, Any]) -> None:
        """A metrics row; a test row ends its epoch: that epoch's means are written."""
        if row.get("split") not in ("train", "test"):
            return
        self.rows.append(row)
        if row["split"] == "test":
            for step, means in epoch_means(self.rows):
                for key, value in means.items():
                    self.file.add(scalar_summary(f"train_epoch/{key}", value), step)
            self.rows = []
            self.file.flush()

    def close(self, completed: bool) -> None:
        if completed:
            self.file.add(session_end())
        self.file.close()
