"""Reports from saved files alone (no torch), on run directories written by the test.

Every figure is checked by the data on its axes (lines, scatter points, reference lines, labels)
against values written out here from the synthetic rows, so a figure that plots nothing, the
wrong runs or the wrong keys fails.
"""

from __future__ import annotations

import ast
import base64
import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from odenet.errors import UserError
from odenet.reports import (ReportError, Run, combined_report, common_parent, find_runs, linear_fit, png_bytes,
                            still_an_ode, sweep_report, write_report)

ROOT = Path(__file__).resolve().parents[1]
FIG3 = ("fig3a_nfe_vs_error", "fig3b_nfe_vs_time", "fig3c_nfe_forward_vs_backward", "fig3d_nfe_over_training")
COMBINED_FIGURES = (*FIG3, "acc_vs_nfe", "acc_vs_tol", "memory_vs_nfe", "methods_pareto")
ADJ, DIR = "odenet dopri5 tol 0.001 adjoint", "odenet dopri5 tol 0.001 direct"  # the two ODE runs' labels
SWEPT = " (250 images, limited)"  # legend note of the direct run's test-time sweep
TESTED = " (1,000 test images)"  # legend note of the runs' final test evaluation
SWEEP_JSON_META = {"images": 250, "batch_size": 250, "limited": True, "train_test_images": 1000,
                   "act_mem_batch_size": 250}
TRAIN_NFE = [20, 26, 20, 32]  # steps 1-2 are epoch 1, steps 3-4 epoch 2


def write_run(root: Path, name: str, config: dict, rows: list[dict], summary: dict | None = None,
              sweep: list[dict] | None = None) -> Path:
    run = root / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if summary is not None:
        (run / "summary.json").write_text(json.dumps(summary))
    if sweep is not None:
        (run / "sweep.json").write_text(json.dumps({"meta": SWEEP_JSON_META, "rows": sweep}))
    return run


def ode_config(adjoint: bool, tol: float = 1e-3) -> dict:
    return {"backbone": "odenet", "dataset": "mnist-5k", "solver": "dopri5", "rtol": tol, "atol": tol,
            "tol": tol, "adjoint": adjoint, "steps": None, "seed": 0, **RECIPE}


RECIPE = {"epochs": 2, "batch_size": 32, "test_batch_size": 1000}


def train_rows(nfe: list[int], adjoint: bool, mem_per_nfe: float) -> list[dict]:
    rows = []
    for i, n in enumerate(nfe):
        rows.append({"split": "train", "epoch": 1 + i // 2, "step": i + 1, "loss": 1.0, "acc": 0.5,
                     "nfe_forward": n, "nfe_backward": (n + 6 if adjoint else 0), "act_mem_mb": 10 + mem_per_nfe * n,
                     "time_forward_ms": 2.0 * n + 5, "time_step_ms": 6.0 * n + 5})
    return rows


