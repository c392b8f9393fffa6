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

SPLITS = ("train", "test", "skipped")
TEXT_KEYS = ("reason",)  # the only text a row holds besides its split: why a batch was skipped


class MetricsError(UserError):
    """A metrics.jsonl that cannot be read; the message names the file and the damage."""


def read_lines(path: Path, fix: str) -> list[str]:
    """The lines of a JSON-lines file ([] when it does not exist); an unreadable one is a MetricsError."""
    try:
        return path.read_text().splitlines() if path.exists() else []
    except (OSError, UnicodeDecodeError) as exc:
        raise MetricsError(f"{path} cannot be read ({getattr(exc, 'strerror', None) or exc}); the file is damaged "
                           f"or unreadable: {fix}") from None


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a metrics.jsonl; a torn last line (a crash mid-write) is dropped, other damage refused."""
    path = Path(path)
    return [row for _, row in _json_lines(path, read_lines(path, "restore it or start the run again"))]


def _json_lines(path: Path, lines: list[str]) -> list[tuple[int, Any]]:
    """(line number, value) of each line; a torn last line is left out, any other line that is not JSON refused."""
    found = []
    for number, line in enumerate(lines, start=1):
        try:
            found.append((number, json.loads(line)))
        except (json.JSONDecodeError, RecursionError):
            if number != len(lines):  # a torn last line is a crash mid-write; anything else is damage
                raise MetricsError(f"{path} line {number} is not JSON; the file is damaged: repair or delete that "
                                   f"line") from None
    return found


def shown(value: Any, limit: int = 40) -> str:
    """A value as a message quotes it: its repr, cut short (a damaged file may hold a megabyte in one value)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def row_problem(row: Any) -> str | None:
    """What makes ``row`` no training-run row of metrics.jsonl, or None when it is one: a ``split`` of
    :data:`SPLITS`, whole ``epoch`` and ``step`` (and ``batch`` for a skipped batch), and a number for every
    measurement (NaN included: a value the trainer could not measure)."""
    if not isinstance(row, dict):
        return f"is a JSON {type(row).__name__}, not an object"
    if row.get("split") not in SPLITS:
        return f"has split {shown(row.get('split'))}, not one of {', '.join(SPLITS)}"
    for key in ("epoch", "step", "batch") if row["split"] == "skipped" else ("epoch", "step"):
        if key not in row:
            return f"has no {key}"
        if not _whole(row[key]):
            return f"has {key} {shown(row[key])}, not a whole number"
    for key, value in row.items():
        if key in ("split", "epoch", "step") or (key in TEXT_KEYS and isinstance(value, str)):
            continue
        if not _number(value):
            return f"has {key} {shown(value)}, not a number"
    return None


def check_rows(path: Path, numbered: list[tuple[int, Any]]) -> list[dict[str, Any]]:
    """The rows, each checked by :func:`row_problem`; the first damaged one is a MetricsError naming its line."""
    for number, row in numbered:
        problem = row_problem(row)
        if problem:
            raise MetricsError(f"{path} line {number} {problem}; the file is damaged: repair or delete that line")
    return [row for _, row in numbered]


def read_training_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a training run's metrics.jsonl, each checked (:func:`row_problem`); a torn last line is dropped."""
    path = Path(path)
    return check_rows(path, _json_lines(path, read_lines(path, "restore it or start the run again")))


def kept_rows(path: Path, step: int, epoch: int, batches_done: int = 0) -> list[dict[str, Any]]:
    """The rows of ``path`` logged up to a checkpoint: training steps ≤ ``step``, evaluations of epochs
    ≤ ``epoch``, and skipped batches up to the checkpoint (of completed epochs, or among the
    first ``batches_done`` batches of the epoch under way).

    Reads only, so a resume checks the file before it writes anything.

    Raises:
        MetricsError: a line that is not JSON (but for a torn last one), or a row that is not a
            training-run row (:func:`row_problem`).
    """
    def kept(r: dict[str, Any]) -> bool:
        if r["split"] == "train":
            return r["step"] <= step
        if r["split"] == "skipped":
            return r["epoch"] <= epoch or (r["epoch"] == epoch + 1 and r["batch"] < batches_done)
        return r["epoch"] <= epoch

    return [r for r in read_training_metrics(path) if kept(r)]


def truncate_metrics(path: Path, step: int, epoch: int, batches_done: int = 0) -> None:
    """Keep only the rows logged up to a checkpoint (:func:`kept_rows`).

    Resuming from that checkpoint then appends the rest without duplicated, lost or torn rows.
    """
    keep = kept_rows(path, step, epoch, batches_done)
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))


def kept_epoch_lines(path: Path, epoch: int) -> list[str]:
    """The lines of an epoch-stamped JSON-lines file (e.g. ``per_sample_train.jsonl``) up to ``epoch``: what a
    run resumed from that epoch's checkpoint has already written. Reads only (a resume checks before it writes).

    Raises:
        MetricsError: a line that is not JSON (but for a torn last one), or one without a whole ``epoch``;
            such a file is refused as metrics.jsonl is, never rewritten without the line.
    """
    path = Path(path)
    lines, keep = read_lines(path, "restore it or delete it"), []
    for number, row in _json_lines(path, lines):
        if not (isinstance(row, dict) and _whole(row.get("epoch"))):
            raise MetricsError(f"{path} line {number} is not a row of an epoch (an object with a whole 'epoch'); "
                               f"the file is damaged: repair or delete that line")
        if row["epoch"] <= epoch:
            keep.append(lines[number - 1] + "\n")
    return keep


def truncate_epoch_rows(path: Path, epoch: int) -> None:
    """Keep only the rows of an epoch-stamped JSON-lines file up to ``epoch`` (:func:`kept_epoch_lines`)."""
    path = Path(path)
    if path.exists():
        atomic_write_text(path, "".join(kept_epoch_lines(path, epoch)))
