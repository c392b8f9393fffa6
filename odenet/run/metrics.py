"""metrics.jsonl: one JSON row per training step, evaluation or skipped batch (torch-free).

Every row has ``split`` ("train", "test" or "skipped"), ``epoch``, ``step`` and measurement
keys; the same key is the TensorBoard tag under the split (``train/nfe_forward``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from odenet.errors import UserError
from odenet.run.files import atomic_write_text


class MetricsError(UserError):
    """A metrics.jsonl that cannot be read; the message names the file and the damage."""


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a metrics.jsonl; a torn last line (a crash mid-write) is dropped, other damage refused."""
    path = Path(path)
    rows = []
    try:
        lines = path.read_text().splitlines() if path.exists() else []
    except (OSError, UnicodeDecodeError) as exc:
        raise MetricsError(f"{path} cannot be read ({getattr(exc, 'strerror', None) or exc}); the file is damaged "
                           f"or unreadable") from None
    for number, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if number != len(lines) - 1:  # a torn last line is a crash mid-write; anything else is damage
                raise MetricsError(f"{path} line {number + 1} is not JSON; the file is damaged") from None
    return rows


def kept_rows(path: Path, step: int, epoch: int, batches_done: int = 0) -> list[dict[str, Any]]:
    """The rows of ``path`` logged up to a checkpoint: training steps ≤ ``step``, evaluations of epochs
    ≤ ``epoch``, and skipped batches up to the checkpoint (of completed epochs, or among the
    first ``batches_done`` batches of the epoch under way).

    Reads only, so a resume checks the file before it writes anything.

    Raises:
        MetricsError: a line that is not JSON (but for a torn last one), or a row that is not a
            training-run row (no ``split``, ``epoch`` and ``step``).
    """
    def kept(number: int, r: Any) -> bool:
        if not (isinstance(r, dict) and isinstance(r.get("split"), str) and isinstance(r.get("epoch"), int)
                and isinstance(r.get("step"), int) and (r["split"] != "skipped" or isinstance(r.get("batch"), int))):
            raise MetricsError(f"{path} row {number + 1} is not a training-run row (split, epoch, step); the file "
                               f"is damaged")
        if r["split"] == "train":
            return r["step"] <= step
        if r["split"] == "skipped":
            return r["epoch"] <= epoch or (r["epoch"] == epoch + 1 and r["batch"] < batches_done)
        return r["epoch"] <= epoch

    return [r for number, r in enumerate(read_metrics(path)) if kept(number, r)]


def truncate_metrics(path: Path, step: int, epoch: int, batches_done: int = 0) -> None:
    """Keep only the rows logged up to a checkpoint (:func:`kept_rows`).

    Resuming from that checkpoint then appends the rest without duplicated, lost or torn rows.
    """
    keep = kept_rows(path, step, epoch, batches_done)
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))


def truncate_epoch_rows(path: Path, epoch: int) -> None:
    """Keep only the rows of an epoch-stamped JSON-lines file (e.g. ``per_sample_train.jsonl``) up to
    ``epoch`` — what a run resumed from that epoch's checkpoint has already written."""
    path = Path(path)
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a torn last line of an interrupted write
            continue
        if isinstance(row, dict) and isinstance(row.get("epoch"), int) and row["epoch"] <= epoch:
            keep.append(line + "\n")
    atomic_write_text(path, "".join(keep))