def write_runs(root: Path) -> Path:
    """A resnet, and an ODE-Net trained with direct backprop (with a test-time sweep) and with the adjoint."""
    test = lambda acc, nfe=None: {"split": "test", "epoch": 2, "step": 4, "acc": acc, "loss": 0.3,  # noqa: E731
                                  "images": 1000, **({"nfe_forward": nfe} if nfe else {})}
    write_run(root, "resnet-s0", {"backbone": "resnet", "dataset": "mnist-5k", "solver": None, "seed": 0, **RECIPE},
              [*({"split": "train", "epoch": 1 + i // 2, "step": i + 1, "act_mem_mb": 20.0, "time_step_ms": 50.0}
                 for i in range(4)), test(0.97)], {"params": 576778, "best_acc": 0.97})
    write_run(root, "odenet-direct", ode_config(False), [*train_rows(TRAIN_NFE, False, 2.5), test(0.96, 20)],
              {"params": 208266, "best_acc": 0.96},
              sweep=[{"solver": "dopri5", "tol": t, "acc": a, "nfe_forward": n, "ode_error": e, "time_ms": ms}
                     for t, a, n, e, ms in ((1e-3, .96, 20, 6e-4, 12.0), (1e-1, .90, 14, 3e-3, 9.0),
                                            (1e-5, .97, 38, 9e-5, 21.0))])
    write_run(root, "odenet-adjoint", ode_config(True), [*train_rows(TRAIN_NFE, True, 0.0), test(0.95, 20)],
              None)  # no summary: an interrupted run
    return root


@pytest.fixture
def runs_root(tmp_path) -> Path:
    return write_runs(tmp_path / "sweep")


# --------------------------------------------------------------------------- reading a figure's data

def axes_of(figure):
    assert len(figure.axes) == 1
    return figure.axes[0]


def lines(ax) -> dict[str, tuple[list[float], list[float]]]:
    """label → (x, y) of every line on the axes (axhline: x is [0, 1] in axes coordinates)."""
    out = {line.get_label(): ([float(x) for x in line.get_xdata()], [float(y) for y in line.get_ydata()])
           for line in ax.get_lines()}
    assert len(out) == len(ax.get_lines()), "two lines share a label"
    return out


def points(ax) -> dict[str, list[tuple[float, float]]]:
    """label → (x, y) offsets of every scatter on the axes."""
    out = {c.get_label(): [tuple(map(float, p)) for p in c.get_offsets()] for c in ax.collections}
    assert len(out) == len(ax.collections), "two scatters share a label"
    return out


def hline(y: float) -> tuple[list[float], list[float]]:
    return [0.0, 1.0], [y, y]


def assert_series(actual: dict, expected: dict) -> None:
    assert sorted(actual) == sorted(expected)
    for label, want in expected.items():
        if isinstance(want, tuple):  # a line: (x, y)
            assert actual[label][0] == pytest.approx(want[0]), f"{label}: x"
            assert actual[label][1] == pytest.approx(want[1]), f"{label}: y"
        else:  # a scatter: [(x, y), ...]
            assert [p for pt in actual[label] for p in pt] == pytest.approx([p for pt in want for p in pt]), label


def annotations(ax) -> dict[str, tuple[float, float]]:
    return {t.get_text(): tuple(map(float, t.xy)) for t in ax.texts if hasattr(t, "xy")}


def notes(ax) -> list[str]:
    return [t.get_text() for t in ax.texts if not hasattr(t, "xy")]


# --------------------------------------------------------------------------- combined report: figures

@pytest.fixture(scope="module")
def combined(tmp_path_factory):
    """The combined report's axes by figure name, built once (the tests only read them)."""
    runs = find_runs([write_runs(tmp_path_factory.mktemp("runs") / "sweep")])
    return {name: axes_of(fig) for name, fig in combined_report(runs).figures.items()}


def test_combined_report_has_every_figure(combined):
    assert list(combined) == list(COMBINED_FIGURES)


def test_fig3a_plots_the_sweep_error_against_nfe_loose_to_tight(combined):
    ax = combined["fig3a_nfe_vs_error"]
    assert_series(lines(ax), {DIR + SWEPT: ([14, 20, 38], [3e-3, 6e-4, 9e-5])})
    assert points(ax) == {} and ax.get_yscale() == "log" and notes(ax) == []
    assert annotations(ax) == {"0.1": (14, 3e-3), "0.001": (20, 6e-4), "1e-05": (38, 9e-5)}


def test_fig3b_plots_the_sweep_time_against_nfe(combined):
    ax = combined["fig3b_nfe_vs_time"]
    assert_series(lines(ax), {DIR + SWEPT: ([14, 20, 38], [9.0, 12.0, 21.0])})
    assert points(ax) == {}


def test_fig3b_without_sweeps_plots_every_ode_runs_training_steps(runs_root):
    (runs_root / "odenet-direct" / "sweep.json").unlink()
    ax = axes_of(combined_report(find_runs([runs_root])).figures["fig3b_nfe_vs_time"])
    steps = [(n, 2.0 * n + 5) for n in TRAIN_NFE]  # time_forward_ms of train_rows
    assert_series(points(ax), {f"{ADJ} (batch 32)": steps, f"{DIR} (batch 32)": steps})
    assert lines(ax) == {}


def test_fig3c_plots_the_adjoint_runs_backward_against_forward_nfe(combined):
    ax = combined["fig3c_nfe_forward_vs_backward"]
    # the direct run has no backward NFE
    assert_series(points(ax), {f"{ADJ} (batch 32)": [(n, n + 6) for n in TRAIN_NFE]})
    top = 32 + 6
    assert_series(lines(ax), {"backward = forward": ([0, top], [0, top]),
                              "backward = forward / 2 (paper)": ([0, top], [0, top / 2])})


def test_fig3d_plots_mean_nfe_per_epoch_of_the_ode_runs(combined):
    ax = combined["fig3d_nfe_over_training"]
    forward = ([1, 2], [(20 + 26) / 2, (20 + 32) / 2])
    assert_series(lines(ax), {f"{ADJ} forward": forward, f"{ADJ} backward": ([1, 2], [(26 + 32) / 2, (26 + 38) / 2]),
                              f"{DIR} forward": forward})


def test_acc_vs_nfe_plots_ode_runs_as_points_and_the_resnet_as_a_line(combined):
    ax = combined["acc_vs_nfe"]
    assert_series(points(ax), {ADJ + TESTED: [(20, 0.95)], DIR + TESTED: [(20, 0.96)]})
    assert_series(lines(ax), {"resnet (no ODE)" + TESTED: hline(0.97)})
    assert ax.get_xlim() == pytest.approx((17, 23))  # one NFE value: padded, not a 19.9–20.1 axis


def test_acc_vs_tol_plots_training_tolerances_and_the_sweep(combined):
    ax = combined["acc_vs_tol"]
    # Each run its own marker at its training tolerance; lines only along one run's sweep, never across runs.
    assert_series(points(ax), {f"{ADJ}: trained at this tolerance" + TESTED: [(1e-3, 0.95)],
                               f"{DIR}: trained at this tolerance" + TESTED: [(1e-3, 0.96)]})
    assert_series(lines(ax), {f"{DIR}: evaluated at other tolerances{SWEPT}": ([1e-5, 1e-3, 1e-1],
                                                                               [0.97, 0.96, 0.90])})
    colours = {c.get_label(): tuple(c.get_facecolor()[0]) for c in ax.collections}
    line = next(line for line in ax.get_lines())
    import matplotlib.colors as mcolors
    assert mcolors.to_rgba(line.get_color()) == colours[f"{DIR}: trained at this tolerance" + TESTED]
    assert ax.get_xscale() == "log"


def test_memory_vs_nfe_plots_each_training_step_and_the_resnets_mean(combined):
    ax = combined["memory_vs_nfe"]
    assert_series(points(ax), {f"{ADJ} (batch 32)": [(n, 10.0) for n in TRAIN_NFE],
                               f"{DIR} (batch 32)": [(n, 10 + 2.5 * n) for n in TRAIN_NFE]})
    assert_series(lines(ax), {"resnet (fixed depth, batch 32)": hline(20.0)})


def test_figures_of_runs_without_an_ode_block_are_empty_and_say_why(runs_root):
    figures = combined_report(find_runs([runs_root / "resnet-s0"])).figures
    for name in (n for n in FIG3 if n != "fig3c_nfe_forward_vs_backward"):
        ax = axes_of(figures[name])
        assert lines(ax) == {} and points(ax) == {} and len(notes(ax)) == 1, name
    assert "fig3c_nfe_forward_vs_backward" not in figures  # no empty panel without adjoint runs


def test_a_sweep_over_several_solvers_draws_one_line_per_solver():
    from odenet.reports.combined import fig3a, fig_acc_vs_tol

    cfg = {"backbone": "odenet", "solver": "dopri5", "rtol": 1e-3, "atol": 1e-3, "adjoint": False, "steps": None}
    sweep = [{"solver": solver, "tol": tol, "acc": acc, "nfe_forward": nfe, "ode_error": tol, "time_ms": nfe / 3}
             for solver, tol, acc, nfe in [("dopri5", 1e-1, .95, 14), ("dopri5", 1e-3, .99, 26),
                                           ("dopri5", 1e-5, .99, 50), ("bosh3", 1e-1, .90, 8),
                                           ("bosh3", 1e-3, .98, 40)]]
    run = Run(Path("r"), cfg, [{"split": "test", "epoch": 1, "step": 1, "acc": 0.99}], {"params": 1}, sweep)
    old = " (images not recorded)"  # a sweep.json written before its meta recorded the images
    assert_series(lines(axes_of(fig3a([run]))),
                  {"odenet dopri5 tol 0.001 direct" + old: ([14, 26, 50], [1e-1, 1e-3, 1e-5]),
                   "odenet dopri5 tol 0.001 direct, evaluated with bosh3" + old: ([8, 40], [1e-1, 1e-3])})
    ax = axes_of(fig_acc_vs_tol([run]))
    assert_series(points(ax), {"odenet dopri5 tol 0.001 direct: trained at this tolerance (test images not recorded)":
                               [(1e-3, 0.99)]})
    assert_series(lines(ax), {"odenet dopri5 tol 0.001 direct: evaluated at other tolerances" + old:
                                  ([1e-5, 1e-3, 1e-1], [.99, .99, .95]),
                              "odenet dopri5 tol 0.001 direct: evaluated with bosh3 at other tolerances" + old:
                                  ([1e-3, 1e-1], [.98, .90])})


# --------------------------------------------------------------------------- combined report: text and files

def test_combined_report_has_table1_and_the_four_figure3_panels(runs_root):
    md = combined_report(find_runs([runs_root])).markdown()
    table1, others = md.split("## Table 1 (Chen et al. 2018)")[1].split("## Figure 3")[0].split("Runs not comparable")
    # mnist-5k short runs (2 epochs) never stand beside the paper's numbers: the paper's rows alone in Table 1
    assert "| odenet | paper (no comparable run) | — | mnist | — | — | 10,000 | 0.42% | 0.22 M |" in table1
    assert "| mlp | paper (no comparable run) |" in table1 and "| measured |" not in table1
    assert ("| odenet dopri5 tol 0.001 adjoint | measured | incomplete, short (2 epochs) | mnist-5k | 2 | 32/1000 | "
            "1,000 | 5.00% |") in others
    assert ("| resnet | measured | complete, short (2 epochs) | mnist-5k | 2 | 32/1000 | 1,000 | 3.00% | "
            "0.577 M |") in others
    for name in FIG3:
        assert f"![{name}]({name}.png)" in md


def test_findings_state_measured_ratios_and_slopes(runs_root):
    md = combined_report(find_runs([runs_root])).markdown()
    ratios = [(n + 6) / n for n in TRAIN_NFE]
    median = sorted(ratios)[1:3]
    assert f"backward/forward NFE ratio median {sum(median) / 2:.2f}" in md
    assert "`odenet-direct`: act_mem_mb (training batch 32) grows by 2.500 MiB per extra forward NFE" in md
    assert "`odenet-adjoint`: act_mem_mb (training batch 32) grows by 0.000 MiB per extra forward NFE" in md
    per_nfe = sorted((2.0 * n + 5) / n for n in TRAIN_NFE[1:])  # steps 2-4: the first is warm-up
    assert f"forward pass {per_nfe[1]:.2f} ms per NFE (median over 3 steps" in md
    assert ("`odenet-direct` (test-time sweep (250 images, limited)): accuracy at the training tolerance 0.001: "
            "96.00%; at 1e-05: 97.00%") in md
    assert "**No verdict**: 250 test images; a verdict needs at least 500" in md


def test_html_report_is_one_self_contained_file_with_the_pngs_written(runs_root, tmp_path):
    report = combined_report(find_runs([runs_root]))
    written = write_report(report, tmp_path / "out")
    html = written["report.html"].read_text()
    assert written["report.md"].read_text() == report.markdown()
    assert html.count("data:image/png;base64,") == len(COMBINED_FIGURES)
    assert 'src="fig' not in html and "<table>" in html
    for name in COMBINED_FIGURES:  # each figure rendered once: the file and the HTML hold the same PNG
        png = written[name].read_bytes()
        assert png.startswith(b"\x89PNG") and png == report.png(name)
        assert report.png(name) is report.png(name)  # kept on the report, not rendered again
        assert base64.b64encode(png).decode() in html
    assert png_bytes(report.figures["acc_vs_nfe"]).startswith(b"\x89PNG")


def test_report_cli_runs_without_torch(runs_root, tmp_path):
    code = ("import sys; sys.modules['torch'] = None; from odenet.cli import report_main; "
            f"raise SystemExit(report_main([{str(runs_root)!r}, '--out', {str(tmp_path / 'out')!r}]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "report.html").is_file()


def test_no_module_of_the_reports_package_imports_torch():
    for path in (ROOT / "odenet" / "reports").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):  # function bodies too
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] == "torch" for n in names), f"{path.name} imports {names}"


