"""TensorBoard extras: the HParams record of a run, the custom-scalars layout, reports as text.

Scalars themselves are written by :class:`odenet.run.log.RunLogger`; everything here uses the
same tag names, so the HParams table and the charts read those scalars directly.

What users see, checked in a browser (README, "TensorBoard"):

* HParams: TensorBoard's table shows the first five hyperparameters marked ``differs`` and the
  first five metrics, so the study's variables (:data:`SHOWN_HPARAMS`) are marked and the metrics
  are listed in the order a reader compares runs by; integers are recorded as text ("32", where a
  number would read "32.000"), strings with their discrete domains where every value is known.
* Custom Scalars: one idea per chart (train and test never share one; forward and backward NFE,
  and each time, have their own).
* Reports: text only (tables as aligned monospace blocks, which neither wrap nor squeeze), with
  the path of the HTML report that holds the figures. Images would open the Time Series tab on
  a wall of report figures with every scalar below them.
"""

from __future__ import annotations

import io
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
from tensorboard.compat.proto.tensor_pb2 import TensorProto
from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
from torch.utils.tensorboard import SummaryWriter

from odenet.data import list_datasets
from odenet.models.backbones import list_backbones
from odenet.solve import SOLVERS

# Each hyperparameter: how it is recorded ("str", "int" as text, "float") and, for strings, every value
# it can take (a discrete domain must list them all: TensorBoard's filter hides sessions outside it).
HPARAMS: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "backbone": ("str", tuple(list_backbones())), "dataset": ("str", tuple(list_datasets())),
    "solver": ("str", SOLVERS), "tol": ("float", None), "adjoint": ("str", ("false", "true")), "seed": ("int", None),
    "steps": ("int", None), "epochs": ("int", None), "batch_size": ("int", None), "lr": ("float", None),
    # the study's levers and recipe (issue 11)
    "optimizer": ("str", ("sgd", "adamw")), "schedule": ("str", ("step", "cosine", "onecycle")),
    "kinetic_reg": ("float", None), "jacobian_reg": ("float", None), "error_reg": ("float", None),
    "steer": ("float", None), "augment_dim": ("int", None), "first_step": ("str", ("auto", "reuse"))}
HPARAM_KEYS = tuple(HPARAMS)
SHOWN_HPARAMS = ("backbone", "solver", "tol", "adjoint", "seed")  # the grids' variables: TensorBoard shows 5
# Metrics of the HParams table (existing scalar tags, whose last value each run shows), the first five
# shown by default: accuracy and step time first (at 1,400 px the five hparams leave room for about two
# metric columns before the table scrolls), then the two NFE and memory; then the rest.
HPARAM_METRICS = {"test/acc": "test acc", "train/time_step_ms": "train time_step_ms",
                  "train/nfe_forward": "train nfe_forward", "train/nfe_backward": "train nfe_backward",
                  "train/act_mem_mb": "train act_mem_mb", "test/nfe_forward": "test nfe_forward",
                  "test/time_ms": "test time_ms"}
LAYOUT = {
    "Accuracy": {"test acc": ["Multiline", ["test/acc"]], "train acc": ["Multiline", ["train/acc"]],
                 "test loss": ["Multiline", ["test/loss"]], "train loss": ["Multiline", ["train/loss"]]},
    "NFE": {"forward NFE per training step": ["Multiline", ["train/nfe_forward"]],
            "backward NFE per training step": ["Multiline", ["train/nfe_backward"]],
            "forward NFE per test batch": ["Multiline", ["test/nfe_forward"]],
            "rejected solver steps per training step": ["Multiline", ["train/steps_rejected"]]},
    "Memory": {"act_mem_mb (saved for backward)": ["Multiline", ["train/act_mem_mb"]],
               "peak_mem_mb (CUDA, training)": ["Multiline", ["train/peak_mem_mb"]]},
    "Time": {"time_step_ms (whole training step)": ["Multiline", ["train/time_step_ms"]],
             "time_forward_ms (training)": ["Multiline", ["train/time_forward_ms"]],
             "time_backward_ms (training)": ["Multiline", ["train/time_backward_ms"]],
             "time_ms per test batch": ["Multiline", ["test/time_ms"]]},
}
UNSMOOTHED_URL = "http://127.0.0.1:6006/?smoothing=0#timeseries"  # test curves: one point per epoch


def hparam_values(config: dict[str, Any]) -> dict[str, Any]:
    """The run's hyperparameters as HParams values; settings that do not apply (None) are left out."""
    values = {}
    for key, (kind, _) in HPARAMS.items():
        value = config.get("rtol") if key == "tol" else config.get(key)
        if value is None:
            continue
        values[key] = (str(value).lower() if isinstance(value, bool) else str(value) if kind in ("str", "int")
                       else float(value))
    return values


def _hparams_summary(tag: str, data: plugin_data_pb2.HParamsPluginData) -> Summary:
    data.version = metadata.PLUGIN_DATA_VERSION
    meta = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name=metadata.PLUGIN_NAME,
                                                                  content=data.SerializeToString()))
    return Summary(value=[Summary.Value(tag=tag, metadata=meta)])


