"""Reports from saved run directories alone: config.yaml, metrics.jsonl, summary.json, sweep.json.

Nothing here imports torch, so a report can be rebuilt anywhere from copied run directories.
Two reports exist, each a :class:`Report` of Markdown sections and matplotlib figures:

* :func:`combined_report` over many training runs (:mod:`.combined`, read by :mod:`.runs`, tables
  and ``sweep_points.csv`` in :mod:`.tables`): Table 1 of Chen et al. 2018 with the paper's rows
  beside the runs comparable with them, the four panels of its Figure 3, and accuracy / memory
  against NFE and tolerance, each stating the images and batch size behind its numbers;
* :func:`sweep_report` for one checkpoint's test-time tolerance sweep (:mod:`.sweep`, eval.py), with
  :func:`add_per_sample` adding ``eval.py --per-sample``'s section from per_sample.csv (:mod:`.per_sample`).

:func:`write_report` (:mod:`.render`) writes either as ``report.md``, a self-contained
``report.html`` (figures embedded as base64 PNG) and the PNG files.
"""

from odenet.reports.combined import combined_report, linear_fit
from odenet.reports.per_sample_report import (PER_SAMPLE_COLUMNS, add_per_sample, batching_tax, read_per_sample_csv,
                                       write_per_sample_csv)
from odenet.reports.render import Report, Section, fmt, md_table, png_bytes, write_report
from odenet.reports.runs import ReportError, Run, common_parent, find_runs, label_runs, load_run, run_status
from odenet.reports.sweep import SWEEP_COLUMNS, still_an_ode, sweep_report, tighter, write_sweep_files

__all__ = ["PER_SAMPLE_COLUMNS", "SWEEP_COLUMNS", "add_per_sample", "batching_tax", "read_per_sample_csv",
           "write_per_sample_csv", "Report", "ReportError", "Run", "Section", "combined_report", "common_parent",
           "find_runs", "fmt", "label_runs", "linear_fit", "load_run", "md_table", "png_bytes", "run_status",
           "still_an_ode", "sweep_report",
           "tighter", "write_report", "write_sweep_files"]