def test_common_parent_is_the_deepest_folder_holding_every_run(tmp_path):
    assert common_parent([tmp_path / "a" / "r1", tmp_path / "a" / "r2"]) == (tmp_path / "a").resolve()
    assert common_parent([tmp_path / "a" / "r1", tmp_path / "b" / "c" / "r2"]) == tmp_path.resolve()


# --------------------------------------------------------------------------- reading run directories

def test_report_refuses_folders_without_runs(tmp_path):
    with pytest.raises(ReportError, match="no run directories"):
        find_runs([tmp_path])
    with pytest.raises(ReportError, match="does not exist"):
        find_runs([tmp_path / "nope"])


def test_torn_last_metrics_line_is_ignored_but_damage_is_not(runs_root):
    path = runs_root / "odenet-direct" / "metrics.jsonl"
    path.write_text(path.read_text() + '{"split": "tr')
    assert len(find_runs([runs_root / "odenet-direct"])[0].rows) == 5
    path.write_text('{"split": "tr\n' + path.read_text())
    with pytest.raises(ReportError, match="line 1 is not JSON"):
        find_runs([runs_root / "odenet-direct"])
    assert issubclass(ReportError, UserError)  # entry points turn it into exit status 2


# --------------------------------------------------------------------------- the sweep report

def sweep_row(solver: str | None, tol: float | None, steps: int | None, acc: float, nfe: float, flops: float,
              ode_error: float | None, time_ms: float) -> dict:
    return {"solver": solver, "tol": tol, "atol": tol, "steps": steps, "acc": acc, "loss": 0.3, "nfe_forward": nfe,
            "nfe_forward_min": nfe, "nfe_forward_max": nfe, "ode_error": ode_error, "time_ms": time_ms,
            "flops": flops}


