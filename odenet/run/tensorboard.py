"""TensorBoard as the study's reader sees it: HParams, custom scalars, epoch means, sweeps and reports.

:class:`odenet.run.log.RunLogger` writes every step's scalars (``train/<key>``, ``test/<key>``). The rest
is a *view* of a run's saved files in an events file of its own kind, replaced whole when rewritten (a
re-run sweep or report never leaves a second copy): ``<run>/*.odenet`` holds the HParams session (every
hyperparameter for every run, ``none`` where it does not apply, so no run drops out of a view), the epoch
means ``train_epoch/<key>`` (equal to the report's last-epoch means) and the test-time sweep's curves;
``*.sweep`` and ``_report/*.report`` a report's text. A grid's end and ``odenet-report`` rewrite every
view from the files with what only the whole set tells (:func:`write_study`): short trial names, the
columns that differ, chart titles with the images, batch and seeds. No torch here: ``odenet-report``
writes all of it anywhere. What a reader sees, tab by tab: docs/tensorboard.md.
"""

from __future__ import annotations

import math
import re
import statistics
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
from tensorboard.compat.proto.tensor_pb2 import TensorProto
from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

from odenet.naming import method_parts
from odenet.run.events import EventsFile, remove_events, strip_views

VIEW, SWEEP_TEXT, REPORT_TEXT = ".odenet", ".sweep", ".report"  # events-file suffixes, each rewritten whole
SWEEP = "test-time sweep"  # its tags' group: after test/, before train/ in the Time Series tab
NONE = "none"  # a setting that does not apply to the run (ResNet's tol); recorded, so the run stays in every view

# The hyperparameters, most telling first (the first five that differ get a column); numbers in FLOATS,
# the rest as text (an integer reads "32", where a number would read "32.000").
HPARAMS = ("method", "backbone", "dataset", "tol", "adjoint", "solver", "steps", "seed", "epochs", "batch_size", "lr",
           "optimizer", "schedule", "first_step", "kinetic_reg", "jacobian_reg", "error_reg", "steer", "augment_dim")
FLOATS = {"lr", "kinetic_reg", "jacobian_reg", "error_reg", "steer"}
# TensorBoard shows five hyperparameters, those marked `differs` first: these where they vary (the levers are
# in `method`), then FILL's, which say what the runs share (before the runs are known, FILL alone).
TICKS = ("method", "backbone", "dataset", "tol", "adjoint", "solver", "steps", "seed", "epochs", "batch_size", "lr")
FILL = ("method", "tol", "dataset", "epochs", "seed", "batch_size")
# The HParams metrics and what their values stand on. The first five are shown (TensorBoard's default), and
# every run has them: a run without one drops out of the parallel coordinates, and a ResNet has no NFE.
METRICS = (("test/acc", "test acc", "images"), ("train_epoch/time_epoch_s", "train time/epoch s", "train"),
           ("train_epoch/act_mem_mb", "train act_mem_mb", "train"), ("test/time_ms", "test time_ms", "test"),
           ("test/loss", "test loss", "images"), ("test/nfe_forward", "test nfe_forward", "test"),
           *((f"train_epoch/{k}", f"train {k}", "train") for k in ("nfe_forward", "nfe_backward", "time_step_ms")))
PAPER_NAMES = (("kinetic_reg", "RNODE"), ("jacobian_reg", "RNODE"), ("error_reg", "ERNODE"), ("steer", "STEER"),
               ("augment_dim", "ANODE"))
TIME_SERIES = "http://127.0.0.1:6006/?smoothing=0#timeseries"  # smoothing 0: a test curve has one point an epoch
CUSTOM_SCALARS = "http://127.0.0.1:6006/?smoothing=0#custom_scalars&_smoothingWeight=0"  # that tab's own setting


def links(logdir: str | Path) -> str:
    """The closing hint: the command, and the addresses that open the charts unsmoothed."""
    return (f"next: tensorboard --logdir {logdir} --host 127.0.0.1, then open {TIME_SERIES} or {CUSTOM_SCALARS} "
            f"(smoothing off: each point is a measurement)")


def tol_text(config: Mapping[str, Any]) -> str:
    """"1e-03" (sorts with its neighbours, unlike 0.001 and 1e-05), the exact value when not a round one."""
    tol = config.get("rtol") if config.get("solver") is not None else None
    short = f"{tol:.0e}" if tol is not None else NONE
    return short if tol is None or float(short) == tol else f"{tol:g}"


