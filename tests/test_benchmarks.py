"""The benchmarks' own verdicts (pure functions; the benchmarks themselves are not part of the suite)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from throughput import same_training  # noqa: E402
from time_to_accuracy import test_rows as read_test_rows  # noqa: E402


def row(plain_f: float, ours_f: float, plain_b: float = 0.0, ours_b: float = 0.0) -> dict:
    return {"plain_nfe_forward": plain_f, "odenet_nfe_forward": ours_f,
            "plain_nfe_backward": plain_b, "odenet_nfe_backward": ours_b}


def test_same_training_accepts_rounding_and_flags_the_first_divergent_step():
    same = same_training([2.3, 2.0, 1.5], [2.3 * (1 + 1e-5), 2.0, 1.5], row(26, 26))
    assert same["loss_match"] and same["loss_first_step_over_rtol"] is None and same["nfe_within_5pct"]
    apart = same_training([2.3, 2.0, 1.5], [2.3, 2.01, 1.6], row(20, 22, 30, 30))
    assert not apart["loss_match"] and apart["loss_first_step_over_rtol"] == 2
    assert not apart["nfe_within_5pct"] and abs(apart["nfe_rel_diff"]["forward"] - 0.1) < 1e-12


def test_time_to_accuracy_reads_only_complete_test_rows(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    rows = [{"split": "train", "epoch": 1}, {"split": "test", "epoch": 1, "acc": 0.8}]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"split": "test", "ep')  # mid-write
    assert read_test_rows(metrics, 0) == [rows[1]]
    assert read_test_rows(metrics, 1) == []
    assert read_test_rows(tmp_path / "absent.jsonl", 0) == []


def test_time_to_accuracy_ratio_is_exact_or_a_bound_from_the_limit():
    from time_to_accuracy import speedup

    side = lambda reached, limit=600.0: {"reached_s": reached, "limit_s": limit}  # noqa: E731
    assert speedup(side(400.0), side(100.0)) == {"ratio": 4.0, "bound": "exact", "text": "4.00x"}
    assert speedup(side(None), side(120.0)) == {"ratio": 5.0, "bound": "lower", "text": "> 5.00x"}
    assert speedup(side(300.0), side(None)) == {"ratio": 0.5, "bound": "upper", "text": "< 0.50x"}
    assert speedup(side(None), side(None))["ratio"] is None


def test_time_to_accuracy_figure_plots_both_curves_and_the_limit_of_the_side_that_missed():
    from time_to_accuracy import figure

    ours = {"side": "odenet", "reached_s": 120.0, "limit_s": 600.0,
            "epochs": [{"wall_s": 60.0, "acc": 0.8}, {"wall_s": 120.0, "acc": 0.91}]}
    plain = {"side": "plain", "reached_s": None, "limit_s": 600.0, "epochs": [{"wall_s": 300.0, "acc": 0.85}]}
    ax = figure([ours, plain], 0.9, "note").axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert list(lines["odenet"].get_xdata()) == [1.0, 2.0] and list(lines["odenet"].get_ydata()) == [0.8, 0.91]
    assert list(lines["plain"].get_xdata()) == [5.0] and list(lines["plain"].get_ydata()) == [0.85]
    assert list(lines["plain: stopped at its 10-min limit"].get_xdata()) == [10.0, 10.0]
    assert list(lines["target 90%"].get_ydata()) == [0.9, 0.9]
    assert "odenet: stopped at its 10-min limit" not in lines


def test_time_to_accuracy_runs_both_sides_at_once_and_stops_each_on_its_own(tmp_path):
    import argparse
    import sys
    import time

    from time_to_accuracy import watch

    def side(name: str, accs: list[float]) -> tuple[list[str], Path]:
        metrics = tmp_path / f"{name}.jsonl"
        script = (f"import json, time\nfor k, a in enumerate({accs}):\n    time.sleep(0.4)\n"
                  f"    open({str(metrics)!r}, 'a').write(json.dumps({{'split': 'test', 'epoch': k + 1, 'acc': a}}) + '\\n')\n"
                  f"time.sleep(30)\n")
        return [sys.executable, "-c", script], metrics

    args = argparse.Namespace(target=0.9, limit=6.0, stop_at_target=True, threads=1)
    start = time.perf_counter()
    (fast, fast_code, fast_wall), (slow, slow_code, slow_wall) = watch(
        [side("fast", [0.5, 0.95]), side("slow", [0.5, 0.6, 0.7])], args)
    assert [e["acc"] for e in fast] == [0.5, 0.95] and fast_wall < 3  # stopped once it reached the target
    assert [e["acc"] for e in slow] == [0.5, 0.6, 0.7] and slow_wall >= 6  # ran to its limit, beside the other
    assert time.perf_counter() - start < 12 and fast_code != 0 and slow_code != 0  # both ran at once, then stopped
