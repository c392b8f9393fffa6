"""The combined report's per-image comparison across runs (issue 12.4, "the same for an unregularised and a
regularised ODE-Net"): the numbers of its table and the data its figure plots."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from odenet.reports.per_sample_report import write_per_sample_csv
from odenet.reports.per_sample_compare import comparison_figure, comparison_rows, comparison_text


def fake_run(tmp_path, name, nfe, correct, batched, tol=1e-3):
    path = tmp_path / name
    path.mkdir()
    rows = [{"solver": "dopri5", "tol": tol, "index": i, "label": i % 10, "pred": i % 10 if ok else (i + 1) % 10,
             "correct": ok, "confidence": 1 - n / 100, "nfe_forward": n, "steps_accepted": (n - 2) // 6,
             "steps_rejected": 0, "nfe_forward_batched": batched, "batch": 0, "batch_size": len(nfe)}
            for i, (n, ok) in enumerate(zip(nfe, correct))]
    write_per_sample_csv(rows, path / "per_sample.csv")
    return SimpleNamespace(path=path, label=name)


def test_rows_give_quantiles_tax_correlation_and_the_costliest_tenth(tmp_path):
    nfe = [20] * 90 + [26] * 5 + [32] * 5        # 100 images: the costliest tenth are the 26s and 32s
    correct = [True] * 90 + [False] * 6 + [True] * 4
    plain = fake_run(tmp_path, "plain", nfe, correct, batched=26)
    regularised = fake_run(tmp_path, "rnode", [20] * 100, [True] * 100, batched=20)
    none = SimpleNamespace(path=tmp_path, label="no per-sample file")
    rows = comparison_rows([plain, none, regularised])
    assert [r["run"] for r in rows] == ["plain", "rnode"]
    r = rows[0]
    assert (r["images"], r["p50"], r["max"]) == (100, 20.0, 32.0)
    assert r["p90"] == pytest.approx(20.6)  # numpy's linear interpolation between the 90th and 91st images
    assert r["p99"] == pytest.approx(np.quantile(nfe, 0.99))
    assert r["mean"] == pytest.approx(20.9) and r["batched"] == 26
    assert r["tax"] == pytest.approx(1 - 20.9 / 26)
    # the costliest: whole NFE levels from the top until a tenth is reached: the 32s (5) and the 26s (5)
    assert (r["top_images"], r["top_nfe"]) == (10, 26)
    assert r["acc_top"] == pytest.approx(0.4) and r["acc_rest"] == pytest.approx(1.0)
    assert r["spearman_confidence"] == pytest.approx(-1.0)   # confidence falls as NFE rises, by construction
    assert rows[1]["tax"] == 0 and rows[1]["max"] == 20
    assert rows[1]["top_images"] == 0 and rows[1]["acc_top"] is None   # every image took the same NFE
    text = comparison_text([plain, regularised])
    assert "| plain | dopri5 tol 0.001 | 100 | 100 |" in text and "19.6%" in text
    assert comparison_text([none]) is None


def test_figure_plots_each_runs_ecdf_per_tolerance(tmp_path):
    a = fake_run(tmp_path, "a", [20, 26, 20, 32], [True] * 4, batched=32)
    b = fake_run(tmp_path, "b", [14, 14], [True, False], batched=14, tol=1e-1)
    fig = comparison_figure([a, b])
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}
    assert list(panels) == ["tol 0.1: per-image nfe_forward (ECDF)", "tol 0.001: per-image nfe_forward (ECDF)"]
    (line,) = panels["tol 0.001: per-image nfe_forward (ECDF)"].get_lines()
    assert list(line.get_xdata()) == [20, 20, 26, 32] and list(line.get_ydata()) == [0.25, 0.5, 0.75, 1.0]
    assert line.get_label() == "a (4 images, batch 4)"
    (line,) = panels["tol 0.1: per-image nfe_forward (ECDF)"].get_lines()
    assert list(line.get_xdata()) == [14, 14] and list(line.get_ydata()) == [0.5, 1.0]


def test_nfe_bins_never_split_images_of_equal_nfe():
    from odenet.reports.per_sample_report import costliest, nfe_bins

    group = [{"nfe_forward": n, "correct": ok, "index": i}
             for i, (n, ok) in enumerate([(20, True)] * 85 + [(26, False)] * 10 + [(32, True)] * 5)]
    bins = nfe_bins(group)
    assert [(b["nfe_min"], b["nfe_max"], b["images"]) for b in bins] == [(20, 20, 85), (26, 26, 10), (32, 32, 5)]
    assert [b["acc"] for b in bins] == [1.0, 0.0, 1.0] and {b["of"] for b in bins} == {3}
    assert [r["nfe_forward"] for r in costliest(group)] == [32] * 5 + [26] * 10
    assert len(nfe_bins([{"nfe_forward": 14, "correct": True, "index": i} for i in range(50)])) == 1
    few = [{"nfe_forward": 26 if i < 3 else 20, "correct": True, "index": i} for i in range(100)]
    assert [r["index"] for r in costliest(few)] == [0, 1, 2]   # under a tenth, but all that cost more
    assert costliest([{"nfe_forward": 14, "correct": True, "index": i} for i in range(9)]) is None