def hparam_values(config: Mapping[str, Any]) -> dict[str, Any]:
    """Every hyperparameter of :data:`HPARAMS` for one run, ``none`` (or weight 0) where it does not apply."""
    ode = config.get("solver") is not None
    values: dict[str, Any] = {}
    for key in HPARAMS:
        if key == "method":
            value = ("+".join(method_parts(config, sep="")) or "plain") if ode else config.get("backbone")
        elif key == "tol":
            value = tol_text(config)
        else:
            value = config.get(key)
        if key in FLOATS:
            values[key] = float(value or 0.0)
        elif value is None or (key == "adjoint" and not ode):
            values[key] = NONE
        else:
            values[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return values


def short_method(config: Mapping[str, Any]) -> str:
    """"RNODE", "STEER+ANODE", "plain", "reuse" for an ODE run (the levers' papers); the backbone otherwise."""
    if config.get("solver") is None:
        return str(config.get("backbone"))
    names = list(dict.fromkeys(name for key, name in PAPER_NAMES if config.get(key)))
    if config.get("first_step") == "reuse":
        names.append("reuse")
    core = "+".join(names) or "plain"
    return core if config.get("backbone") == "odenet" else f"{config.get('backbone')} {core}"


def trial_names(configs: list[Mapping[str, Any]]) -> list[str]:
    """Short, distinct names for runs shown together: the method, plus only what tells two apart ("RNODE",
    "resnet"; "plain 1e-03 adj" where tolerance and backprop vary, "s1" where seeds do; then the levers' weights,
    the dataset, the run folder while names still collide)."""
    names = []
    for config in configs:
        values = hparam_values(config)
        parts = [short_method(config)]
        parts += [values["solver"]] if _varies(configs, "solver") and values["solver"] != NONE else []
        parts += [values["tol"]] if _varies(configs, "tol") and values["tol"] != NONE else []
        parts += ["adj"] if _varies(configs, "adjoint") and values["adjoint"] == "true" else []
        parts += [f"s{values['seed']}"] if _varies(configs, "seed") else []
        names.append(" ".join(parts))
    for fallback in (lambda c: "+".join(method_parts(c, sep="")), lambda c: str(c.get("dataset")),
                     lambda c: str(c.get("run_name"))):
        clash = {n for n in names if names.count(n) > 1}
        names = [f"{n} {fallback(c)}".strip() if n in clash and fallback(c) else n for n, c in zip(names, configs)]
    return names


def _varies(configs: list[Mapping[str, Any]], key: str) -> bool:
    """Two values among the runs, ``none`` aside; a backbone among the ODE runs (``method`` names the others)."""
    runs = [c for c in configs if c.get("solver") is not None] if key == "backbone" else configs
    return len({hparam_values(c)[key] for c in runs} - {NONE}) > 1


def _hparams_summary(tag: str, data: plugin_data_pb2.HParamsPluginData) -> Summary:
    data.version = metadata.PLUGIN_DATA_VERSION
    meta = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name=metadata.PLUGIN_NAME,
                                                                  content=data.SerializeToString()))
    return Summary(value=[Summary.Value(tag=tag, metadata=meta)])


def experiment_summary(configs: list[Mapping[str, Any]] | None = None,
                       notes: Mapping[str, str] | None = None) -> Summary:
    """The HParams experiment. With the runs' ``configs``, :data:`TICKS` that vary among them are ticked (``none``
    does not count: ResNet's missing tolerance is no tolerance axis), then :data:`FILL`, and string domains list
    every value. ``notes``: what metrics stand on, by kind (:data:`METRICS`; "images": " (1,000 images)")."""
    values = [hparam_values(c) for c in configs or []]
    distinct = {key: sorted({v[key] for v in values}, key=str) for key in HPARAMS}
    ticked = [k for k in TICKS if _varies(configs, k)][:5] if configs else []
    ticked += [k for k in FILL if k not in ticked][:5 - len(ticked)]
    infos = []
    for key in HPARAMS:
        info = api_pb2.HParamInfo(name=key, differs=key in ticked,
                                  type=api_pb2.DATA_TYPE_FLOAT64 if key in FLOATS else api_pb2.DATA_TYPE_STRING)
        if configs and key not in FLOATS:
            info.domain_discrete.extend(distinct[key])
        infos.append(info)
    notes = notes or {}
    metrics = [api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag), display_name=f"{name}{notes.get(kind, '')}")
               for tag, name, kind in METRICS]
    experiment = api_pb2.Experiment(hparam_infos=infos, metric_infos=metrics)
    return _hparams_summary(metadata.EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(experiment=experiment))


