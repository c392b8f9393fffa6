"""One grid point as a job: the ordinary training path (``train(cfg)``), then its test-time sweep.

The same function runs a point in the grid's own process (``--jobs 1``), in a process of its own
(``--jobs N``: ``python -m odenet.grid SPEC``) and inside a submitit job (Slurm or submitit's local
executor). It takes and returns plain data, so that every engine can pass it between processes,
and it never raises: a failed point is a record (its exit code and error sentence), and the
other points go on.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from odenet.errors import EXIT_OK, Interrupted, RunFailure, UserError, exit_code
from odenet.evaluate.sweep import EvalConfig, run_eval
from odenet.run.files import write_json
from odenet.train.config import TrainConfig
from odenet.train.trainer import train

RECORD = "grid-job.json"  # in each run directory: where and when the point ran, and how it ended


def run_point(spec: dict[str, Any]) -> dict[str, Any]:
    """Train (and sweep) one point; the record of how it went, also written to ``RUN_DIR/grid-job.json``.

    ``spec``: ``config`` (a TrainConfig as a dict), ``eval`` (test-time sweep options or None),
    ``threads`` (torch CPU threads or None), ``cuda_visible_devices`` (or None), ``distributed``
    (a multi-task submitit job: join its tasks as one DDP run).
    """
    # Before any torch work (importing torch does none): CUDA reads the variable when it initialises,
    # and N jobs on C cores must use C threads between them, not N × C.
    if spec.get("cuda_visible_devices") is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = spec["cuda_visible_devices"]
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    if spec.get("distributed"):
        _export_submitit_distributed_env()
    cfg = TrainConfig(**spec["config"])
    run_dir = Path(cfg.out_dir) / cfg.run_name
    record: dict[str, Any] = {"run_name": cfg.run_name, "run_dir": str(run_dir), "host": socket.gethostname(),
                              "pid": os.getpid(), "threads": spec.get("threads"),
                              "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                              "resumed": cfg.resume is not None, "started": time.time()}
    try:
        summary = train(cfg)
        if spec.get("eval") is not None and cfg.solver is not None and _is_main():
            evaluate_run(run_dir, spec["eval"])
        record.update(status="ok", exit_code=EXIT_OK, **headline(summary))
    except (UserError, RunFailure, Interrupted) as exc:
        status = "interrupted" if isinstance(exc, Interrupted) else "failed"
        record.update(status=status, exit_code=exit_code(exc), message=str(exc))
    except Exception as exc:  # a bug: keep its traceback in the point's log, and let the other points go on
        traceback.print_exc()
        record.update(status="failed", exit_code=1, message=f"{type(exc).__name__}: {exc}")
    record["ended"] = time.time()
    if _is_main() and run_dir.is_dir():
        write_json(run_dir / RECORD, record)
    return record


def headline(summary: dict[str, Any]) -> dict[str, Any]:
    """The numbers a finished point is announced with."""
    test = summary.get("test") or {}
    return {"acc": test.get("acc"), "nfe_forward": test.get("nfe_forward"), "wall_s": summary.get("wall_time_s")}


def evaluate_run(run_dir: Path, ev: dict[str, Any]) -> None:
    """Test-time sweep of an ODE run's final checkpoint (skipped when sweep.json is newer)."""
    last = run_dir / "last.pt"
    done = run_dir / "sweep.json"
    if done.is_file() and done.stat().st_mtime >= last.stat().st_mtime:
        return
    cfg = EvalConfig(**{**ev, "checkpoint": str(last), "out": str(run_dir)})
    run_eval(cfg, show=False)  # the grid announces each point itself


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _export_submitit_distributed_env() -> None:
    """A submitit job with several tasks (one per GPU, maybe on several nodes) → torch.distributed's env://
    variables (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK), which odenet's DDP reads as under
    torchrun. Each task keeps every GPU of its node visible and picks its own by LOCAL_RANK."""
    import submitit

    if submitit.JobEnvironment().num_tasks > 1:
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def main(argv: list[str] | None = None) -> int:
    """``python -m odenet.grid SPEC_JSON``: one point in a process of its own; exit code as train.py's."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        record = run_point(json.loads(argv[0]))
    except BaseException as exc:  # a second signal stops at once: the grid records how this process ended
        print(str(exc) or type(exc).__name__, file=sys.stderr)
        return getattr(exc, "exit_code", 130)
    if record.get("message"):
        print(f"error: {record['message']}", file=sys.stderr)
    return record["exit_code"]
