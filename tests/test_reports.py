"""Reports from saved files alone (no torch), on run directories written by the test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from odenet.reports import (ReportError, Run, combined_report, find_runs, linear_fit, still_an_ode, sweep_report,
                            write_report)

ROOT = Path(__file__).resolve().parents[1]
FIG3 = ("fig3a_nfe_vs_error", "fig3b_nfe_vs_time", "fig3c_nfe_forward_vs_backward", "fig3d_nfe_over_training")


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


@pytest.fixture
def runs_root(tmp_path) -> Path:
    root = tmp_path / "sweep"
    test = lambda acc, nfe=None: {"split": "test", "epoch": 2, "step": 4, "acc": acc, "loss": 0.3,  # noqa: E731
                                  **({"nfe_forward": nfe} if nfe else {})}
    write_run(root, "resnet-s0", {"backbone": "resnet", "dataset": "mnist-5k", "solver": None, "seed": 0},
              [*({"split": "train", "epoch": 1 + i // 2, "step": i + 1, "act_mem_mb": 20.0, "time_step_ms": 50.0}
                 for i in range(4)), test(0.97)], {"params": 576778, "best_acc": 0.97})
    write_run(root, "odenet-direct", ode_config(False), [*train_rows([20, 26, 20, 32], False, 2.5), test(0.96, 20)],
              {"params": 208266, "best_acc": 0.96},
              sweep=[{"solver": "dopri5", "tol": t, "acc": 0.96, "nfe_forward": n, "ode_error": e, "time_ms": n}
                     for t, n, e in ((1e-1, 14, 3e-3), (1e-3, 20, 6e-4), (1e-5, 38, 9e-5))])
    write_run(root, "odenet-adjoint", ode_config(True), [*train_rows([20, 26, 20, 32], True, 0.0), test(0.95, 20)],
              None)  # no summary: an interrupted run
    return root


def test_combined_report_has_table1_and_the_four_figure3_panels(runs_root, tmp_path):
    report = combined_report(find_runs([runs_root]))
    written = write_report(report, tmp_path / "out")
    md = written["report.md"].read_text()
    assert "Table 1 (Chen et al. 2018)" in md and "| odenet dopri5 tol 0.001 adjoint | 5.00% | 0.42% |" in md
    assert "| mlp (not run) | — | 1.60% |" in md and "| resnet | 3.00% | 0.41% | 0.577 M | 0.60 M | 20.0 |" in md
    for name in FIG3:
        assert f"![{name}]({name}.png)" in md and written[name].stat().st_size > 5000
    assert "incomplete" in md  # the adjoint run has no summary.json


def test_findings_state_measured_ratios_and_slopes(runs_root):
    md = combined_report(find_runs([runs_root])).markdown()
    ratios = [(n + 6) / n for n in (20, 26, 20, 32)]
    median = sorted(ratios)[1:3]
    assert f"backward/forward NFE ratio median {sum(median) / 2:.2f}" in md
    assert "`odenet-direct`: act_mem_mb grows by 2.500 MiB per extra forward NFE" in md
    assert "`odenet-adjoint`: act_mem_mb grows by 0.000 MiB per extra forward NFE" in md
    per_nfe = sorted((2.0 * n + 5) / n for n in (26, 20, 32))  # steps 2-4: the first is warm-up
    assert f"forward pass {per_nfe[1]:.2f} ms per NFE (median over 3 steps" in md


def test_html_report_is_one_self_contained_file(runs_root, tmp_path):
    html = write_report(combined_report(find_runs([runs_root])), tmp_path / "out")["report.html"].read_text()
    assert html.count("data:image/png;base64,") == 7
    assert 'src="fig' not in html and "<table>" in html


def test_report_cli_runs_without_torch(runs_root, tmp_path):
    code = ("import sys; sys.modules['torch'] = None; from odenet.reports import main; "
            f"raise SystemExit(main([{str(runs_root)!r}, '--out', {str(tmp_path / 'out')!r}]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "report.html").is_file()


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


@pytest.mark.parametrize("acc_tight, flagged", [(0.95, False), (0.93, True)])
def test_still_an_ode_flags_a_drop_of_more_than_one_point(acc_tight, flagged):
    rows = [{"solver": "dopri5", "tol": 1e-3, "acc": 0.95}, {"solver": "dopri5", "tol": 1e-5, "acc": acc_tight}]
    verdict = still_an_ode(rows, 1e-3, "dopri5")
    assert verdict["flagged"] is flagged
    assert ("learned the discretisation, not an ODE" in verdict["text"]) is flagged
    assert still_an_ode(rows, 1e-2, "dopri5") is None


def test_sweep_report_of_a_resnet_has_one_row_and_no_ode_verdict():
    meta = {"checkpoint": "runs/r/last.pt", "backbone": "resnet", "dataset": "mnist", "images": 100,
            "device": "cpu", "still_an_ode": None}
    report = sweep_report(meta, [{"solver": None, "tol": None, "steps": None, "acc": 0.9, "loss": 0.3,
                                  "time_ms": 5.0, "flops": 1e6}])
    md = report.markdown()
    assert "Not applicable (no ODE block)" in md and md.count("| — | — | 0.9 |") == 1


def test_linear_fit():
    assert linear_fit([1, 2, 3], [3, 5, 7]) == pytest.approx((2.0, 1.0))
    assert linear_fit([2, 2], [1, 3]) is None


def test_run_label():
    run = Run(Path("x"), ode_config(True, 1e-5), [], None)
    assert run.label == "odenet dopri5 tol 1e-05 adjoint" and run.is_ode and run.adjoint


def test_a_sweep_over_several_solvers_draws_one_line_per_solver():
    from odenet.reports import fig3a, fig_acc_vs_tol

    cfg = {"backbone": "odenet", "solver": "dopri5", "rtol": 1e-3, "atol": 1e-3, "adjoint": False, "steps": None}
    sweep = [{"solver": solver, "tol": tol, "acc": acc, "nfe_forward": nfe, "ode_error": tol, "time_ms": nfe / 3}
             for solver, tol, acc, nfe in [("dopri5", 1e-1, .95, 14), ("dopri5", 1e-3, .99, 26),
                                           ("dopri5", 1e-5, .99, 50), ("bosh3", 1e-1, .90, 8),
                                           ("bosh3", 1e-3, .98, 40)]]
    run = Run(Path("r"), cfg, [{"split": "test", "epoch": 1, "step": 1, "acc": 0.99}], {"params": 1}, sweep)
    lines = {line.get_label(): list(line.get_xdata()) for line in fig3a([run]).axes[0].get_lines()}
    assert lines == {"odenet dopri5 tol 0.001 direct": [14, 26, 50],
                     "odenet dopri5 tol 0.001 direct, evaluated with bosh3": [8, 40]}
    labels = [line.get_label() for line in fig_acc_vs_tol([run]).axes[0].get_lines()]
    assert labels == ["odenet dopri5 direct, trained at this tolerance",
                      "odenet dopri5 tol 0.001 direct: evaluated at other tolerances",
                      "odenet dopri5 tol 0.001 direct: evaluated with bosh3 at other tolerances"]
