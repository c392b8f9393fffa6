"""Checkpoints: written atomically, read with ``weights_only=True``, errors in one sentence.

A checkpoint is a dict of plain data and tensors (torchvision's reference layout):
``model``, ``optimizer``, ``scheduler``, ``epoch`` (completed), ``step``, ``rng``,
``config`` (the resolved config as a plain dict) and ``metrics``. Nothing in it needs
pickle's arbitrary-object loading, so every load uses ``weights_only=True``, which refuses
malicious pickles instead of executing them.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from odenet.errors import UserError
from odenet.run.files import atomic_write_bytes

FORMAT = "odenet-checkpoint"
VERSION = 1


class CheckpointError(UserError):
    """A checkpoint that cannot be used; the message names the file and what to do."""


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` whole or not at all; a failed write (e.g. a full disk) raises its ``OSError``."""

    def write(fh) -> None:
        recording = _RecordingFile(fh)
        try:
            torch.save({"format": FORMAT, "version": VERSION, **state}, recording)
        except RuntimeError:
            # torch.save reports a failed write as "unexpected pos"; the OSError behind it says what happened.
            if recording.error is not None:
                raise recording.error from None
            raise

    atomic_write_bytes(path, write)


class _RecordingFile:
    """A binary file whose ``write`` remembers the OSError it raised (torch.save hides it)."""

    def __init__(self, fh) -> None:
        self._fh, self.error = fh, None

    def write(self, data) -> int:
        try:
            return self._fh.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def __getattr__(self, name: str):
        return getattr(self._fh, name)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                    required: tuple[str, ...] = ("model", "config")) -> dict[str, Any]:
    """Load and sanity-check an odenet checkpoint holding at least the ``required`` entries.

    Raises:
        CheckpointError: missing, truncated, not a checkpoint, lacking a required entry, or
            holding objects that ``weights_only`` loading refuses (e.g. a pickle that would run code).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; check the path (runs keep last.pt and best.pt)")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (truncated); use another checkpoint (best.pt or last.pt) "
                              f"or retrain")
    with path.open("rb") as fh:
        is_zip = fh.read(4) == b"PK\x03\x04"  # torch.save writes a zip archive
    if not is_zip:
        raise CheckpointError(f"{path} is not a checkpoint (not a torch.save archive); pass a last.pt or best.pt "
                              f"from a run directory")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"checkpoint {path} holds objects that safe loading refuses ({_first_line(exc)}); "
                              f"it was not written by odenet, and loading it could run code") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({_first_line(exc)}); use another "
                              f"checkpoint (best.pt or last.pt) or retrain") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an odenet checkpoint (no '{FORMAT}' marker); pass a last.pt or "
                              f"best.pt from a run directory")
    lacking = [key for key in required if key not in state]
    if lacking:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(lacking)} (damaged, or written by another "
                              f"tool); pass a last.pt or best.pt that train.py wrote")
    return state


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
