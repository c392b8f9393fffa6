"""What the dynamics experiments' runs share: the run-directory check and the solver-failure guard."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from odenet.errors import ConfigError, RunFailure
from odenet.solve import SolverError
from odenet.train.step import NonFiniteLossError


def check_run_dir(run_dir: Path) -> None:
    if (run_dir / "metrics.jsonl").exists():
        raise ConfigError(f"run directory {run_dir} already holds a run; choose another --run-name or --out-dir, "
                          f"or delete it")


@contextmanager
def solver_guard(what: str, step: int, diverged: str = "the learned field diverged; lower --lr"):
    """Turn a failed solve (forward or adjoint) or a non-finite loss into one actionable RunFailure."""
    try:
        yield
    except SolverError as exc:
        raise RunFailure(f"{what} at iteration {step} stopped: {exc}; lower --lr, loosen --tol or raise "
                         f"--max-num-steps") from None
    except NonFiniteLossError as exc:
        raise RunFailure(f"{what} at iteration {step} stopped: {exc}: {diverged}") from None
