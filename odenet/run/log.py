"""The one place that writes a run's measurements: metrics.jsonl rows and TensorBoard scalars.

Every row has ``split`` ("train" or "test"), ``epoch``, ``step`` and measurement keys; the
same key is the JSON key and, prefixed with the split, the TensorBoard tag
(``train/nfe_forward``, ``test/acc``), so runs of every backbone overlay in TensorBoard.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from torch.utils.tensorboard import SummaryWriter

from odenet.run.tensorboard import write_run_footer, write_run_header

NON_SCALARS = ("split", "epoch", "step")
PER_SAMPLE_FILE = "per_sample_train.jsonl"


class RunLogger:
    """Appends rows to ``metrics.jsonl`` and TensorBoard scalars with the same names.

    Args:
        purge_step: when resuming, TensorBoard events after this step (written by the
            interrupted run after its last checkpoint) are discarded.
        classifier: write the classifier runs' HParams record and custom-scalars layout
            (image classifiers; the dynamics experiments have their own tags).
    """

    def __init__(self, run_dir: Path, config: dict[str, Any], purge_step: int | None = None,
                 classifier: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.config = config
        self.classifier = classifier
        self._jsonl = (self.run_dir / "metrics.jsonl").open("a")
        self.tb = SummaryWriter(str(self.run_dir), purge_step=purge_step)
        if classifier:
            write_run_header(self.tb, config)

    def log(self, row: dict[str, Any]) -> None:
        self._jsonl.write(json.dumps(row) + "\n")
        self._jsonl.flush()
        for key, value in row.items():
            if key not in NON_SCALARS and isinstance(value, (int, float)) and math.isfinite(value):
                self.tb.add_scalar(f"{row['split']}/{key}", value, row["step"])

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
        if completed and self.classifier:
            write_run_footer(self.tb, self.config)
        self._jsonl.close()
        self.tb.close()