SWEEP = [  # solver, tol, steps, acc, nfe, flops, ode_error, time_ms; out of order on purpose
    ("dopri5", 1e-3, None, .96, 26, 3e6, 6e-4, 15.0), ("rk4", None, 8, .94, 32, 3.5e6, 1e-3, 18.0),
    ("dopri5", 1e-1, None, .90, 14, 2e6, 3e-3, 9.0), ("bosh3", 1e-3, None, .95, 40, 4e6, None, 22.0),
    ("dopri5", 1e-5, None, .97, 50, 5e6, 9e-5, 28.0), ("rk4", None, 4, .92, 16, 2e6, 2e-3, 10.0),
    ("bosh3", 1e-1, None, .88, 8, 1e6, 5e-3, 6.0),
]
SWEEP_META = {"checkpoint": "runs/o/last.pt", "backbone": "odenet", "dataset": "mnist", "images": 100,
              "device": "cpu", "train_setting": "dopri5 tol 0.001 (direct)", "reference": "dopri5 tol 1e-07",
              "still_an_ode": None}


@pytest.fixture(scope="module")
def sweep_axes():
    report = sweep_report(SWEEP_META, [sweep_row(*r) for r in SWEEP])
    return {name: axes_of(fig) for name, fig in report.figures.items()}


