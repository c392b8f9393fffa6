"""The committed study results are what the code makes of the committed runs: each report under results/ is
rebuilt from its run directories (results/<study>/runs/) with the title of configs/<study>.yaml, and its text
and tables must come out identical. A change to the report code that changes a committed number fails here
until the results are regenerated (the command is in each test's failure message)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from odenet.reports import combined_report, find_runs, write_report

ROOT = Path(__file__).resolve().parents[1]
STUDIES = sorted(p.parent.name for p in (ROOT / "results").glob("*/runs"))
COMPARED = ("report.md", "sweep_points.csv", "methods.csv")


def test_every_committed_study_has_its_config_and_runs():
    assert STUDIES, "results/ holds no study"
    for study in STUDIES:
        assert (ROOT / "configs" / f"{study}.yaml").is_file(), study
        assert list((ROOT / "results" / study / "runs").glob("*/summary.json")), study
        assert not list((ROOT / "results" / study).rglob("*.pt")), f"checkpoints committed in results/{study}"


@pytest.mark.parametrize("study", STUDIES)
def test_the_committed_report_is_what_the_committed_runs_give(study, tmp_path):
    folder = ROOT / "results" / study
    title = yaml.safe_load((ROOT / "configs" / f"{study}.yaml").read_text())["title"]
    write_report(combined_report(find_runs([folder / "runs"]), title), tmp_path)
    regenerate = f"odenet-report results/{study}/runs --out results/{study} --title \"{title}\""
    for name in COMPARED:
        if (folder / name).exists() or (tmp_path / name).exists():
            assert (tmp_path / name).read_text() == (folder / name).read_text(), \
                f"results/{study}/{name} is stale; regenerate it: {regenerate}"
