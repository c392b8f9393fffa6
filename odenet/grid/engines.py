"""The three ways of running the grid's points (see :mod:`odenet.grid.launch`); each returns their records."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from odenet.errors import Interrupted
from odenet.grid.job import RECORD, run_point
from odenet.grid.launch import LaunchOptions, Progress, timeout_minutes

POLL_S = 0.2


def run_inline(specs: list[dict[str, Any]], progress: Progress) -> list[dict[str, Any]]:
    """One point after another in this process (``--jobs 1``); a signal stops the grid after its checkpoint."""
    records = []
    for spec in specs:
        record = run_point(spec)
        records.append(record)
        progress.finished(record)
        if record["status"] == "interrupted":
            raise Interrupted(record["exit_code"] - 128, f"{record['message']}; re-run the grid to resume it and "
                                                         f"the {len(specs) - len(records)} points not yet started")
    return records


def run_processes(specs: list[dict[str, Any]], slots: list[str | None], progress: Progress) -> list[dict[str, Any]]:
    """Up to ``len(slots)`` points at once, each a ``python -m odenet.grid`` process with its slot's GPU.

    A point's output goes to ``RUN_DIR/train.log``. The children share this process group, so a
    Ctrl-C reaches each of them once (each checkpoints and exits 130); a SIGTERM sent to the grid
    alone is passed on. Either way no new point starts, and the grid waits for the running ones.
    """
    queue, free = deque(specs), list(slots)
    running: dict[subprocess.Popen, tuple[dict[str, Any], str | None]] = {}
    records: list[dict[str, Any]] = []
    stop: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        stop.append(signum)
        if signum == signal.SIGTERM:
            for proc in running:
                proc.send_signal(signal.SIGTERM)

    with _handling(on_signal):
        while running or (queue and not stop):
            while queue and free and not stop:
                spec, slot = queue.popleft(), free.pop(0)
                running[_start(spec, slot)] = (spec, slot)
            time.sleep(POLL_S)
            for proc in [p for p in running if p.poll() is not None]:
                spec, slot = running.pop(proc)
                free.append(slot)
                records.append(_record_of(proc, spec))
                progress.finished(records[-1])
    if stop:
        raise Interrupted(stop[0], f"grid interrupted by {signal.Signals(stop[0]).name}; {len(queue)} points not "
                                   f"started; re-run the same command to resume the unfinished ones")
    return records


def _start(spec: dict[str, Any], slot: str | None) -> subprocess.Popen:
    spec = {**spec, "cuda_visible_devices": slot}
    run_dir = Path(spec["config"]["out_dir"]) / spec["config"]["run_name"]
    run_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if spec.get("threads"):  # also OpenMP's and MKL's own pools, sized when the interpreter starts
        env.update(OMP_NUM_THREADS=str(spec["threads"]), MKL_NUM_THREADS=str(spec["threads"]))
    with (run_dir / "train.log").open("a") as log:
        return subprocess.Popen([sys.executable, "-m", "odenet.grid", json.dumps(spec)], stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)


def _record_of(proc: subprocess.Popen, spec: dict[str, Any]) -> dict[str, Any]:
    """The record the point's process wrote, or one saying how it died before it could."""
    run_dir = Path(spec["config"]["out_dir"]) / spec["config"]["run_name"]
    path = run_dir / RECORD
    with contextlib.suppress(OSError, ValueError, RecursionError):
        record = json.loads(path.read_text())
        if isinstance(record, dict) and record.get("pid") == proc.pid:
            return record
    code = proc.returncode
    how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
    return {"run_name": spec["config"]["run_name"], "run_dir": str(run_dir), "status": "failed",
            "exit_code": code if code > 0 else 128 - code,
            "message": f"its process {how} before recording an outcome; see {run_dir / 'train.log'}"}


@contextlib.contextmanager
def _handling(handler) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def run_submitit(specs: list[dict[str, Any]], opts: LaunchOptions, out_dir: Path,
                 progress: Progress) -> list[dict[str, Any]]:
    """One submitit job array, a job per point; waits for them, collecting each record as it ends.

    submitit's files of a point (``log.out``, ``log.err``, the pickled call and result) are in
    ``OUT_DIR/slurm/<job id>/``, and ``RUN_DIR/slurm`` links there.
    """
    import submitit

    executor = submitit.AutoExecutor(folder=out_dir / "slurm" / "%j", cluster=opts.submitit_executor)
    gpus = opts.slurm_gpus_per_job
    params: dict[str, Any] = {"name": "odenet-grid", "timeout_min": timeout_minutes(opts.slurm_time),
                              "nodes": opts.slurm_nodes, "tasks_per_node": max(1, gpus), "gpus_per_node": gpus}
    if opts.slurm_cpus_per_job:
        params["cpus_per_task"] = opts.slurm_cpus_per_job
    if opts.slurm_partition:
        params["slurm_partition"] = opts.slurm_partition
    if opts.slurm_array_parallelism:
        params["slurm_array_parallelism"] = opts.slurm_array_parallelism
    if opts.slurm_setup:
        params["slurm_setup"] = list(opts.slurm_setup)
    executor.update_parameters(**params)
    distributed = gpus > 1 or opts.slurm_nodes > 1
    jobs = executor.map_array(run_point, [{**s, "distributed": distributed} for s in specs])
    by_id = {}
    for job, spec in zip(jobs, specs):
        by_id[job.job_id] = spec
        _link_logs(Path(spec["config"]["out_dir"]) / spec["config"]["run_name"], Path(job.paths.folder))
    print(f"submitted {len(jobs)} jobs ({opts.submitit_executor}): {', '.join(j.job_id for j in jobs)}", flush=True)
    records = []
    for job in submitit.helpers.as_completed(jobs, poll_frequency=1 if opts.submitit_executor == "local" else 30):
        records.append(_job_record(job, by_id[job.job_id]))
        progress.finished(records[-1])
    return records


def _job_record(job: Any, spec: dict[str, Any]) -> dict[str, Any]:
    try:
        return job.result()
    except Exception as exc:  # the job died (killed, timed out, out of memory) before returning
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return {"run_name": spec["config"]["run_name"], "exit_code": 3, "status": "failed",
                "run_dir": str(Path(spec["config"]["out_dir"]) / spec["config"]["run_name"]),
                "message": f"job {job.job_id} ended without a result ({first}); see {job.paths.stderr}"}


def _link_logs(run_dir: Path, folder: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    link = run_dir / "slurm"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(os.path.relpath(folder, run_dir), target_is_directory=True)


