"""Atomic file writes (a crash at any moment leaves the old file or the new one, never a torn one), and saved
documents read back with every way of failing as one sentence."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from odenet.errors import UserError


def atomic_write_bytes(path: Path, write) -> None:
    """Write through ``write(file)`` to a temporary file, fsync it, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, lambda fh: fh.write(text.encode()))


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def write_config(run_dir: Path, config: dict[str, Any]) -> None:
    atomic_write_text(Path(run_dir) / "config.yaml", yaml.safe_dump(config, sort_keys=False))


def read_document(path: Path, fix: str) -> Any:
    """The JSON (``*.json``) or YAML document at ``path`` (YAML read safely: no tags, no code run).

    Raises:
        UserError: one sentence naming the file, what is wrong (unreadable, not text, truncated or not
            JSON/YAML) and ``fix``.
    """
    path = Path(path)
    kind = "JSON" if path.suffix == ".json" else "YAML"
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise UserError(f"{path} is not text (binary bytes); the file is damaged: {fix}") from None
    except OSError as exc:
        raise UserError(f"{path} cannot be read ({exc.strerror or exc}): {fix}") from None
    try:
        return json.loads(text) if kind == "JSON" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError, RecursionError) as exc:
        what = exc.msg if isinstance(exc, json.JSONDecodeError) else \
            "nested too deeply" if isinstance(exc, RecursionError) else str(exc).splitlines()[0]
        raise UserError(f"{path} is not valid {kind} ({what}); the file is truncated or damaged: {fix}") from None


def read_mapping(path: Path, fix: str, what: str) -> dict[str, Any]:
    """:func:`read_document` that must hold a mapping (``what`` names it: "a run's summary")."""
    value = read_document(path, fix)
    if not isinstance(value, dict):
        raise UserError(f"{path} holds no {what} (not a mapping of key: value); the file is damaged: {fix}")
    return value
