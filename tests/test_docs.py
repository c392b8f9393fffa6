"""The README and the documentation site: short, consistent with the tree, in users' words, and built strictly."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
OTHERS = {"architecture.md", "heartbeats.md"}  # pages others keep; linked from the site, not checked here
USER_PAGES = [p for p in sorted((ROOT / "docs").glob("*.md")) if p.name not in OTHERS]
# Words of the people who build odenet, not of the people who use it.
MAINTAINERS = [r"\bissue \d+", r"\(issue", r"issue's", r"\btarget (is|was) (missed|not met|met)", r"device tool",
               r"this work('s)?\b", r"\bwas lent\b", r"\bour session\b", r"\bthe lead\b", r"\bTODO\b(?! comment)"]


def code_blocks(text: str, after: str) -> list[str]:
    """The lines of the first ```sh block after the heading ``after``."""
    section = text.split(after, 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def test_the_readme_reads_in_five_minutes():
    assert len(README.splitlines()) <= 160
    longest = max((len(p.split()) for p in re.split(r"\n\s*\n", README) if not p.startswith("```")), default=0)
    assert longest <= 120  # no wall of text


def test_the_readme_sets_up_with_exactly_two_commands():
    commands = [line.split("#")[0].strip() for line in code_blocks(README, "## Set-up: two commands")]
    assert commands == ["make demo", "make test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "make docs" in ci and "make examples" in ci
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^test: .*\n\t\$\(PY\) -m pytest -q$", makefile, re.M)  # pytest fails when it collects nothing
    assert "mkdocs build --strict" in makefile and "'.[dev,docs]'" in makefile


def test_the_first_hour_names_files_that_exist():
    commands = code_blocks(README, "## The first hour")
    assert commands[0] == "source .venv/bin/activate"
    for command in commands[1:]:
        for path in re.findall(r"(?:configs|examples)/[\w./-]+", command):
            assert (ROOT / path).is_file(), path
        assert "--dataset mnist" not in command or "mnist-5k" in command  # only mnist-5k ships with the install
    for path in re.findall(r"configs/[\w.-]+\.yaml", README):
        assert yaml.safe_load((ROOT / path).read_text())["dataset"] == "mnist-5k"


def test_the_headline_quotes_its_committed_report():
    headline = README.split("## Headline", 1)[1].split("\n## ", 1)[0]
    source = re.search(r"<!-- headline: filled from (results/[\w.-]+) -->", headline).group(1)
    assert (ROOT / source / "report.md").is_file()
    report = "".join(p.read_text() for p in sorted((ROOT / "results").glob("*/report.md")))  # every study's
    assert "(docs/study.md)" in headline
    numbers = re.findall(r"\d+\.\d+ ± \d+\.\d+", headline)
    assert numbers and all(n in report for n in numbers), [n for n in numbers if n not in report]


@pytest.mark.parametrize("page", [ROOT / "README.md", *USER_PAGES], ids=lambda p: p.name)
def test_users_read_users_words(page):
    text = page.read_text()
    for pattern in MAINTAINERS:
        assert not re.search(pattern, text, re.I), f"{page.name}: {re.search(pattern, text, re.I).group(0)!r}"
    assert "pip install 'odenet" not in text and 'pip install "odenet' not in text  # no index holds odenet


def test_every_link_of_the_readme_and_the_pages_leads_somewhere():
    for page in [ROOT / "README.md", *USER_PAGES]:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
            if not target.startswith(("http://", "https://")):
                assert (page.parent / target).exists(), f"{page.name} links to {target}"


def test_every_page_is_in_the_sites_navigation():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text().replace("!!python", "#"))

    def pages(nav) -> list[str]:
        found = []
        for item in nav:
            for value in item.values():
                found += pages(value) if isinstance(value, list) else [value]
        return found

    assert sorted(pages(config["nav"])) == sorted(p.name for p in (ROOT / "docs").glob("*.md"))


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="the docs extra: pip install -e '.[docs]'")
def test_the_site_builds_strictly(tmp_path):
    """mkdocs build --strict: a broken link, anchor or page, or an API reference that fails to render, fails."""
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    api = (tmp_path / "api" / "index.html").read_text()
    assert "TrainedModel" in api and "ODEBlock" in api and "SolverSettings" in api


def test_the_study_page_quotes_the_committed_reports():
    page = (ROOT / "docs" / "study.md").read_text()
    reports = "".join(p.read_text() for p in sorted((ROOT / "results").glob("*/report.md")))
    numbers = re.findall(r"\d+\.\d+ ± \d+\.\d+", page)
    assert len(numbers) > 20 and all(n in reports for n in numbers), [n for n in numbers if n not in reports]
