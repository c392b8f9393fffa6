"""The state of each grid point's run directory, checked for all points before any of them runs."""

from __future__ import annotations

import dataclasses
import itertools
import shutil
from pathlib import Path

from odenet.config import ConfigError, read_yaml
from odenet.grid.plan import comparable
from odenet.train.config import TrainConfig

DONE, NEW, RESUME, RESTART = "done", "new", "resume", "restart"


def run_dir_of(cfg: TrainConfig) -> Path:
    return Path(cfg.out_dir) / cfg.run_name


def point_state(cfg: TrainConfig) -> str:
    """done (summary.json written), new, resume (from last.pt) or restart (died before its first checkpoint).

    Reads only, so that every point can be checked before any is touched.

    Raises:
        ConfigError: the directory holds a run with other settings, or a config.yaml that is not one.
    """
    run_dir = run_dir_of(cfg)
    if not run_dir.exists():
        return NEW
    saved_path = run_dir / "config.yaml"
    if saved_path.is_file():
        saved = read_yaml(saved_path, "saved run config")
        if not isinstance(saved, dict):
            raise ConfigError(f"{saved_path} is not a run's config (not a mapping of option: value); delete "
                              f"{run_dir} or use another out_dir")
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
        # Died before its first checkpoint: nothing to resume. Keep what it wrote, start afresh.
        run_dir = run_dir_of(cfg)
        for n in itertools.count(1):
            aside = run_dir.with_name(f"{run_dir.name}.incomplete-{n}")
            if not aside.exists():
                shutil.move(str(run_dir), aside)
                print(f"moved an incomplete run without checkpoint aside to {aside}", flush=True)
                break
    return cfg
