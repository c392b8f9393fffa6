"""Command-line entry points; each parses arguments and calls into the package."""

from __future__ import annotations

import sys

from odenet.checkpoint import CheckpointError
from odenet.config import ConfigError, parse_train_args
from odenet.data import DataFileError, DataNotFoundError

USER_ERRORS = (ConfigError, CheckpointError, DataNotFoundError, DataFileError)


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def train_main(argv: list[str] | None = None) -> int:
    """``train.py`` / ``odenet-train``."""
    try:
        cfg = parse_train_args(argv)
        from odenet.trainer import train

        train(cfg)
    except USER_ERRORS as exc:
        return fail(str(exc))
    return 0


def eval_main(argv: list[str] | None = None) -> int:
    """``eval.py`` / ``odenet-eval``."""
    try:
        from odenet.evaluation import parse_eval_args, run_eval

        cfg = parse_eval_args(argv)
        out = run_eval(cfg)
    except USER_ERRORS as exc:
        return fail(str(exc))
    print(f"sweep written to {out} (sweep.csv, sweep.json, report.md, report.html)")
    return 0