def test_sweep_report_has_every_figure(sweep_axes):
    assert sorted(sweep_axes) == ["acc_vs_tol", "fig3a_nfe_vs_error", "fig3b_nfe_vs_time", "flops_vs_tol",
                                  "nfe_vs_tol"]


@pytest.mark.parametrize("name, values", [
    ("acc_vs_tol", {"dopri5": [.90, .96, .97], "bosh3": [.88, .95]}),
    ("nfe_vs_tol", {"dopri5": [14, 26, 50], "bosh3": [8, 40]}),
    ("flops_vs_tol", {"dopri5": [2e6, 3e6, 5e6], "bosh3": [1e6, 4e6]}),
])
def test_sweep_figures_against_tolerance_plot_each_adaptive_solver(sweep_axes, name, values):
    ax = sweep_axes[name]  # fixed-step rk4 has no tolerance, so no line here
    tols = {"dopri5": [1e-1, 1e-3, 1e-5], "bosh3": [1e-1, 1e-3]}
    assert_series(lines(ax), {s: (tols[s], ys) for s, ys in values.items()})
    assert ax.get_xscale() == "log" and ax.get_yscale() == ("log" if name == "flops_vs_tol" else "linear")


def test_sweep_fig3a_plots_error_against_nfe_for_each_solver(sweep_axes):
    ax = sweep_axes["fig3a_nfe_vs_error"]  # bosh3 at 1e-3 has no ode_error
    assert_series(lines(ax), {"dopri5": ([14, 26, 50], [3e-3, 6e-4, 9e-5]), "bosh3": ([8], [5e-3]),
                              "rk4": ([16, 32], [2e-3, 1e-3])})
    assert ax.get_yscale() == "log"
    assert annotations(ax)["4 st"] == (16, 2e-3) and annotations(ax)["8 st"] == (32, 1e-3)


def test_sweep_fig3b_plots_time_against_nfe_for_each_solver(sweep_axes):
    ax = sweep_axes["fig3b_nfe_vs_time"]
    assert_series(lines(ax), {"dopri5": ([14, 26, 50], [9.0, 15.0, 28.0]), "bosh3": ([8, 40], [6.0, 22.0]),
                              "rk4": ([16, 32], [10.0, 18.0])})
    assert list(ax.collections) == []  # no min/max in these rows: no error bars drawn
    assert ax.get_title().endswith("\n100 images")  # every number's images, under the title


