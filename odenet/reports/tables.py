"""The combined report's tables: the runs table, Table 1 of Chen et al. 2018 beside the runs
comparable with it, and ``sweep_points.csv``, every run's test-time sweep as one tidy table.

Each table says what its numbers come from: dataset, epochs, batch sizes, test images, and a
status that marks smoke runs (limited batches, few epochs) so they are not read as results.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict

from odenet.naming import backprop
from odenet.reports.render import fmt, md_table
from odenet.reports.runs import Run, is_smoke
from odenet.reports.sweep import SWEEP_COLUMNS

# Chen et al. 2018, Table 1 (MNIST). Memory and time are the paper's asymptotic claims:
# L = number of layers, L~ = number of function evaluations.
PAPER_TABLE1 = {
    "mlp": {"error": "1.60%", "params": "0.24 M", "memory": "—", "time": "—"},
    "resnet": {"error": "0.41%", "params": "0.60 M", "memory": "O(L)", "time": "O(L)"},
    "rknet": {"error": "0.47%", "params": "0.22 M", "memory": "O(L~)", "time": "O(L~)"},
    "odenet": {"error": "0.42%", "params": "0.22 M", "memory": "O(1)", "time": "O(L~)"},
}
TABLE1_ORDER = ("mlp", "resnet", "rknet", "odenet")
PAPER_DATASET = "mnist"


def batches(run: Run) -> str:
    """"train/test" batch sizes from config.yaml."""
    return f"{fmt(run.config.get('batch_size'))}/{fmt(run.config.get('test_batch_size'))}"


def provenance(run: Run) -> list[str]:
    """Dataset, epochs, batch (train/test) and test images: the cells saying where a row's numbers come from."""
    return [run.dataset, fmt(run.epochs_done, "d"), batches(run), fmt(run.test_images, ",")]


PROVENANCE = ["dataset", "epochs", "batch (train/test)", "test images"]


def runs_table(runs: list[Run]) -> str:
    """One row per run: final test accuracy and the last epoch's mean measurements first, then where they come
    from (status, dataset, epochs, batches, images)."""
    header = ["run", "test acc", "nfe_forward", "nfe_backward", "act_mem_mb", "time_step_ms", "peak_mem_mb",
              "params", "best acc", "status", *PROVENANCE]
    rows = []
    for run in runs:
        means, test = run.last_epoch_means(), run.final_test()
        s = run.summary or {}
        rows.append([f"`{run.folder or run.name}`", fmt(test.get("acc")), fmt(means.get("nfe_forward"), ".1f"),
                     fmt(means.get("nfe_backward"), ".1f"), fmt(means.get("act_mem_mb"), ".1f"),
                     fmt(means.get("time_step_ms"), ".0f"), fmt(means.get("peak_mem_mb"), ".1f"),
                     fmt(s.get("params"), ","), fmt(s.get("best_acc")), run.status, *provenance(run)])
    return md_table(header, rows)


def comparable(run: Run) -> bool:
    """Whether a run's numbers may stand beside the paper's: MNIST, finished, not a smoke run."""
    return run.dataset == PAPER_DATASET and run.summary is not None and not is_smoke(run)


def _measured(run: Run) -> list[str]:
    means, test = run.last_epoch_means(), run.final_test()
    params = (run.summary or {}).get("params")
    return [fmt(100 * (1 - test["acc"]), ".2f") + "%" if test else "—",
            fmt(params / 1e6, ".3f") + " M" if params else "—", fmt(means.get("act_mem_mb"), ".1f"),
            fmt(means.get("peak_mem_mb"), ".1f"), fmt(means.get("time_step_ms"), ".0f"),
            fmt(means.get("nfe_forward"), ".1f")]


def table1(runs: list[Run]) -> tuple[str, str]:
    """Chen et al. 2018 Table 1: the paper's rows with the comparable runs under them, and a second
    table of the other runs (smoke, unfinished or another dataset), which have no paper numbers beside them.

    Returns:
        (Table 1, the table of other runs or "" when every run is comparable).
    """
    header = ["method", "source", "status", *PROVENANCE, "test error", "params", "act_mem_mb", "peak_mem_mb",
              "time_step_ms", "nfe_forward", "memory", "time"]
    by_backbone = defaultdict(list)
    for run in runs:
        by_backbone[run.config["backbone"]].append(run)
    rows, others = [], []
    for backbone in TABLE1_ORDER + tuple(b for b in sorted(by_backbone) if b not in TABLE1_ORDER):
        paper, ours = PAPER_TABLE1.get(backbone), by_backbone.get(backbone, [])
        if paper:
            source = "paper" if any(map(comparable, ours)) else "paper (no comparable run)"
            rows.append([backbone, source, "—", "mnist", "—", "—", "10,000", paper["error"], paper["params"],
                         "—", "—", "—", "—", paper["memory"], paper["time"]])
        for run in ours:
            row = [run.label, "measured", run.status, *provenance(run), *_measured(run)]
            (rows.append([*row, "—", "—"]) if comparable(run) else others.append(row))
    other = md_table(header[:-2], others) if others else ""
    return md_table(header, rows), other


POINT_COLUMNS = ("run", "backbone", "dataset", "method", "train_solver", "train_tol", "train_epochs", "status",
                 *SWEEP_COLUMNS, "batch_size", "act_mem_batch_size", "limited")


def sweep_points_csv(runs: list[Run]) -> str:
    """Every run's test-time sweep, one row per run × solver × tolerance (or steps), as CSV text.

    Tidy (one observation per row, one value per cell, missing values empty), so
    ``pandas.read_csv`` loads it without fix-ups.
    """
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(POINT_COLUMNS), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for run in runs:
        meta = run.sweep_meta
        for r in run.sweep:
            writer.writerow({**{k: r.get(k) for k in SWEEP_COLUMNS},
                             "run": run.folder or run.name, "backbone": run.config.get("backbone"),
                             "dataset": run.dataset, "method": backprop(run.config),
                             "train_solver": run.config.get("solver"), "train_tol": run.config.get("rtol"),
                             "train_epochs": run.epochs_done, "status": run.status,
                             "images": r.get("images", meta.get("images")), "batch_size": meta.get("batch_size"),
                             "act_mem_batch_size": meta.get("act_mem_batch_size"), "limited": meta.get("limited")})
    return out.getvalue()
