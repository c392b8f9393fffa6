"""What a run tells its user: the console line per epoch and ``summary.json``."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torchdiffeq

from odenet.measure import rss_peak_mb

SUMMARY_KEYS = ("loss", "acc", "nfe_forward", "nfe_backward", "nfe_backprop", "steps_accepted", "steps_rejected",
                "act_mem_mb", "peak_mem_mb", "time_step_ms", "time_forward_ms", "time_backward_ms", "time_data_ms",
                "time_meter_ms")


def run_header(run_dir, cfg, data, n_params: int, device, world_size: int, resumed: str = "") -> str:
    """The line a run starts with: where it writes, what it trains on what, and where."""
    return (f"run {run_dir} | {cfg.backbone} on {cfg.dataset} ({data.train_size} train / {data.test_size} test, "
            f"from {data.source}) | {n_params:,} params | {device}"
            + (f" x {world_size} processes" if world_size > 1 else "") + resumed)


def epoch_line(epoch: int, epochs: int, train: list[dict], test: dict[str, Any]) -> str:
    mean = lambda key: float(np.mean([r[key] for r in train])) if train else float("nan")  # noqa: E731
    text = f"epoch {epoch}/{epochs} | train loss {mean('loss'):.4f} acc {mean('acc'):.4f}"
    if train and "nfe_forward" in train[0]:
        text += f" nfe_forward {mean('nfe_forward'):.1f} nfe_backward {mean('nfe_backward'):.1f}"
    if train:
        text += f" act_mem_mb {mean('act_mem_mb'):.1f}"
    for key in ("reg_kinetic", "reg_jacobian", "reg_error"):  # unweighted, where the run has the regulariser
        if train and key in train[0]:
            text += f" {key} {mean(key):.4g}"
    text += f" | test loss {test['loss']:.4f} acc {test['acc']:.4f}"
    if "nfe_forward" in test:
        text += f" nfe_forward {test['nfe_forward']:.1f}"
    return text


def run_summary(*, last_train: list[dict], test: dict[str, Any], wall_s: float, **facts: Any) -> dict[str, Any]:
    """summary.json: the run's ``facts`` (run_dir, config, params, progress, ...), the final test row,
    the last epoch's training means, the process's peak RSS and the library versions."""
    train_means = {k: float(np.mean([r[k] for r in last_train])) for k in SUMMARY_KEYS
                   if last_train and k in last_train[0]}
    return {**facts, "test": test, "train_last_epoch": train_means, "rss_peak_mb": rss_peak_mb(),
            "wall_time_s": wall_s, "versions": {"torch": torch.__version__, "torchdiffeq": torchdiffeq.__version__}}


def last_epoch_rows(rows: list[dict], epoch: int) -> tuple[list[dict], dict[str, Any]]:
    """From metrics.jsonl rows: epoch ``epoch``'s training rows and the last test row's measurements."""
    last_train = [r for r in rows if r["split"] == "train" and r["epoch"] == epoch]
    tests = [r for r in rows if r["split"] == "test"]
    test = {k: v for k, v in tests[-1].items() if k not in ("split", "epoch", "step")} if tests else {}
    return last_train, test
