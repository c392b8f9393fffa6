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
        raise CheckpointError(f"checkpoint {path} holds objects that safe loading refuses ({_refusal(exc)}); it was "
                              f"not written by odenet and loading it could run code, so do not load it: pass a last.pt "
                              f"or best.pt that train.py wrote") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, RecursionError, KeyError, TypeError,
            AttributeError, IndexError) as exc:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({_first_line(exc)}); use another "
                              f"checkpoint (best.pt or last.pt) or retrain") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an odenet checkpoint (no '{FORMAT}' marker); pass a last.pt or "
                              f"best.pt from a run directory")
    lacking = [key for key in required if key not in state]
    if lacking:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(lacking)} (damaged, or written by another "
                              f"tool); pass a last.pt or best.pt that train.py wrote")
    for key in ("epoch", "step", "batches_done"):  # counters of progress: whole numbers wherever they are read
        value = state.get(key, 0)
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
            raise damaged(path, f"its {key} is {_show(value)}, not a whole number")
    if "config" in state and not isinstance(state["config"], dict):
        raise damaged(path, "its config is not a mapping of option: value")
    return state


def damaged(path: str | Path, what: str) -> CheckpointError:
    """The refusal of a checkpoint whose contents are not what odenet wrote (``what``: which entry, and how)."""
    return CheckpointError(f"checkpoint {path} is damaged ({what}); use another checkpoint of the run (best.pt or "
                           f"last.pt) or retrain")


def load_weights(model: torch.nn.Module, state: dict[str, Any], path: str | Path, fix: str) -> None:
    """Load ``state["model"]`` into ``model`` (strictly: every tensor present, none extra, shapes equal).

    Raises:
        CheckpointError: the entry is not a mapping of names to tensors, or does not fit ``model``; ``fix``
            ends the sentence.
    """
    weights = state.get("model")
    if not isinstance(weights, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                for k, v in weights.items()):
        raise damaged(path, "its model entry is not a mapping of names to tensors")
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {path} does not fit the model ({_load_error(exc)}); {fix}") from None


def _load_error(exc: RuntimeError) -> str:
    """torch's load_state_dict error in a few words: its first complaint, without the preamble."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[1] if len(lines) > 1 else lines[0] if lines else type(exc).__name__).rstrip(".")[:200]


def mismatch(saved: Any, fresh: Any, where: str, exact: bool = True) -> str | None:
    """How ``saved`` (read back from a checkpoint) differs in kind from ``fresh`` (what this code would write):
    a tensor of another dtype or shape, text where a number belongs, a list of another length, an entry lacking
    or (``exact``) unexpected; None when alike. Mappings keyed by numbers (a schedule's milestones) need only
    numbers on both sides, whatever the keys."""
    if isinstance(fresh, torch.Tensor):
        if isinstance(saved, torch.Tensor) and saved.dtype == fresh.dtype and saved.shape == fresh.shape:
            return None
        got = f"a {saved.dtype} tensor of shape {tuple(saved.shape)}" if isinstance(saved, torch.Tensor) else \
            _show(saved)
        return f"{where} is {got}, not a {fresh.dtype} tensor of shape {tuple(fresh.shape)}"
    if isinstance(fresh, dict):
        return _mapping_mismatch(saved, fresh, where, exact)
    if isinstance(fresh, (list, tuple)):
        if not isinstance(saved, (list, tuple)) or len(saved) != len(fresh):
            return f"{where} is {_show(saved)}, not a list of {len(fresh)}"
        return _first(mismatch(a, b, f"{where}[{i}]", exact) for i, (a, b) in enumerate(zip(saved, fresh)))
    if isinstance(fresh, str):
        return None if isinstance(saved, str) else f"{where} is {_show(saved)}, not text"
    if isinstance(fresh, bool):
        return None if isinstance(saved, bool) else f"{where} is {_show(saved)}, not true or false"
    if fresh is None:  # a setting left to its default (torch's foreach), or Python's unset gauss_next
        plain = saved is None or isinstance(saved, (bool, int, float))
        return None if plain else f"{where} is {_show(saved)}, not a flag"
    return None if _number(saved) else f"{where} is {_show(saved)}, not a number"


def _mapping_mismatch(saved: Any, fresh: dict, where: str, exact: bool) -> str | None:
    if not isinstance(saved, dict):
        return f"{where} is {_show(saved)}, not a mapping"
    if not all(isinstance(k, str) for k in fresh):
        return _first(f"{where} holds {_show(k)}: {_show(v)}, not numbers" for k, v in saved.items()
                      if not (_number(k) and _number(v)))
    lacking = [k for k in fresh if k not in saved]
    if lacking:
        return f"{where} lacks its entry {lacking[0]!r}"
    extra = [k for k in saved if k not in fresh] if exact else []
    if extra:
        return f"{where} has an unexpected entry {_show(extra[0])}"
    return _first(mismatch(saved[k], v, f"{where}.{k}", exact) for k, v in fresh.items())


def _first(problems) -> str | None:
    return next((p for p in problems if p), None)


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, (str, int, float, bool, type(None))) else \
        f"a list of {len(value)}" if isinstance(value, (list, tuple)) else f"a {type(value).__name__}"
    return text if len(text) <= 40 else text[:37] + "..."


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _refusal(exc: BaseException) -> str:
    """What torch's weights-only unpickler refused ("unsupported GLOBAL posix.system ..."), without torch's advice
    on how to load the file anyway (weights_only=False runs whatever the file holds)."""
    lines = [line.strip().removeprefix("WeightsUnpickler error:").strip() for line in str(exc).splitlines()]
    found = [line for line in lines if "weights_only" not in line and ("GLOBAL" in line or "nsupported" in line)]
    return found[0].rstrip(".")[:200] if found else "objects that are not plain data"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
