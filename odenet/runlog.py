"""Run directories and the one place that writes measurements: metrics.jsonl and TensorBoard.

Every row has ``split`` ("train" or "test"), ``epoch``, ``step`` and measurement keys; the
same key is the JSON key and, prefixed with the split, the TensorBoard tag
(``train/nfe_forward``, ``test/acc``), so runs of every backbone overlay in TensorBoard.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml

from odenet.checkpoint import atomic_write_text
from odenet.reports import read_jsonl as read_metrics  # one reader of metrics.jsonl (reports stay torch-free)

NON_SCALARS = ("split", "epoch", "step")


def truncate_metrics(path: Path, step: int, epoch: int, batches_done: int = 0) -> None:
    """Keep only rows logged up to a checkpoint: training steps ≤ ``step``, evaluations of epochs
    ≤ ``epoch``, and skipped batches up to the checkpoint (of completed epochs, or among the
    first ``batches_done`` batches of the epoch under way).

    Resuming from that checkpoint then appends the rest without duplicated, lost or torn rows.
    """
    def kept(r: dict) -> bool:
        if r["split"] == "train":
            return r["step"] <= step
        if r["split"] == "skipped":
            return r["epoch"] <= epoch or (r["epoch"] == epoch + 1 and r["batch"] < batches_done)
        return r["epoch"] <= epoch

    keep = [r for r in read_metrics(path) if kept(r)]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))


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
        from torch.utils.tensorboard import SummaryWriter

        from odenet.tb import write_run_header

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

    def close(self, completed: bool = False) -> None:
        """Close the files; ``completed`` marks the HParams session as finished."""
        if completed and self.classifier:
            from odenet.tb import write_run_footer

            write_run_footer(self.tb, self.config)
        self._jsonl.close()
        self.tb.close()


def write_config(run_dir: Path, config: dict[str, Any]) -> None:
    atomic_write_text(Path(run_dir) / "config.yaml", yaml.safe_dump(config, sort_keys=False))


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