def test_sweep_report_of_a_resnet_has_one_row_and_no_ode_verdict():
    meta = {"checkpoint": "runs/r/last.pt", "backbone": "resnet", "dataset": "mnist", "images": 100,
            "device": "cpu", "still_an_ode": None}
    report = sweep_report(meta, [{"solver": None, "tol": None, "steps": None, "acc": 0.9, "loss": 0.3,
                                  "time_ms": 5.0, "flops": 1e6}])
    md = report.markdown()
    assert "Not applicable (no ODE block)" in md and md.count("| — | — | 0.9 |") == 1
    assert report.figures == {}


@pytest.mark.parametrize("acc_tight, flagged", [(0.95, False), (0.93, True)])
def test_still_an_ode_flags_a_drop_of_more_than_one_point(acc_tight, flagged):
    rows = [{"solver": "dopri5", "tol": 1e-3, "acc": 0.95, "images": 1000},
            {"solver": "dopri5", "tol": 1e-5, "acc": acc_tight, "images": 1000}]
    verdict = still_an_ode(rows, 1e-3, "dopri5", "mnist")
    assert verdict["flagged"] is flagged
    assert ("learned the discretisation, not an ODE" in verdict["text"]) is flagged
    assert still_an_ode(rows, 1e-2, "dopri5", "mnist") is None


@pytest.mark.parametrize("dataset, acc, images, why", [
    ("mnist-5k", 0.12, 1000, "within 25 points of chance (10% on mnist-5k)"),  # the 1-epoch smoke grid
    ("cifar100", 0.20, 1000, "within 25 points of chance (1% on cifar100)"),
    ("mnist", 0.95, 250, "250 test images; a verdict needs at least 500"),  # the demo's limited sweep
    ("mnist", 0.95, None, "an unknown number of test images"),
    ("imagenet", 0.95, 1000, "chance accuracy of dataset 'imagenet' is unknown"),
])
def test_still_an_ode_gives_no_verdict_without_evidence(dataset, acc, images, why):
    rows = [{"solver": "dopri5", "tol": 1e-3, "acc": acc, "images": images},
            {"solver": "dopri5", "tol": 1e-5, "acc": acc, "images": images}]
    verdict = still_an_ode(rows, 1e-3, "dopri5", dataset)
    assert verdict["flagged"] is None and "**No verdict**" in verdict["text"] and why in verdict["text"]
    assert "behaves as an ODE" not in verdict["text"]


def test_sweep_report_withholds_a_verdict_saved_before_the_evidence_rule():
    saved = {"train_tol": 1e-3, "tight_tol": 1e-5, "acc_train_tol": 0.12, "acc_tight_tol": 0.12, "drop_points": 0.0,
             "flagged": False, "text": "accuracy ... Accuracy holds: the trained model behaves as an ODE"}
    md = sweep_report({**SWEEP_META, "dataset": "mnist", "images": 1000, "still_an_ode": saved},
                      [sweep_row(*r) for r in SWEEP]).markdown()
    assert "behaves as an ODE" not in md and "**No verdict**: accuracy 12.0% is within 25 points of chance" in md


def test_linear_fit():
    assert linear_fit([1, 2, 3], [3, 5, 7]) == pytest.approx((2.0, 1.0))
    assert linear_fit([2, 2], [1, 3]) is None


def test_run_label():
    run = Run(Path("x"), ode_config(True, 1e-5), [], None)
    assert run.label == "odenet dopri5 tol 1e-05 adjoint" and run.is_ode and run.adjoint


# --------------------------------------------------------------------------- provenance, labels, spread