def session_start(config: Mapping[str, Any], group: str = "") -> Summary:
    """A run's HParams session; ``group`` is its trial name (empty: TensorBoard shows the run's folder)."""
    start = plugin_data_pb2.SessionStartInfo(start_time_secs=time.time(), group_name=group)
    for key, value in hparam_values(config).items():
        setattr(start.hparams[key], "string_value" if isinstance(value, str) else "number_value", value)
    data = plugin_data_pb2.HParamsPluginData(session_start_info=start)
    return _hparams_summary(metadata.SESSION_START_INFO_TAG, data)


def session_end() -> Summary:
    end = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS, end_time_secs=time.time())
    return _hparams_summary(metadata.SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_end_info=end))


def epoch_means(rows: Iterable[Mapping[str, Any]]) -> list[tuple[int, dict[str, float]]]:
    """(step, means) per evaluated epoch: each numeric key's mean over its training steps (as the report's
    last-epoch means: ``statistics.fmean``), ``time_epoch_s`` their summed time; at the epoch's test row's step."""
    rows = list(rows)
    out = []
    for epoch, step in sorted({r["epoch"]: r["step"] for r in rows if r.get("split") == "test"}.items()):
        train = [r for r in rows if r.get("split") == "train" and r["epoch"] == epoch]
        keys = {k for r in train for k, v in r.items() if _number(v) and k not in ("epoch", "step", "lr")}
        means = {k: statistics.fmean(r[k] for r in train if _number(r.get(k))) for k in sorted(keys) if "/" not in k}
        if any("time_step_ms" in r for r in train):
            means["time_epoch_s"] = sum(r.get("time_step_ms", 0.0) for r in train) / 1e3
        if means:
            out.append((step, means))
    return out


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def sweep_points(rows: Iterable[Mapping[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """A test-time sweep as curves, tag → [(step, value)]: acc, ``act_mem_mb``, ``time_ms`` against ``nfe_forward``
    (step = NFE, rounded); ``nfe_forward``, acc against tolerance 1e-k (step k; other tolerances left out there).
    The first solver's adaptive settings only: one line a run."""
    adaptive = [r for r in rows if r.get("tol") and _number(r.get("nfe_forward"))]
    solver = adaptive[0]["solver"] if adaptive else None
    adaptive = [r for r in adaptive if r["solver"] == solver]
    curves: dict[str, list[tuple[int, float]]] = {}
    tightest = {round(r["nfe_forward"]): r for r in sorted(adaptive, key=lambda r: -r["tol"])}  # one point an NFE
    for step, row in tightest.items():
        for key in ("acc", "act_mem_mb", "time_ms"):
            if _number(row.get(key)):
                curves.setdefault(f"{SWEEP}/{key} vs nfe_forward", []).append((step, row[key]))
    for row in adaptive:
        k = -math.log10(row["tol"])
        if abs(k - round(k)) < 1e-6:
            curves.setdefault(f"{SWEEP}/nfe_forward vs tol 1e-k", []).append((round(k), row["nfe_forward"]))
            curves.setdefault(f"{SWEEP}/acc vs tol 1e-k", []).append((round(k), row["acc"]))
    return {tag: sorted(points) for tag, points in curves.items()}


def scalar_summary(tag: str, value: float) -> Summary:
    return Summary(value=[Summary.Value(tag=tag, simple_value=float(value))])


def layout(notes: Mapping[str, str] | None = None, present: set[str] | None = None) -> layout_pb2.Layout:
    """Custom scalars: one quantity a chart (tags anchored: ``test/nfe_forward`` without its _min and _max),
    training as epoch means, the sweep's x axis named; ``notes`` (images, batch, seeds) end the titles. With
    ``present`` (the tags the runs have), charts that would be empty are left out."""
    notes = notes or {}
    train, test = notes.get("train", ""), notes.get("test", "")
    categories = {
        "Accuracy": [("test acc, one point per epoch" + test, "test/acc"),
                     ("train acc, epoch mean of augmented batches" + train, "train_epoch/acc")],
        "Loss": [("test loss (cross-entropy)" + test, "test/loss"),
                 ("train loss (cross-entropy), epoch mean" + train, "train_epoch/loss"),
                 ("train loss_total (what was minimised: + regularisers), epoch mean" + train,
                  "train_epoch/loss_total")],
        "NFE": [("train nfe_forward per step, epoch mean" + train, "train_epoch/nfe_forward"),
                ("train nfe_backward per step, epoch mean" + train, "train_epoch/nfe_backward"),
                ("test nfe_forward per batch" + test, "test/nfe_forward"),
                ("train rejected solver steps per step, epoch mean" + train, "train_epoch/steps_rejected")],
        "Regularisers (unweighted, epoch mean)": [(f"{key}{train}", f"train_epoch/{key}")
                                                  for key in ("reg_kinetic", "reg_jacobian", "reg_error")],
        "Memory": [("act_mem_mb: saved for backward, epoch mean" + train, "train_epoch/act_mem_mb"),
                   ("peak_mem_mb (CUDA only), epoch mean" + train, "train_epoch/peak_mem_mb")],
        "Time": [("time per epoch s (sum of training steps)" + train, "train_epoch/time_epoch_s"),
                 ("time_step_ms, epoch mean" + train, "train_epoch/time_step_ms"),
                 ("test time_ms per batch" + test, "test/time_ms")],
        "Test-time sweep (x axis: nfe_forward)": [
            ("acc against nfe_forward" + notes.get("sweep", ""), f"{SWEEP}/acc vs nfe_forward"),
            ("act_mem_mb against nfe_forward (a training step at that tolerance)" + train,
             f"{SWEEP}/act_mem_mb vs nfe_forward"),
            ("time_ms per batch against nfe_forward" + notes.get("sweep", ""), f"{SWEEP}/time_ms vs nfe_forward")],
        "Test-time sweep (x axis: k of tolerance 1e-k)": [
            ("nfe_forward against tolerance" + notes.get("sweep", ""), f"{SWEEP}/nfe_forward vs tol 1e-k"),
            ("acc against tolerance" + notes.get("sweep", ""), f"{SWEEP}/acc vs tol 1e-k")],
    }
    out = layout_pb2.Layout()
    for title, charts in categories.items():
        charts = [(name, tag) for name, tag in charts if present is None or tag in present]
        category = out.category.add(title=title) if charts else None
        for chart_title, tag in charts:
            category.chart.add(title=chart_title).multiline.tag.append(f"^{re.escape(tag)}$")
    return out


def layout_summary(notes: Mapping[str, str] | None = None, present: set[str] | None = None) -> Summary:
    meta = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="custom_scalars"))
    tensor = TensorProto(dtype=7, string_val=[layout(notes, present).SerializeToString()])  # 7: DT_STRING
    return Summary(value=[Summary.Value(tag="custom_scalars__config__", metadata=meta, tensor=tensor)])


def write_study(runs: list[Any], logdir: str | Path) -> None:
    """Every run's view rewritten from its files, and the grid's HParams experiment and chart layout in ``logdir``
    (``_report``). ``runs``: :class:`odenet.reports.Run` objects, taken as they are (reports sit above run files)."""
    configs, present = [run.config for run in runs], set()
    for run, name in zip(runs, trial_names(configs)):
        strip_views(run.path, VIEW)  # a run from before views had a file of their own
        view = EventsFile(run.path, VIEW)
        view.add(session_start(run.config, name))
        points = [(f"train_epoch/{k}", step, v) for step, means in epoch_means(run.rows) for k, v in means.items()]
        points += [(tag, step, v) for tag, curve in sweep_points(run.sweep).items() for step, v in curve]
        for tag, step, value in points:
            view.add(scalar_summary(tag, value), step)
        present |= {tag for tag, _, _ in points} | {f"test/{k}" for r in run.test_rows for k in r}
        if run.summary is not None:
            view.add(session_end())
        view.close()
    shared = EventsFile(logdir, VIEW)
    shared.add(experiment_summary(configs, _notes(runs, brief=True)))  # a row of the HParams table is one run
    shared.add(layout_summary(_notes(runs), present))
    shared.close()


def _notes(runs: list[Any], brief: bool = False) -> dict[str, str]:
    """What the numbers stand on, where the runs share it: "test": " (10,000 images, batch 1000, 1 seed)";
    ``brief`` (a table row is one run): "images": " (10,000 images)", "test" / "train": " (batch 1000)"."""
    def common(template: str, values: Iterable[Any]) -> str | None:
        found = {v for v in values if v is not None}
        return template.format(found.pop()) if len(found) == 1 else None

    def join(*parts: str | None) -> str:
        return f" ({', '.join(p for p in parts if p)})" if any(parts) else ""

    count = len({r.config.get("seed") for r in runs})
    seeds = None if brief else f"{count} seed{'s' if count != 1 else ''}"
    swept = [r.sweep_meta or {} for r in runs if r.sweep]
    images = common("{:,} images", (r.final_test().get("images") for r in runs)) or "each run's images"
    test, train = (common("batch {}", (r.config.get(key) for r in runs)) for key in ("test_batch_size", "batch_size"))
    if brief:
        return {"images": join(images), "test": join(test), "train": join(train)}
    return {"test": join(images, test, seeds), "train": join(train, seeds),
            "sweep": join(common("{:,} images", (m.get("images") for m in swept)),
                          common("batch {}", (m.get("batch_size") for m in swept)))}


def text_summary(tag: str, markdown: str) -> Summary:
    """A text-plugin summary under exactly ``tag`` (SummaryWriter.add_text appends "/text_summary")."""
    meta = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="text"))
    tensor = TensorProto(dtype=7, string_val=[markdown.encode()],  # 7: DT_STRING
                         tensor_shape=TensorShapeProto(dim=[TensorShapeProto.Dim(size=1)]))
    return Summary(value=[Summary.Value(tag=tag, metadata=meta, tensor=tensor)])


