"""Reports from saved files alone (no torch), on run directories written by the test.

Every figure is checked by the data on its axes (lines, scatter points, reference lines, labels)
against values written out here from the synthetic rows, so a figure that plots nothing, the
wrong runs or the wrong keys fails.
"""

from __future__ import annotations

import ast
import base64
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
COMBINED_FIGURES = (*FIG3, "acc_vs_nfe", "acc_vs_tol", "memory_vs_nfe")
ADJ, DIR = "odenet dopri5 tol 0.001 adjoint", "odenet dopri5 tol 0.001 direct"  # the two ODE runs' labels
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
        (run / "sweep.json").write_text(json.dumps({"meta": {}, "rows": sweep}))
    return run


def ode_config(adjoint: bool, tol: float = 1e-3) -> dict:
    return {"backbone": "odenet", "dataset": "mnist-5k", "solver": "dopri5", "rtol": tol, "atol": tol,
            "tol": tol, "adjoint": adjoint, "steps": None, "seed": 0}


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
                                  **({"nfe_forward": nfe} if nfe else {})}
    write_run(root, "resnet-s0", {"backbone": "resnet", "dataset": "mnist-5k", "solver": None, "seed": 0},
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
    assert_series(lines(ax), {DIR: ([14, 20, 38], [3e-3, 6e-4, 9e-5])})
    assert points(ax) == {} and ax.get_yscale() == "log" and notes(ax) == []
    assert annotations(ax) == {"0.1": (14, 3e-3), "0.001": (20, 6e-4), "1e-05": (38, 9e-5)}


def test_fig3b_plots_the_sweep_time_against_nfe(combined):
    ax = combined["fig3b_nfe_vs_time"]
    assert_series(lines(ax), {DIR: ([14, 20, 38], [9.0, 12.0, 21.0])})
    assert points(ax) == {}


def test_fig3b_without_sweeps_plots_every_ode_runs_training_steps(runs_root):
    (runs_root / "odenet-direct" / "sweep.json").unlink()
    ax = axes_of(combined_report(find_runs([runs_root])).figures["fig3b_nfe_vs_time"])
    steps = [(n, 2.0 * n + 5) for n in TRAIN_NFE]  # time_forward_ms of train_rows
    assert_series(points(ax), {ADJ: steps, DIR: steps})
    assert lines(ax) == {}


def test_fig3c_plots_the_adjoint_runs_backward_against_forward_nfe(combined):
    ax = combined["fig3c_nfe_forward_vs_backward"]
    assert_series(points(ax), {ADJ: [(n, n + 6) for n in TRAIN_NFE]})  # the direct run has no backward NFE
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
    assert_series(points(ax), {ADJ: [(20, 0.95)], DIR: [(20, 0.96)]})
    assert_series(lines(ax), {"resnet (no ODE)": hline(0.97)})


def test_acc_vs_tol_plots_training_tolerances_and_the_sweep(combined):
    ax = combined["acc_vs_tol"]
    assert_series(lines(ax), {"odenet dopri5 adjoint, trained at this tolerance": ([1e-3], [0.95]),
                              "odenet dopri5 direct, trained at this tolerance": ([1e-3], [0.96]),
                              f"{DIR}: evaluated at other tolerances": ([1e-5, 1e-3, 1e-1], [0.97, 0.96, 0.90])})
    assert ax.get_xscale() == "log"


def test_memory_vs_nfe_plots_each_training_step_and_the_resnets_mean(combined):
    ax = combined["memory_vs_nfe"]
    assert_series(points(ax), {ADJ: [(n, 10.0) for n in TRAIN_NFE], DIR: [(n, 10 + 2.5 * n) for n in TRAIN_NFE]})
    assert_series(lines(ax), {"resnet (fixed depth)": hline(20.0)})


def test_figures_of_runs_without_an_ode_block_are_empty_and_say_why(runs_root):
    figures = combined_report(find_runs([runs_root / "resnet-s0"])).figures
    for name in FIG3:
        ax = axes_of(figures[name])
        assert lines(ax) == {} and points(ax) == {} and len(notes(ax)) == 1, name
    assert notes(axes_of(figures["fig3c_nfe_forward_vs_backward"]))[0].startswith("no adjoint runs")


def test_a_sweep_over_several_solvers_draws_one_line_per_solver():
    from odenet.reports.combined import fig3a, fig_acc_vs_tol

    cfg = {"backbone": "odenet", "solver": "dopri5", "rtol": 1e-3, "atol": 1e-3, "adjoint": False, "steps": None}
    sweep = [{"solver": solver, "tol": tol, "acc": acc, "nfe_forward": nfe, "ode_error": tol, "time_ms": nfe / 3}
             for solver, tol, acc, nfe in [("dopri5", 1e-1, .95, 14), ("dopri5", 1e-3, .99, 26),
                                           ("dopri5", 1e-5, .99, 50), ("bosh3", 1e-1, .90, 8),
                                           ("bosh3", 1e-3, .98, 40)]]
    run = Run(Path("r"), cfg, [{"split": "test", "epoch": 1, "step": 1, "acc": 0.99}], {"params": 1}, sweep)
    assert_series(lines(axes_of(fig3a([run]))),
                  {"odenet dopri5 tol 0.001 direct": ([14, 26, 50], [1e-1, 1e-3, 1e-5]),
                   "odenet dopri5 tol 0.001 direct, evaluated with bosh3": ([8, 40], [1e-1, 1e-3])})
    ax = axes_of(fig_acc_vs_tol([run]))
    assert [line.get_label() for line in ax.get_lines()] == [
        "odenet dopri5 direct, trained at this tolerance",
        "odenet dopri5 tol 0.001 direct: evaluated at other tolerances",
        "odenet dopri5 tol 0.001 direct: evaluated with bosh3 at other tolerances"]
    assert_series(lines(ax), {"odenet dopri5 direct, trained at this tolerance": ([1e-3], [0.99]),
                              "odenet dopri5 tol 0.001 direct: evaluated at other tolerances":
                                  ([1e-5, 1e-3, 1e-1], [.99, .99, .95]),
                              "odenet dopri5 tol 0.001 direct: evaluated with bosh3 at other tolerances":
                                  ([1e-3, 1e-1], [.98, .90])})


# --------------------------------------------------------------------------- combined report: text and files

def test_combined_report_has_table1_and_the_four_figure3_panels(runs_root):
    md = combined_report(find_runs([runs_root])).markdown()
    assert "Table 1 (Chen et al. 2018)" in md and "| odenet dopri5 tol 0.001 adjoint | 5.00% | 0.42% |" in md
    assert "| mlp (not run) | — | 1.60% |" in md and "| resnet | 3.00% | 0.41% | 0.577 M | 0.60 M | 20.0 |" in md
    for name in FIG3:
        assert f"![{name}]({name}.png)" in md
    assert "incomplete" in md  # the adjoint run has no summary.json


def test_findings_state_measured_ratios_and_slopes(runs_root):
    md = combined_report(find_runs([runs_root])).markdown()
    ratios = [(n + 6) / n for n in TRAIN_NFE]
    median = sorted(ratios)[1:3]
    assert f"backward/forward NFE ratio median {sum(median) / 2:.2f}" in md
    assert "`odenet-direct`: act_mem_mb grows by 2.500 MiB per extra forward NFE" in md
    assert "`odenet-adjoint`: act_mem_mb grows by 0.000 MiB per extra forward NFE" in md
    per_nfe = sorted((2.0 * n + 5) / n for n in TRAIN_NFE[1:])  # steps 2-4: the first is warm-up
    assert f"forward pass {per_nfe[1]:.2f} ms per NFE (median over 3 steps" in md
    assert "`odenet-direct`: accuracy at the training tolerance 0.001: 96.00%; at 1e-05: 97.00%" in md


def test_html_report_is_one_self_contained_file_with_the_pngs_written(runs_root, tmp_path):
    report = combined_report(find_runs([runs_root]))
    written = write_report(report, tmp_path / "out")
    html = written["report.html"].read_text()
    assert written["report.md"].read_text() == report.markdown()
    assert html.count("data:image/png;base64,") == 7
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
    assert_series(lines(sweep_axes["fig3b_nfe_vs_time"]),
                  {"dopri5": ([14, 26, 50], [9.0, 15.0, 28.0]), "bosh3": ([8, 40], [6.0, 22.0]),
                   "rk4": ([16, 32], [10.0, 18.0])})


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
    rows = [{"solver": "dopri5", "tol": 1e-3, "acc": 0.95}, {"solver": "dopri5", "tol": 1e-5, "acc": acc_tight}]
    verdict = still_an_ode(rows, 1e-3, "dopri5")
    assert verdict["flagged"] is flagged
    assert ("learned the discretisation, not an ODE" in verdict["text"]) is flagged
    assert still_an_ode(rows, 1e-2, "dopri5") is None


def test_linear_fit():
    assert linear_fit([1, 2, 3], [3, 5, 7]) == pytest.approx((2.0, 1.0))
    assert linear_fit([2, 2], [1, 3]) is None


def test_run_label():
    run = Run(Path("x"), ode_config(True, 1e-5), [], None)
    assert run.label == "odenet dopri5 tol 1e-05 adjoint" and run.is_ode and run.adjoint