def test_runs_that_mix_datasets_or_share_names_get_labels_that_tell_them_apart(tmp_path):
    for sweep, dataset in (("a", "fashion-mnist"), ("b", "mnist-5k")):
        write_run(tmp_path / sweep, "resnet-s0", {"backbone": "resnet", "dataset": dataset, "solver": None, **RECIPE},
                  [{"split": "test", "epoch": 2, "step": 4, "acc": 0.9, "loss": 0.3, "images": 1000}], {"params": 1})
        for name in ("o1", "o2"):  # same label, same dataset: only the folder tells them apart
            write_run(tmp_path / sweep, name, {**ode_config(False), "dataset": dataset},
                      [{"split": "test", "epoch": 2, "step": 4, "acc": 0.9, "loss": 0.3, "images": 1000,
                        "nfe_forward": 20}], {"params": 1})
    report = combined_report(find_runs([tmp_path / "a", tmp_path / "b"]))
    labels = sorted(points(axes_of(report.figures["acc_vs_nfe"])))
    assert labels == sorted(f"{DIR} [{d}] ({s}/{n}){TESTED}" for s, d in (("a", "fashion-mnist"), ("b", "mnist-5k"))
                            for n in ("o1", "o2"))
    runs = report.sections[0].text
    assert "| complete, short (2 epochs) | fashion-mnist | 2 | 32/1000 | 1,000 |" in runs
    assert "| complete, short (2 epochs) | mnist-5k | 2 | 32/1000 | 1,000 |" in runs
    assert "| `a/resnet-s0` | 0.9 |" in runs and "| `b/resnet-s0` | 0.9 |" in runs  # key columns first


def test_smoke_runs_say_so_in_the_status_column(tmp_path):
    write_run(tmp_path, "smoke", {**ode_config(False), "epochs": 20, "limit_train_batches": 5,
                                  "limit_test_batches": 1}, train_rows(TRAIN_NFE, False, 1.0), {"params": 1})
    write_run(tmp_path, "full", {**ode_config(False), "dataset": "mnist", "epochs": 20},
              [*train_rows(TRAIN_NFE, False, 1.0), {"split": "test", "epoch": 20, "step": 9, "acc": 0.99,
                                                     "images": 10000}], {"params": 1})
    md = combined_report(find_runs([tmp_path])).markdown()
    assert "| complete, smoke (5 train batches/epoch, 1 test batch) | mnist-5k | 2 |" in md
    table1 = md.split("## Table 1")[1].split("Runs not comparable")[0]
    assert "| odenet | paper | — | mnist |" in table1  # the full MNIST run stands beside the paper's row
    assert f"| {DIR} [mnist] | measured | complete | mnist | 20 | 32/1000 | 10,000 | 1.00% |" in table1
    assert ", smoke" not in table1 and ", short" not in table1


def test_a_budgeted_run_of_full_sized_epochs_is_short_not_smoke():
    from odenet.reports.runs import run_status

    study = {"epochs": 3, "limit_train_batches": 235}   # the study's 30,080-image epochs
    assert run_status(study, True) == "complete, short (235 train batches/epoch, 3 epochs)"
    assert run_status({"epochs": 20, "limit_train_batches": 99}, True) == "complete, smoke (99 train batches/epoch)"
    assert run_status({"epochs": 20, "limit_train_batches": 300, "limit_test_batches": 2}, True) == \
        "complete, smoke (300 train batches/epoch, 2 test batches)"


def test_sweep_points_csv_is_tidy_one_row_per_run_and_setting(runs_root, tmp_path):
    import csv

    written = write_report(combined_report(find_runs([runs_root])), tmp_path / "out")
    with written["sweep_points.csv"].open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["run"], r["method"], r["solver"], float(r["tol"]), float(r["acc"])) for r in rows] == [
        ("odenet-direct", "direct", "dopri5", t, a) for t, a in ((1e-3, .96), (1e-1, .90), (1e-5, .97))]
    assert {(r["dataset"], r["images"], r["batch_size"], r["limited"], r["steps"]) for r in rows} == {
        ("mnist-5k", "250", "250", "True", "")}
    pandas = pytest.importorskip("pandas")
    frame = pandas.read_csv(written["sweep_points.csv"])
    assert frame.shape == (3, len(rows[0])) and frame["tol"].dtype == float and frame["images"].dtype == int


def test_time_columns_show_the_spread_and_flag_noisy_timings():
    from odenet.reports.sweep import sweep_figures

    rows = [{**sweep_row("dopri5", tol, None, .9, nfe, 1e6, 1e-3, ms), "time_ms_min": lo, "time_ms_max": hi,
             "time_noisy": noisy}
            for tol, nfe, ms, lo, hi, noisy in ((1e-1, 14, 9.0, 8.5, 9.5, False), (1e-3, 26, 15.0, 10.0, 30.0, True))]
    md = sweep_report({**SWEEP_META, "images": 250, "limited": True, "train_test_images": 1000, "batch_size": 250,
                       "act_mem_batch_size": 250, "timing": {"warmup": 2, "repeats": 5},
                       "notes": ["dopri8 in float32 cannot reach tol 1e-9."]}, rows).markdown()
    assert "| 9.0 (8.5–9.5) |" in md and "| 15.0 (10.0–30.0) ⚠ noisy |" in md
    assert ("250 test images (**limited**: training's evaluation used 1,000); batch 250; `act_mem_mb` at batch 250; "
            "`time_ms`: median (min–max) of 5 repeats after 2 warm-up.") in md
    assert "**Note:** dopri8 in float32 cannot reach tol 1e-9." in md
    ax = axes_of(sweep_figures(rows, "250 images, limited")["fig3b_nfe_vs_time"])
    assert_series(lines(ax), {"dopri5": ([14, 26], [9.0, 15.0])})
    (bars,) = ax.collections  # one vertical bar per point, from min to max
    assert [[tuple(map(float, p)) for p in seg] for seg in bars.get_segments()] == [[(14, 8.5), (14, 9.5)],
                                                                                    [(26, 10.0), (26, 30.0)]]
    assert ax.get_title() == "Fig. 3b: NFE vs forward time\n250 images, limited"