def tables_as_text(markdown: str) -> str:
    """Markdown with each table as an aligned monospace block (TensorBoard's text cards wrap a wide table's cells
    until it cannot be read; a code block scrolls)."""
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


def write_report(report: Any, logdir: str, prefix: str, images: bool = False) -> None:
    """A report (:class:`odenet.reports.Report`, taken as it is) as one text entry under tag ``prefix``, replacing
    an earlier report's: tables as monospace blocks, figures named by their PNG in report.html (whose path heads
    the text). ``images`` also writes the figures as images (the dynamics reports, which are about pictures);
    classifier grids and sweeps leave it off so Time Series opens on the scalars."""
    html = next((p for p in (Path(logdir) / "report.html", Path(logdir).parent / "report.html") if p.is_file()), None)
    head = f"Figures and the full report: `{html.resolve() if html else 'report.html'}`\n\n"
    body = re.sub(r"!\[([^]]*)\]\([^)]*\)", r"Figure `\1.png` (in report.html)", report.markdown())
    text = EventsFile(logdir, SWEEP_TEXT if prefix == "sweep" else REPORT_TEXT, alone={prefix})
    text.add(text_summary(prefix, head + tables_as_text(body)))
    text.close()
    if images:
        _write_images(report, logdir, prefix)


def _write_images(report: Any, logdir: str, prefix: str) -> None:
    import io

    import numpy as np
    from PIL import Image
    from torch.utils.tensorboard import SummaryWriter  # only the dynamics reports, which run with torch

    remove_events(logdir, ".images")  # the earlier report's figures
    with SummaryWriter(logdir, filename_suffix=".images") as writer:
        for name in report.figures:
            image = np.asarray(Image.open(io.BytesIO(report.png(name))).convert("RGB"))
            writer.add_image(f"{prefix}/{name}", image, global_step=0, dataformats="HWC")


def write_histograms(logdir: str, tag: str, series: list, labels: list[str]) -> None:
    """One histogram per entry of ``series`` under ``tag`` at step = its position (per-image NFE, a step per
    tolerance, loose to tight: the offset view stacks them), and a text entry ``<tag>/steps`` naming each step."""
    import numpy as np
    from torch.utils.tensorboard import SummaryWriter  # eval.py's per-sample pass, which runs with torch

    remove_events(logdir, None, {tag, f"{tag}/steps"})  # an earlier sweep's
    with SummaryWriter(logdir) as writer:
        for step, values in enumerate(series):
            writer.add_histogram(tag, np.asarray(values, dtype=np.float64), global_step=step)
        legend = "\n".join(f"- step {step}: {label}" for step, label in enumerate(labels))
        writer.file_writer.add_summary(text_summary(f"{tag}/steps", legend), 0)