def experiment_summary() -> Summary:
    """The HParams experiment: every key with its type and domain, the study's variables marked shown."""
    infos = []
    for key, (kind, domain) in HPARAMS.items():
        info = api_pb2.HParamInfo(name=key, differs=key in SHOWN_HPARAMS,
                                  type=api_pb2.DATA_TYPE_FLOAT64 if kind == "float" else api_pb2.DATA_TYPE_STRING)
        if domain:
            info.domain_discrete.extend(domain)
        infos.append(info)
    metrics = [api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag), display_name=name)
               for tag, name in HPARAM_METRICS.items()]
    experiment = api_pb2.Experiment(hparam_infos=infos, metric_infos=metrics)
    return _hparams_summary(metadata.EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(experiment=experiment))


def session_start_summary(config: dict[str, Any]) -> Summary:
    start = plugin_data_pb2.SessionStartInfo(start_time_secs=time.time())
    for key, value in hparam_values(config).items():
        if isinstance(value, str):
            start.hparams[key].string_value = value
        else:
            start.hparams[key].number_value = value
    data = plugin_data_pb2.HParamsPluginData(session_start_info=start)
    return _hparams_summary(metadata.SESSION_START_INFO_TAG, data)


def write_run_header(writer, config: dict[str, Any]) -> None:
    """At the start of a run: the HParams experiment and session start, and the custom-scalars layout.

    Every run writes the same experiment (all keys, all metrics), so whichever one
    TensorBoard picks describes the whole sweep.
    """
    writer.file_writer.add_summary(experiment_summary())
    writer.file_writer.add_summary(session_start_summary(config))
    writer.add_custom_scalars(LAYOUT)


def write_run_footer(writer, config: dict[str, Any]) -> None:
    """At the end of a run: HParams session end (status success)."""
    end = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS, end_time_secs=time.time())
    writer.file_writer.add_summary(_hparams_summary(metadata.SESSION_END_INFO_TAG,
                                                    plugin_data_pb2.HParamsPluginData(session_end_info=end)))


def text_summary(tag: str, markdown: str) -> Summary:
    """A text-plugin summary under exactly ``tag`` (SummaryWriter.add_text appends "/text_summary")."""
    meta = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="text"))
    tensor = TensorProto(dtype=7, string_val=[markdown.encode()],  # 7: DT_STRING
                         tensor_shape=TensorShapeProto(dim=[TensorShapeProto.Dim(size=1)]))
    return Summary(value=[Summary.Value(tag=tag, metadata=meta, tensor=tensor)])


def tables_as_text(markdown: str) -> str:
    """Markdown with each table turned into an aligned monospace block: TensorBoard's text cards
    wrap table cells to fit, so a 15-column table becomes unreadable, while a code block scrolls."""
    out, table = [], []

    def flush() -> None:
        if table:
            rows = [[c.strip().strip("`") for c in line.strip().strip("|").split("|")] for line in table
                    if not re.fullmatch(r"\|(-+\|)+", line.strip())]
            widths = [max(len(r[i]) for r in rows if i < len(r)) for i in range(len(rows[0]))]
            lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
            out.extend(["```", lines[0], "  ".join("-" * w for w in widths), *lines[1:], "```"])
            table.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        out.append(line)
    flush()
    return "\n".join(out)


def write_report(report, logdir: str, prefix: str, images: bool = False) -> None:
    """A report's Markdown as one text entry, tag ``prefix``: tables as monospace blocks, each figure
    named by its PNG (the figures are in report.html, whose path heads the text).

    ``images`` also writes the figures as images under ``prefix/`` (the dynamics report, whose logdir
    is about pictures); classifier grids and sweeps leave it off so Time Series opens on the scalars.
    ``report`` is an :class:`odenet.reports.Report` (taken as it is, not imported: reports sit above run files).
    """
    html = next((p for p in (Path(logdir) / "report.html", Path(logdir).parent / "report.html") if p.is_file()),
                None)
    head = f"Figures and the full report: `{html.resolve() if html else 'report.html'}`\n\n"
    body = re.sub(r"!\[([^]]*)\]\([^)]*\)", r"Figure `\1.png` (in report.html)", report.markdown())
    with SummaryWriter(logdir) as writer:
        writer.file_writer.add_summary(text_summary(prefix, head + tables_as_text(body)), 0)
        for name in report.figures if images else ():
            image = np.asarray(Image.open(io.BytesIO(report.png(name))).convert("RGB"))
            writer.add_image(f"{prefix}/{name}", image, global_step=0, dataformats="HWC")


def write_histograms(logdir: str, tag: str, series: list, labels: list[str]) -> None:
    """One histogram per entry of ``series`` under ``tag``, step = its position (e.g. per-image NFE, one step per
    tolerance from loose to tight, so TensorBoard's offset view stacks the tolerances), and a text entry
    ``<tag>/steps`` saying which setting each step is."""
    with SummaryWriter(logdir) as writer:
        for step, values in enumerate(series):
            writer.add_histogram(tag, np.asarray(values, dtype=np.float64), global_step=step)
        legend = "\n".join(f"- step {step}: {label}" for step, label in enumerate(labels))
        writer.file_writer.add_summary(text_summary(f"{tag}/steps", legend), 0)
