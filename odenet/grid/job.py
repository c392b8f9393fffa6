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
import typing
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from odenet.config import ConfigError, coerce
from odenet.errors import EXIT_OK, Interrupted, RunFailure, UserError, exit_code
from odenet.evaluate.sweep import EvalConfig, inapplicable_sweep_options, run_eval
from odenet.run.dirs import RunLock
from odenet.run.files import read_mapping, write_json
from odenet.train.config import TrainConfig, resolve_train_config
from odenet.train.trainer import train

RECORD = "grid-job.json"  # in each run directory: where and when the point ran, and how it ended


def run_point(spec: dict[str, Any]) -> dict[str, Any]:
    """Train (and sweep) one point; the record of how it went, also written to ``RUN_DIR/grid-job.json``.

    ``spec``: ``config`` (a TrainConfig as a dict), ``eval`` (test-time sweep options or None),
    ``threads`` (torch CPU threads or None), ``cuda_visible_devices`` (or None), ``distributed``
    (a multi-task submitit job: join its tasks as one DDP run).
    """
    # Before any torch work (importing torch does none): CUDA reads the variable when it initialises.
    if spec.get("cuda_visible_devices") is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = spec["cuda_visible_devices"]
    if spec.get("distributed"):
        _export_submitit_distributed_env()
    cfg = TrainConfig(**spec["config"])
    threads = cfg.threads or spec.get("threads")  # the point's own count (odenet.grid.launch.point_threads)
    if threads:
        torch.set_num_threads(threads)
    run_dir = Path(cfg.out_dir) / cfg.run_name
    record: dict[str, Any] = {"run_name": cfg.run_name, "run_dir": str(run_dir), "host": socket.gethostname(),
                              "pid": os.getpid(), "threads": torch.get_num_threads(),
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
    # A run another process holds (a second grid on this out_dir was refused its lock) keeps its own record.
    if _is_main() and run_dir.is_dir() and RunLock.holder(run_dir) is None:
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
    saved = read_mapping(run_dir / "config.yaml", f"delete {run_dir} and run the grid again", "run config")
    # The grid's sweep options that this point's solvers take no use of (tolerances of an rknet) are left out,
    # as the grid leaves a training option out of a point it does not apply to; eval.py refuses them given.
    unused = inapplicable_sweep_options(ev.get("solvers") or [saved.get("solver")])
    cfg = EvalConfig(**{**{k: v for k, v in ev.items() if k not in unused}, "checkpoint": str(last),
                        "out": str(run_dir)})
    threads, before = saved.get("threads"), torch.get_num_threads()
    if isinstance(threads, int) and threads > 0:  # swept with the thread count it trained with, wherever it runs
        torch.set_num_threads(threads)
    try:
        run_eval(cfg, show=False)  # the grid announces each point itself
    finally:
        torch.set_num_threads(before)


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
    """``python -m odenet.grid SPEC_JSON``: one point in a process of its own; exit code as train.py's.

    The launchers pass the spec; a missing or damaged one is one sentence and exit 2, as any bad input.
    """
    argv = sys.argv[1:] if argv is None else argv
    try:
        spec = read_spec(argv)
        record = run_point(spec)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exit_code(exc)
    except BaseException as exc:  # a second signal stops at once: the grid records how this process ended
        print(str(exc) or type(exc).__name__, file=sys.stderr)
        return getattr(exc, "exit_code", 130)
    if record.get("message"):
        print(f"error: {record['message']}", file=sys.stderr)
    return record["exit_code"]


def read_spec(argv: list[str]) -> dict[str, Any]:
    """The one argument of ``python -m odenet.grid``: a point's spec as JSON (what odenet-grid's launchers pass)."""
    usage = "python -m odenet.grid takes one argument, a grid point's spec as JSON; run odenet-grid, which passes it"
    if len(argv) != 1:
        raise UserError(f"{usage} (got {len(argv)} arguments)")
    try:
        spec = json.loads(argv[0])
    except (json.JSONDecodeError, RecursionError):
        raise UserError(f"{usage} (the argument is not JSON)") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("config"), dict):
        raise UserError(f"{usage} (the argument is no object with a config)")
    hints = typing.get_type_hints(TrainConfig)
    unknown = sorted(str(k) for k in spec["config"] if k not in hints or k == "config")
    if unknown:
        raise UserError(f"{usage} (its config has the unknown key {unknown[0]!r})")
    missing = [k for k in ("out_dir", "run_name") if not isinstance(spec["config"].get(k), str)]
    if missing:
        raise UserError(f"{usage} (its config lacks {missing[0]})")
    try:
        values = {k: coerce(k, hints[k], v) for k, v in spec["config"].items()}
        resolve_train_config(TrainConfig(**values), set())
    except ConfigError as exc:
        raise UserError(f"{usage} (its config is refused: {exc})") from None
    return {**spec, "config": values}
