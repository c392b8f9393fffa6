"""TensorBoard events files by kind: each kind written whole and replaced, never appended to (no torch).

A run directory holds the events of the run's own steps (written as they happen) and views of its files
(:mod:`odenet.run.tensorboard`), each in a file whose name ends with its kind (``.odenet``, ``.sweep``,
``.report``), so that writing a view again replaces it. Runs written before views had a file of their own kept
their HParams records and chart layout among the steps' events: :func:`strip_views` takes them out once, so
that TensorBoard reads the rewritten ones.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from tensorboard.summary.writer.record_writer import RecordWriter

PREFIX = "events.out.tfevents."
VIEW_TAGS = ("_hparams_/", "custom_scalars__config__")  # what a run's view holds, by tag prefix


def _unsuffixed(path: Path) -> bool:
    """An events file of no kind (its name ends with the writer's counter): a run's steps, or an old view."""
    return path.name.rsplit(".", 1)[-1].isdigit()


def _tags(path: Path) -> set[str]:
    return {value.tag for event in LegacyEventFileLoader(str(path)).Load() for value in event.summary.value}


def remove_events(logdir: str | Path, suffix: str | None, alone: set[str] | None = None) -> None:
    """Remove the events files of one kind (``suffix``), and the small unsuffixed ones holding exactly the tags
    ``alone`` (a sweep's or report's text from earlier versions, per-image histograms)."""
    for old in Path(logdir).glob(PREFIX + "*"):
        small = _unsuffixed(old) and old.stat().st_size < 2**20
        if (suffix and old.name.endswith(suffix)) or (alone and small and _tags(old) == alone):
            old.unlink()


class EventsFile(EventFileWriter):
    """An events file of one kind (``suffix``) in ``logdir``, replacing the earlier ones of that kind."""

    def __init__(self, logdir: str | Path, suffix: str, alone: set[str] | None = None) -> None:
        Path(logdir).mkdir(parents=True, exist_ok=True)
        remove_events(logdir, suffix, alone)
        super().__init__(str(logdir), filename_suffix=suffix)

    def add(self, summary: Summary, step: int = 0) -> None:
        self.add_event(Event(wall_time=time.time(), step=step, summary=summary))


def strip_views(run_dir: str | Path, suffix: str) -> None:
    """For a run that has no view file (``*suffix``) yet — written before views had files of their own — keep
    only the last of its sweeps' texts (and per-image histograms), and take the HParams records and chart layouts
    out of its other events files, so that its rewritten view is the one TensorBoard reads (it keeps the first
    record of a tag it sees). Every other event is kept as it was; each file is replaced whole (written beside
    it, then renamed over it)."""
    run_dir = Path(run_dir)
    if any(run_dir.glob(f"{PREFIX}*{suffix}")):
        return
    newest: dict[frozenset[str], Path] = {}  # earlier versions wrote each sweep's text into a file of its own
    for path in sorted(p for p in run_dir.glob(PREFIX + "*") if _unsuffixed(p) and p.stat().st_size < 2**20):
        tags = frozenset(_tags(path))
        if tags and all(t == "sweep" or t.startswith("sample/nfe_forward") for t in tags):
            if tags in newest:
                newest[tags].unlink()  # names sort by the time they were written: the later sweep stays
            newest[tags] = path
    for path in sorted(p for p in run_dir.glob(PREFIX + "*") if _unsuffixed(p)):
        events = list(LegacyEventFileLoader(str(path)).Load())
        if not any(v.tag.startswith(VIEW_TAGS) for event in events for v in event.summary.value):
            continue
        temporary = path.with_name(f".{path.name}.rewrite")  # not an events file's name while it is written
        with temporary.open("wb") as fh:
            writer = RecordWriter(fh)
            for event in events:
                kept = [v for v in event.summary.value if not v.tag.startswith(VIEW_TAGS)]
                if event.HasField("summary") and not kept:
                    continue
                if event.HasField("summary"):
                    del event.summary.value[:]
                    event.summary.value.extend(kept)
                writer.write(event.SerializeToString())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temporary, path)
