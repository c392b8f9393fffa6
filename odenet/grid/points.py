"""The state of each grid point's run directory, checked for all points before any of them runs."""

from __future__ import annotations

import dataclasses
import itertools
import shutil
from pathlib import Path

from odenet.config import ConfigError
from odenet.grid.plan import comparable
from odenet.run.dirs import RunLock
from odenet.run.files import read_mapping
from odenet.train.config import TrainConfig

DONE, NEW, RESUME, RESTART = "done", "new", "resume", "restart"


def run_dir_of(cfg: TrainConfig) -> Path:
    return Path(cfg.out_dir) / cfg.run_name


def point_state(cfg: TrainConfig) -> str:
    """done (summary.json written), new, resume (from last.pt) or restart (died before its first checkpoint).

    Reads only, so that every point can be checked before any is touched.

    Raises:
        ConfigError: the directory is locked by a live run (another grid, or train.py, on this out_dir: running,
            never crashed), or holds a run with other settings, or a config.yaml that is not one.
    """
    run_dir = run_dir_of(cfg)
    if not run_dir.exists():
        return NEW
    holder = RunLock.holder(run_dir)
    if holder is not None:
        raise ConfigError(f"{run_dir} is being trained by another process (pid {holder}): another grid or train.py "
                          f"on this out_dir; wait for it to end, or use another --out-dir")
    saved_path = run_dir / "config.yaml"
    if saved_path.is_file():
        saved = read_mapping(saved_path, f"delete {run_dir} or use another out_dir", "run config")
        saved, current = comparable(saved), comparable(cfg.to_dict())
        if saved != current:
            changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
            raise ConfigError(f"{run_dir} holds a run with other settings ({', '.join(changed)}); use another "
                              f"out_dir or delete that run")
    if (run_dir / "summary.json").is_file():
        return DONE
    if (run_dir / "last.pt").is_file():
        return RESUME
    return RESTART


def prepare(cfg: TrainConfig, state: str | None = None) -> TrainConfig | None:
    """What to do with a run's directory: None = already complete; else the config to run (maybe resuming)."""
    state = state or point_state(cfg)
    if state == DONE:
        return None
    if state == RESUME:
        return dataclasses.replace(cfg, resume=str(run_dir_of(cfg) / "last.pt"))
    if state == RESTART:
        move_aside(run_dir_of(cfg))
    return cfg


def move_aside(run_dir: Path) -> None:
    """A run that died before its first checkpoint has nothing to resume: keep what it wrote, beside, and start
    afresh. Moved with its lock held, so a run that started there meanwhile is refused, never moved.

    Raises:
        ConfigError: a live process holds the directory, or it got a checkpoint since it was looked at.
    """
    lock = RunLock(run_dir).acquire()
    try:
        if (run_dir / "last.pt").exists() or (run_dir / "summary.json").exists():
            raise ConfigError(f"{run_dir} got a checkpoint while the grid was starting (another grid on this out_dir?);"
                              f" run the grid again to resume it")
        for n in itertools.count(1):
            aside = run_dir.with_name(f"{run_dir.name}.incomplete-{n}")
            if not aside.exists():
                shutil.move(str(run_dir), aside)
                lock.moved(aside)
                print(f"moved an incomplete run without checkpoint aside to {aside}", flush=True)
                break
    finally:
        lock.release()
