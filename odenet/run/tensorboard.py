"""TensorBoard extras: the HParams record of a run, the custom-scalars layout, reports as figures and text.

Scalars themselves are written by :class:`odenet.run.log.RunLogger`; everything here uses the
same tag names, so the HParams table and the multi-line charts read those scalars directly.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

# Each hyperparameter with a value of its type (HParams declares the experiment's domains from these).
HPARAM_TYPES: dict[str, Any] = {"backbone": "", "dataset": "", "solver": "", "tol": 0.0, "adjoint": "", "seed": 0,
                                "steps": 0, "epochs": 0, "batch_size": 0, "lr": 0.0}
HPARAM_KEYS = tuple(HPARAM_TYPES)
# Metrics of the HParams table: existing scalar tags, whose last value each run shows.
HPARAM_METRICS = ("test/acc", "test/nfe_forward", "train/nfe_forward", "train/nfe_backward", "train/act_mem_mb",
                  "test/time_ms", "train/time_step_ms")
LAYOUT = {
    "Accuracy": {"acc": ["Multiline", ["train/acc", "test/acc"]],
                 "loss": ["Multiline", ["train/loss", "test/loss"]]},
    "NFE": {"forward vs backward": ["Multiline", ["train/nfe_forward", "train/nfe_backward", "test/nfe_forward"]],
            "solver steps": ["Multiline", ["train/steps_accepted", "train/steps_rejected", "test/steps_accepted"]]},
    "Memory": {"memory": ["Multiline", ["train/act_mem_mb", "train/peak_mem_mb", "test/peak_mem_mb"]]},
    "Time": {"per batch": ["Multiline", ["train/time_step_ms", "train/time_forward_ms", "train/time_backward_ms",
                                         "train/time_data_ms", "test/time_ms"]]},
}


def hparam_values(config: dict[str, Any]) -> dict[str, Any]:
    """The run's hyperparameters as HParams values; settings that do not apply (None) are left out."""
    values = {}
    for key in HPARAM_KEYS:
        value = config.get("rtol") if key == "tol" else config.get(key)
        if value is None:
            continue
        values[key] = str(value).lower() if isinstance(value, bool) else value
    return values


def write_run_header(writer, config: dict[str, Any]) -> None:
    """At the start of a run: the HParams experiment and session start, and the custom-scalars layout.

    Every run writes the same experiment (all keys, all metrics), so whichever one
    TensorBoard picks describes the whole sweep.
    """
    metrics = dict.fromkeys(HPARAM_METRICS, 0.0)
    experiment, _, _ = hparams(HPARAM_TYPES, metrics)
    _, start, _ = hparams(hparam_values(config), metrics)
    writer.file_writer.add_summary(experiment)
    writer.file_writer.add_summary(start)
    writer.add_custom_scalars(LAYOUT)


def write_run_footer(writer, config: dict[str, Any]) -> None:
    """At the end of a run: HParams session end (status success)."""
    _, _, end = hparams(hparam_values(config), dict.fromkeys(HPARAM_METRICS, 0.0))
    writer.file_writer.add_summary(end)


def write_report(report, logdir: str, prefix: str) -> None:
    """A report's figures (the PNGs it rendered for its files) and Markdown under ``prefix/``.

    ``report`` is an :class:`odenet.reports.Report` (taken as it is, not imported: reports sit above run files).
    """
    with SummaryWriter(logdir) as writer:
        for name in report.figures:
            image = np.asarray(Image.open(io.BytesIO(report.png(name))).convert("RGB"))
            writer.add_image(f"{prefix}/{name}", image, global_step=0, dataformats="HWC")
        writer.add_text(f"{prefix}/report", report.markdown(), global_step=0)
