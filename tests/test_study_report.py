"""The study report over seeds: methods, intervals, NFE at equal accuracy and equal solve error, figures' data."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from odenet.reports import combined_report, find_runs
from odenet.reports.seeds import estimate, group_methods, t975
from odenet.reports.matched import compare_all, nfe_to_reach

PLAIN = [(1e-1, 8, 0.80, 1e-1), (1e-2, 14, 0.89, 1e-2), (1e-3, 20, 0.90, 1e-3), (1e-5, 32, 0.90, 1e-5)]
LEVER = [(1e-1, 8, 0.85, 5e-2), (1e-2, 10, 0.90, 5e-3), (1e-3, 14, 0.90, 5e-4), (1e-5, 26, 0.90, 5e-6)]


def write_run(root, name, config, acc, nfe, sweep=()):
    run = root / name
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    rows = [{"split": "train", "epoch": e, "step": e, "loss": 1.0, "acc": acc, "time_step_ms": 100.0,
             "act_mem_mb": 10.0, "time_forward_ms": 40.0,
             **({"nfe_forward": nfe + e, "nfe_backward": 0} if nfe else {})} for e in (1, 2)]
    rows.append({"split": "test", "epoch": 2, "step": 2, "loss": 0.5, "acc": acc, "images": 10000,
                 **({"nfe_forward": nfe} if nfe else {})})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "summary.json").write_text(json.dumps({"params": 1000, "test": rows[-1]}))
    if sweep:
        rows = [{"solver": "dopri5", "tol": tol, "atol": tol, "steps": None, "nfe_forward": n, "acc": a,
                 "ode_error": err, "images": 10000, "time_ms": 10.0} for tol, n, a, err in sweep]
        rows.append({"solver": "rk4", "tol": None, "steps": 1, "nfe_forward": 4, "acc": sweep[2][2], "ode_error": 0.2, "time_ms": 2.0,
                     "images": 10000})
        (run / "sweep.json").write_text(json.dumps({"meta": {"images": 10000}, "rows": rows}))


@pytest.fixture
def study(tmp_path):
    base = {"dataset": "fashion-mnist", "epochs": 2, "batch_size": 128, "test_batch_size": 1000}
    ode = {**base, "backbone": "odenet", "solver": "dopri5", "tol": 1e-3, "rtol": 1e-3, "atol": 1e-3,
           "adjoint": False, "first_step": "auto"}
    for seed in range(3):
        shift = 0.5 * seed  # the lever's curve moves right a little with the seed: an interval, not a point
        write_run(tmp_path, f"plain-s{seed}", {**ode, "seed": seed}, 0.90, 20, PLAIN)
        lever = [(t, n + shift, a, e) for t, n, a, e in LEVER]
        write_run(tmp_path, f"kin-s{seed}", {**ode, "kinetic_reg": 0.01, "seed": seed}, 0.90, 14, lever)
        write_run(tmp_path, f"resnet-s{seed}", {**base, "backbone": "resnet", "solver": None, "seed": seed},
                  0.91 + 0.001 * seed, None)
    return find_runs([tmp_path])


def test_the_least_nfe_reaching_a_target_is_interpolated_along_the_curve():
    assert nfe_to_reach([(8, 0.80), (14, 0.89), (20, 0.90)], 0.899) == pytest.approx(14 + 0.9 * 6)
    assert nfe_to_reach([(8, 0.95), (14, 0.96)], 0.90) == 8  # already there at the first point
    assert nfe_to_reach([(8, 0.80)], 0.90) is None
    # solve error: the first point at or below the target, interpolated in log error
    assert nfe_to_reach([(8, 1e-1), (20, 1e-3)], 1e-2, lower_is_better=True, log=True) == pytest.approx(14)


def test_intervals_are_student_t_over_seeds():
    e = estimate([1.0, 2.0, 3.0])
    assert (e.mean, e.n) == (2.0, 3) and e.half == pytest.approx(t975(2) * 1.0 / math.sqrt(3))
    assert estimate([5.0]).half is None and estimate([None]) is None
    assert estimate([1.0, 1.1, 1.2]).separates(estimate([2.0, 2.1, 2.2])) and not e.separates(estimate([2.5, 2.6, 2.7]))


def test_methods_group_runs_that_differ_only_by_seed(study):
    methods = group_methods(study)
    assert [(m.name, m.seeds) for m in methods] == [  # references first, then the plain ODE-Net, then levers
        ("ResNet", [0, 1, 2]), ("ODE-Net", [0, 1, 2]), ("ODE-Net + kinetic 0.01", [0, 1, 2])]


def test_a_runs_thread_count_does_not_make_it_another_method(study):
    study[0].config["threads"], study[1].config["threads"] = 1, 2  # --threads-per-job: how it ran, not what it is
    assert [len(m.runs) for m in group_methods(study)] == [3, 3, 3]


def test_nfe_at_equal_accuracy_and_solve_error_against_the_plain_model(study):
    reference, [kin] = compare_all(group_methods(study))
    assert reference.name == "ODE-Net"
    # Target accuracy 0.899: plain crosses it at 14 + 0.9·6 = 19.4 NFE; the lever (shifted by 0.5·seed) at
    # 8 + 0.98·2 + shift = 9.96 + shift.
    expected = [(9.96 + 0.5 * s) / 19.4 for s in range(3)]
    assert kin.at_accuracy.mean == pytest.approx(sum(expected) / 3)
    assert kin.at_accuracy.half == pytest.approx(estimate(expected).half)
    # Solve error 1e-3: the lever reaches it between (10 + s/2, 5e-3) and (14 + s/2, 5e-4), log-linearly.
    frac = math.log(1e-3 / 5e-3) / math.log(5e-4 / 5e-3)
    err = [(10 + 0.5 * s + frac * 4) / 20 for s in range(3)]
    assert kin.at_error.mean == pytest.approx(sum(err) / 3)
    assert kin.fixed_step.mean == 4 and kin.seeds == 3


def test_the_report_opens_with_the_headline_and_its_figure_plots_the_means(study):
    report = combined_report(study)
    assert [s.title for s in report.sections][:3] == ["Headline", "At equal accuracy and equal solve error",
                                                      "NFE over training"]
    text = report.sections[0].text
    assert "| ODE-Net + kinetic 0.01 | 3 | 0.9000 ± 0.0000 | 14.0 ± 0.0" in text
    assert "10,000 test images; training batch 128; 2 epochs; 3 seeds per method" in text
    assert "| ResNet | 3 | 0.9110 ± 0.0025 |" in text  # 0.910, 0.911, 0.912: sd 0.001, t(2) 4.303 / √3
    assert "(cheaper)" in text and "ODE-Net is below it (95% intervals apart)" in text
    ax = report.figures["headline"].axes[0]
    points = sorted((line.get_xdata()[0], line.get_ydata()[0]) for line in ax.lines if line.get_marker() == "o")
    assert points == [(14.0, 0.90), (20.0, 0.90)]
    matched = report.sections[1].text
    assert "| ODE-Net (reference) | 3 | 1 | — | 1 | — | 4.0 ± 0.0 |" in matched
    assert "| ODE-Net + kinetic 0.01 | 3 | 0.54 ± 0.06 | cheaper | 0.66 ± 0.06 | cheaper | 4.0 ± 0.0 |" in matched


def test_the_matched_figure_plots_each_settings_mean_over_seeds(study):
    report = combined_report(study)
    acc_ax, err_ax = report.figures["matched"].axes[:2]
    curves = {c.get_label(): (list(c.lines[0].get_xdata()), list(c.lines[0].get_ydata()))
              for c in err_ax.containers}
    # the plain model's dopri5 errors are the same on every seed: the geometric mean is the value itself
    assert curves["ODE-Net, dopri5"][0] == [8, 14, 20, 32]
    assert curves["ODE-Net, dopri5"][1] == pytest.approx([1e-1, 1e-2, 1e-3, 1e-5])
    lever_nfe = curves["ODE-Net + kinetic 0.01, dopri5"][0]
    assert lever_nfe == pytest.approx([8.5, 10.5, 14.5, 26.5])  # 0, 0.5 and 1 added over the seeds: mean 0.5
    assert err_ax.get_yscale() == "log" and acc_ax.get_xscale() == "log"


def test_a_lever_that_never_reaches_the_references_accuracy_is_said_so_not_left_blank(study, tmp_path):
    ode = yaml.safe_load((tmp_path / "kin-s0" / "config.yaml").read_text())
    short = [(t, n, a - 0.05, e) for t, n, a, e in LEVER]  # 0.85 at best: short of the plain model's 0.899
    for seed in range(3):
        write_run(tmp_path, f"kin1-s{seed}", {**ode, "kinetic_reg": 1.0, "seed": seed}, 0.85, 14, short)
    reference, comparisons = compare_all(group_methods(find_runs([tmp_path])))
    kin1 = next(c for c in comparisons if c.method.name == "ODE-Net + kinetic 1")
    assert kin1.at_accuracy is None and kin1.short_of_accuracy == 3 and kin1.short_of_error == 0
    report = combined_report(find_runs([tmp_path]))
    assert "| ODE-Net + kinetic 1 | 3 | never reached on 3 of 3 seeds | never reaches the reference's level |" \
        in report.sections[1].text
    assert "on 3 of 3 seeds no swept tolerance reaches ODE-Net's accuracy (test accuracy 0.8500 ± 0.0000 against " \
           "0.9000 ± 0.0000)" in report.sections[0].text


def test_curves_already_at_the_target_at_their_loosest_tolerance_claim_nothing(tmp_path):
    base = {"dataset": "mnist-5k", "epochs": 2, "batch_size": 512, "test_batch_size": 1000, "backbone": "odenet-mlp",
            "solver": "dopri5", "tol": 1e-3, "rtol": 1e-3, "atol": 1e-3, "adjoint": False, "first_step": "auto"}
    flat = [(1e-1, 14, 0.95, 1e-2), (1e-2, 14, 0.95, 5e-3), (1e-3, 20, 0.95, 1e-3)]
    for seed in range(3):
        write_run(tmp_path, f"plain-s{seed}", {**base, "seed": seed}, 0.95, 20, flat)
        write_run(tmp_path, f"reuse-s{seed}", {**base, "first_step": "reuse", "seed": seed}, 0.95, 19,
                  [(t, n - 1, a, e) for t, n, a, e in flat])
    reference, [reuse] = compare_all(group_methods(find_runs([tmp_path])))
    assert reuse.at_accuracy.mean == pytest.approx(13 / 14) and reuse.at_loosest == 3  # 13 vs 14: first points
    matched = combined_report(find_runs([tmp_path])).sections[1].text
    assert "| 0.93 ± 0.00 | not claimed: both at the target already at the loosest tolerance swept |" in matched


def test_the_headline_figure_cuts_an_nfe_interval_at_the_fewest_a_seed_took(tmp_path):
    base = {"dataset": "mnist-5k", "epochs": 2, "batch_size": 512, "test_batch_size": 1000, "backbone": "odenet-mlp",
            "solver": "dopri5", "tol": 1e-3, "rtol": 1e-3, "atol": 1e-3, "adjoint": False, "first_step": "auto"}
    for seed, nfe in enumerate((26, 26, 230)):  # mean 94, a t-interval of ±253: it would reach below 0
        write_run(tmp_path, f"err-s{seed}", {**base, "error_reg": 1.0, "seed": seed}, 0.8, nfe, PLAIN)
    for seed in range(3):
        write_run(tmp_path, f"plain-s{seed}", {**base, "seed": seed}, 0.95, 20, PLAIN)
    ax = combined_report(find_runs([tmp_path])).figures["headline"].axes[0]
    bars = [c.get_segments() for c in ax.collections if c.get_segments() and
            abs(c.get_segments()[0][0][1] - c.get_segments()[0][1][1]) < 1e-12]  # horizontal: the NFE bars
    spans = sorted({(seg[0][0][0], seg[0][1][0]) for seg in bars})
    wide = [span for span in spans if span[1] > span[0]]  # zero-length bars are the seeds' equal values
    assert wide == [(pytest.approx(26), pytest.approx(94 + estimate([26, 26, 230]).half))]
    assert ax.get_xscale() == "log"  # 94 against 20: the far method does not squeeze the rest


def test_a_study_without_levers_shows_the_reference_sweep_and_its_cheapest_settings(tmp_path):
    base = {"dataset": "fashion-mnist", "epochs": 2, "batch_size": 128, "test_batch_size": 1000}
    ode = {**base, "backbone": "odenet", "solver": "dopri5", "tol": 1e-3, "rtol": 1e-3, "atol": 1e-3,
           "adjoint": False, "first_step": "auto"}
    for seed in range(3):
        write_run(tmp_path, f"plain-s{seed}", {**ode, "seed": seed}, 0.90, 20, PLAIN)
        write_run(tmp_path, f"resnet-s{seed}", {**base, "backbone": "resnet", "solver": None, "seed": seed}, 0.91, None)
    report = combined_report(find_runs([tmp_path]))
    sweep = next(s for s in report.sections if s.title == "The test-time sweep")
    # accuracy 0.90 at 1e-3 (20 NFE); 0.899 is crossed at 14 + 0.9·6 = 19.4 NFE; rk4's one step (4 NFE) has 0.90
    assert "| ODE-Net | 3 | 20.0 ± 0.0 | 19.4 ± 0.0 | 4.0 ± 0.0 |" in sweep.text and "matched" in report.figures
    assert "a fixed-step solver (rk4 or Euler) needs 4.0 ± 0.0 NFE against 20.0 ± 0.0" in report.sections[0].text