def test_sweep_point_labels_alternate_above_and_below(sweep_axes):
    offsets = [t.xyann[1] for t in sweep_axes["fig3a_nfe_vs_error"].texts if t.get_text() in ("0.1", "0.001", "1e-05")
               and t.get_color() == sweep_axes["fig3a_nfe_vs_error"].get_lines()[0].get_color()]
    assert offsets == [5, -11, 5]


def test_fig3d_tells_identical_lines_apart_and_ticks_whole_epochs(combined):
    ax = combined["fig3d_nfe_over_training"]
    by_label = {line.get_label(): line for line in ax.get_lines()}
    adj, direct = by_label[f"{ADJ} forward"], by_label[f"{DIR} forward"]
    assert adj.get_ydata().tolist() == direct.get_ydata().tolist()  # the same NFE: drawn on top of each other
    assert adj.get_marker() != direct.get_marker() and adj.get_markersize() > direct.get_markersize()
    assert direct.get_markerfacecolor() == "none"  # hollow: the marker behind shows through
    assert all(float(t).is_integer() for t in ax.get_xticks())


def test_html_tables_scroll_in_their_own_box(runs_root, tmp_path):
    html = write_report(combined_report(find_runs([runs_root])), tmp_path / "out")["report.html"].read_text()
    assert html.count("<div class='scroll'><table>") == html.count("<table>") >= 3
    assert ".scroll{overflow-x:auto" in html and "white-space:nowrap" in html
    assert "| — |" in html or "<td>—</td>" in html
    assert "<td>-</td>" not in html and "<td>—</td>" in html  # one glyph for missing, the paper's rows too


def test_methods_table_and_pareto_plot_read_the_runs(tmp_path):
    """The study's methods: a plain and a regularised ODE-Net, their rows, CSV and the frontier's points."""
    from odenet.reports.methods import fig_pareto, methods_csv, pareto

    def run(name, reg, acc, nfe):
        config = {"backbone": "odenet", "dataset": "mnist-5k", "solver": "dopri5", "rtol": 1e-3, "adjoint": False,
                  "kinetic_reg": reg, "batch_size": 32, "epochs": 1}
        rows = [{"split": "train", "epoch": 1, "step": s, "nfe_forward": nfe + 2, "nfe_backward": 0.0,
                 "time_step_ms": 100.0, "act_mem_mb": 10.0} for s in (1, 2)]
        rows.append({"split": "test", "epoch": 1, "step": 2, "acc": acc, "nfe_forward": nfe, "images": 1000})
        return Run(tmp_path / name, config, rows, {"params": 5}, [])

    runs = [run("plain", 0.0, 0.9, 26.0), run("kin", 0.01, 0.88, 20.0)]
    lines = list(csv.DictReader(io.StringIO(methods_csv(runs))))
    assert [(r["method"], float(r["nfe_forward"]), float(r["time_epoch_s"])) for r in lines] == [
        ("plain", 26.0, 0.2), ("kinetic 0.01", 20.0, 0.2)]
    fig = fig_pareto(runs)
    ax = fig.axes[0]
    assert sorted(tuple(c.get_offsets()[0]) for c in ax.collections) == [(20.0, 0.88), (26.0, 0.9)]
    frontier = [line for line in ax.get_lines() if line.get_label().startswith("Pareto frontier")][0]
    assert list(zip(frontier.get_xdata(), frontier.get_ydata())) == [(20.0, 0.88), (26.0, 0.9)]
    assert pareto([(1, 0.5), (2, 0.4), (3, 0.9)]) == [(1, 0.5), (3, 0.9)]
