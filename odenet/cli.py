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
    """``train.py`` / ``odenet-train``: 0 done, 2 bad input, 3 training failed, 130/143 interrupted."""
    from odenet.trainer import EXIT_FAILED, Interrupted, TrainingFailure, train

    try:
        train(parse_train_args(argv))
    except USER_ERRORS as exc:
        return fail(str(exc))
    except TrainingFailure as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except Interrupted as exc:
        print(str(exc), file=sys.stderr)
        return exc.exit_code
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
