"""Issue 21, classes 1 and 5: reports on damaged or stale run files.

Every file a report reads back (config.yaml, metrics.jsonl, summary.json, sweep.json, per_sample.csv) is
checked: damage is exit 2 with one sentence naming the file and the fix, no traceback, nothing saved changed
and no report written; a file older than the sweep or run it would stand beside is never shown with it.
Table-driven cases, then hypothesis throwing damaged JSON, YAML and CSV at the reader and the report.
"""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from conftest import assert_one_sentence, make_mnist_folder, snapshot  # noqa: E402
from odenet.cli import eval_main, report_main, train_main  # noqa: E402
from odenet.errors import UserError  # noqa: E402
from odenet.reports import combined_report, load_run  # noqa: E402


def train_args(data: Path, out: Path, name: str, *extra: str) -> list[str]:
    return ["--dataset", "fashion-mnist", "--data-dir", str(data), "--backbone", "odenet", "--width", "8", "--tol",
            "1e-2", "--batch-size", "32", "--test-batch-size", "64", "--limit-train-batches", "2",
            "--limit-test-batches", "1", "--out-dir", str(out), "--run-name", name, "--no-progress", *extra]


def sweep(run: Path, *extra: str) -> int:
    return eval_main(["--checkpoint", str(run / "last.pt"), "--tols", "1e-1", "--timing-repeats", "1",
                      "--timing-warmup", "0", "--reference-images", "8", "--no-tensorboard", *extra])


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> Path:
    """A real run of one epoch with a per-sample sweep: every file a report reads."""
    root = tmp_path_factory.mktemp("damaged")
    make_mnist_folder(root / "data" / "FashionMNIST" / "raw")
    assert train_main(train_args(root / "data", root / "runs", "ode", "--epochs", "1")) == 0
    assert sweep(root / "runs" / "ode", "--per-sample") == 0
    return root / "runs" / "ode"


@pytest.fixture
def run(swept, tmp_path) -> Path:
    copy = tmp_path / "runs" / "ode"
    shutil.copytree(swept, copy)
    return copy


def rewrite_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)  # in place
    path.write_text(json.dumps(data))


def metrics_line(run: Path, index: int, row) -> None:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    lines[index] = row if isinstance(row, str) else json.dumps(row)
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def csv_lines(run: Path, change) -> None:
    path = run / "per_sample.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(change(lines)) + "\n")


def cell(lines: list[str], row: int, column: str, value: str) -> list[str]:
    header = lines[0].split(",")
    cells = lines[row].split(",")
    cells[header.index(column)] = value
    return [*lines[:row], ",".join(cells), *lines[row + 1:]]


first_train = lambda run: json.loads((run / "metrics.jsonl").read_text().splitlines()[0])  # noqa: E731

# (name, damage, the file named, a fragment of the sentence)
CASES = [
    ("sweep.json truncated", lambda r: (r / "sweep.json").write_text((r / "sweep.json").read_text()[:200]),
     "sweep.json", "is not valid JSON"),
    ("summary.json truncated", lambda r: (r / "summary.json").write_text((r / "summary.json").read_text()[:99]),
     "summary.json", "is not valid JSON"),
    ("summary.json empty", lambda r: (r / "summary.json").write_text(""), "summary.json", "is not valid JSON"),
    ("summary.json nested deeply", lambda r: (r / "summary.json").write_text("[" * 100_000 + "]" * 100_000),
     "summary.json", "nested too deeply"),
    ("config.yaml nested deeply", lambda r: (r / "config.yaml").write_text("a: " + "[" * 5000 + "]" * 5000),
     "config.yaml", "nested too deeply"),
    ("config.yaml a list", lambda r: (r / "config.yaml").write_text("- 1\n- 2\n"), "config.yaml", "holds a list"),
    ("config.yaml text", lambda r: (r / "config.yaml").write_text("hello\n"), "config.yaml", "holds text"),
    ("config.yaml empty", lambda r: (r / "config.yaml").write_text(""), "config.yaml", "holds nothing"),
    ("config.yaml binary", lambda r: (r / "config.yaml").write_bytes(b"\xff\xfe\x00\x01"), "config.yaml",
     "is not text"),
    ("config.yaml bad syntax", lambda r: (r / "config.yaml").write_text("a: [1, 2\n"), "config.yaml",
     "is not valid YAML"),
    ("config.yaml python tag", lambda r: (r / "config.yaml").write_text("!!python/object/apply:os.system [echo]\n"),
     "config.yaml", "is not valid YAML"),
    ("config backbone a number", lambda r: (r / "config.yaml").write_text("backbone: 7\n"), "config.yaml",
     "backbone 7, not text"),
    ("config tol text", lambda r: (r / "config.yaml").write_text("backbone: odenet\nsolver: dopri5\nrtol: low\n"),
     "config.yaml", "rtol 'low', not a number"),
    ("config of a dynamics run", lambda r: (r / "config.yaml").write_text("system: spiral\n"), "config.yaml",
     "names no backbone"),
    ("sweep.json a list", lambda r: (r / "sweep.json").write_text("[]"), "sweep.json", "holds a list"),
    ("sweep rows not objects", lambda r: rewrite_json(r / "sweep.json", lambda d: d.update(rows=[1, 2])),
     "sweep.json", "not a sweep row"),
    ("sweep rows a mapping", lambda r: rewrite_json(r / "sweep.json", lambda d: d.update(rows={"a": 1})),
     "sweep.json", "rows that are a mapping"),
    ("sweep acc text", lambda r: rewrite_json(r / "sweep.json", lambda d: d["rows"][0].update(acc="high")),
     "sweep.json", "acc 'high', not a number"),
    ("sweep row without acc", lambda r: rewrite_json(r / "sweep.json", lambda d: d["rows"][1].pop("acc")),
     "sweep.json", "(row 2) has no acc"),
    ("sweep row without nfe", lambda r: rewrite_json(r / "sweep.json", lambda d: d["rows"][1].pop("nfe_forward")),
     "sweep.json", "has no nfe_forward"),
    ("sweep meta images text", lambda r: rewrite_json(r / "sweep.json", lambda d: d["meta"].update(images="many")),
     "sweep.json", "images 'many', not a whole number"),
    ("sweep meta a list", lambda r: rewrite_json(r / "sweep.json", lambda d: d.update(meta=[1])), "sweep.json",
     "holds a list, not a sweep's meta"),
    ("summary.json a list", lambda r: (r / "summary.json").write_text("[1, 2]"), "summary.json", "holds a list"),
    ("summary test acc high", lambda r: rewrite_json(r / "summary.json", lambda d: d["test"].update(acc="high")),
     "summary.json", "acc 'high', not a number"),
    ("summary best acc 7", lambda r: rewrite_json(r / "summary.json", lambda d: d.update(best_acc=7)),
     "summary.json", "not a share between 0 and 1"),
    ("summary params negative", lambda r: rewrite_json(r / "summary.json", lambda d: d.update(params=-5)),
     "summary.json", "params -5, not a whole number"),
    ("summary test a list", lambda r: rewrite_json(r / "summary.json", lambda d: d.update(test=[1])),
     "summary.json", "test [1], not a mapping"),
    ("metrics row without epoch", lambda r: metrics_line(r, 0, {k: v for k, v in first_train(r).items()
                                                                if k != "epoch"}), "metrics.jsonl", "has no epoch"),
    ("metrics split 7", lambda r: metrics_line(r, 0, {**first_train(r), "split": 7}), "metrics.jsonl",
     "has split 7"),
    ("metrics value text", lambda r: metrics_line(r, 0, {**first_train(r), "acc": "x"}), "metrics.jsonl",
     "has acc 'x', not a number"),
    ("metrics epoch negative", lambda r: metrics_line(r, 0, {**first_train(r), "epoch": -1}), "metrics.jsonl",
     "has epoch -1, not a whole number"),
    ("metrics row a list", lambda r: metrics_line(r, 0, [1, 2]), "metrics.jsonl", "is a JSON list"),
    ("metrics line not JSON", lambda r: metrics_line(r, 0, "{nope"), "metrics.jsonl", "line 1 is not JSON"),
    ("metrics binary", lambda r: (r / "metrics.jsonl").write_bytes(b"\xff\x00\xfe"), "metrics.jsonl",
     "cannot be read"),
    ("per_sample non-numeric cell", lambda r: csv_lines(r, lambda ls: cell(ls, 1, "nfe_forward", "many")),
     "per_sample.csv", "line 2 has nfe_forward 'many'"),
    ("per_sample short row", lambda r: csv_lines(r, lambda ls: [*ls[:3], ls[3].rsplit(",", 2)[0], *ls[4:]]),
     "per_sample.csv", "line 4 has fewer cells"),
    ("per_sample long row", lambda r: csv_lines(r, lambda ls: [*ls[:3], ls[3] + ",1,2", *ls[4:]]),
     "per_sample.csv", "line 4 has more cells"),
    ("per_sample no header", lambda r: csv_lines(r, lambda ls: ls[1:]), "per_sample.csv", "column in its first"),
    ("per_sample header only", lambda r: csv_lines(r, lambda ls: ls[:1]), "per_sample.csv", "has a header but no"),
    ("per_sample empty", lambda r: (r / "per_sample.csv").write_text(""), "per_sample.csv", "column in its first"),
    ("per_sample binary", lambda r: (r / "per_sample.csv").write_bytes(b"solver,tol\x00\xff\xfe\n"),
     "per_sample.csv", "cannot be read as CSV"),
    ("per_sample NUL bytes", lambda r: csv_lines(r, lambda ls: [ls[0], "\x00" + ls[1]]),
     "per_sample.csv", "line 2 has solver '\\x00dopri5', not an adaptive solver's name"),
    ("per_sample negative count", lambda r: csv_lines(r, lambda ls: cell(ls, 5, "nfe_forward", "-3")),
     "per_sample.csv", "nfe_forward '-3', not a whole number of at least 0"),
    ("per_sample batched NFE 0", lambda r: csv_lines(r, lambda ls: [cell([ls[0], line], 1, "nfe_forward_batched",
                                                                         "0")[1] if i else line
                                                                    for i, line in enumerate(ls)]),
     "per_sample.csv", "nfe_forward_batched '0', not a whole number of at least 1"),
    ("per_sample confidence 2", lambda r: csv_lines(r, lambda ls: cell(ls, 2, "confidence", "2")),
     "per_sample.csv", "confidence '2', not a number in [0, 1]"),
    ("per_sample correct maybe", lambda r: csv_lines(r, lambda ls: cell(ls, 2, "correct", "maybe")),
     "per_sample.csv", "correct 'maybe', not True or False"),
    ("per_sample tol nan", lambda r: csv_lines(r, lambda ls: cell(ls, 2, "tol", "nan")), "per_sample.csv",
     "tol 'nan', not a positive number"),
    ("per_sample of an earlier sweep (flag)", lambda r: rewrite_json(r / "sweep.json",
                                                                     lambda d: d["meta"].update(per_sample=False)),
     "per_sample.csv", "belongs to an earlier sweep"),
    ("per_sample of an earlier sweep (settings)",
     lambda r: rewrite_json(r / "sweep.json", lambda d: [d["meta"].pop("per_sample"),
                                                         d.update(rows=[x for x in d["rows"] if x["tol"] != 0.1])]),
     "per_sample.csv", "which has no dopri5 tol 0.1"),
    ("sweep of an earlier last.pt", lambda r: rewrite_json(r / "sweep.json", lambda d: d["meta"].update(epoch=0)),
     "sweep.json", "it is out of date"),
]


@pytest.mark.parametrize("damage, named, fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_damaged_run_file_is_one_sentence_and_nothing_changes(run, tmp_path, capsys, damage, named, fragment):
    damage(run)
    before = snapshot(run)
    code = report_main([str(run), "--out", str(tmp_path / "report")])
    assert_one_sentence(code, capsys.readouterr().err, str(run / named), fragment)
    assert snapshot(run) == before and not (tmp_path / "report").exists()


def test_a_torn_last_metrics_line_is_a_crash_mid_write_and_reported(run, tmp_path):
    (run / "metrics.jsonl").write_text((run / "metrics.jsonl").read_text() + '{"split": "tr')
    assert report_main([str(run), "--out", str(tmp_path / "report")]) == 0


# ------------------------------------------------------------------------- class 5: stale files

def test_a_resweep_without_per_sample_removes_the_old_per_sample_outputs(run, tmp_path):
    assert sorted(p.name for p in run.glob("per_sample*")) != []
    assert sweep(run) == 0
    assert sorted(p.name for p in run.glob("per_sample*")) == []
    assert json.loads((run / "sweep.json").read_text())["meta"]["per_sample"] is False
    assert report_main([str(run), "--out", str(tmp_path / "report")]) == 0
    assert "Per-image NFE across runs" not in (tmp_path / "report" / "report.md").read_text()


def test_a_run_trained_on_after_its_sweep_is_not_shown_beside_it(swept, tmp_path, capsys):
    run = tmp_path / "runs" / "ode"
    shutil.copytree(swept, run)
    data = Path(json.loads((run / "summary.json").read_text())["config"]["data_dir"])
    summary_before = (run / "summary.json").read_bytes()
    # A resume with more epochs, interrupted before its end: summary.json is the earlier end's.
    rows = (run / "metrics.jsonl").read_text()
    assert train_main(train_args(data, tmp_path / "runs", "ode", "--epochs", "2", "--resume",
                                 str(run / "last.pt"))) == 0
    (run / "summary.json").write_bytes(summary_before)
    capsys.readouterr()
    assert report_main([str(run), "--out", str(tmp_path / "report")]) == 2
    assert "sweep of the run's last.pt after epoch 1, but the run has trained 2 epochs" in capsys.readouterr().err
    (run / "sweep.json").unlink()
    for stale in run.glob("per_sample*"):
        stale.unlink()
    loaded = load_run(run)
    assert loaded.summary is None and loaded.status.startswith("incomplete")  # the summary of epoch 1 is not shown
    assert rows in (run / "metrics.jsonl").read_text()


# ------------------------------------------------------------------------- hypothesis

SETTINGS = settings(max_examples=45, deadline=timedelta(seconds=30), derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])
JSON = st.recursive(st.none() | st.booleans() | st.integers(-10 ** 20, 10 ** 20) | st.floats() | st.text(max_size=6),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                    max_leaves=6)
FILES = ("config.yaml", "summary.json", "sweep.json", "metrics.jsonl", "per_sample.csv")


def paths(value, prefix=()) -> list[tuple]:
    """Every place in a parsed document (a key or index path)."""
    found = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            found += paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += paths(v, (*prefix, i))
    return found


def replace(value, path: tuple, new, delete: bool):
    if not path:
        return new
    head, rest = path[0], path[1:]
    if not rest and delete:
        value.pop(head) if isinstance(value, dict) else value.pop(head)
    else:
        value[head] = replace(value[head], rest, new, delete)
    return value


def damaged_document(data, name: str, text: str) -> bytes:
    """A damage of the file ``name`` (its ``text``): a value replaced or deleted, the text cut, or bytes added."""
    kind = data.draw(st.sampled_from(["value", "value", "value", "cut", "bytes"]))
    if kind == "cut":
        return text.encode()[: data.draw(st.integers(0, len(text.encode())))]
    if kind == "bytes":
        at = data.draw(st.integers(0, len(text)))
        return text[:at].encode() + data.draw(st.binary(min_size=1, max_size=8)) + text[at:].encode()
    if name == "per_sample.csv":
        lines = text.splitlines()
        row, col = data.draw(st.integers(0, min(len(lines) - 1, 5))), data.draw(st.integers(0, 12))
        cells = lines[row].split(",")
        cells[min(col, len(cells) - 1)] = data.draw(st.text(alphabet="0123456789-.eaTrueFlsn,\" ", max_size=6))
        lines[row] = ",".join(cells)
        return ("\n".join(lines) + "\n").encode()
    if name == "metrics.jsonl":
        lines = text.splitlines()
        index = data.draw(st.integers(0, len(lines) - 1))
        row = json.loads(lines[index])
        where = data.draw(st.sampled_from(paths(row)))
        lines[index] = json.dumps(replace(row, where, data.draw(JSON), data.draw(st.booleans()) and bool(where)))
        return ("\n".join(lines) + "\n").encode()
    doc = yaml.safe_load(text) if name.endswith(".yaml") else json.loads(text)
    where = data.draw(st.sampled_from(paths(doc)))
    doc = replace(doc, where, data.draw(JSON), data.draw(st.booleans()) and bool(where))
    return (yaml.safe_dump(doc) if name.endswith(".yaml") else json.dumps(doc)).encode()


@SETTINGS
@given(data=st.data())
def test_any_damaged_file_is_reported_or_refused_in_one_sentence(swept, tmp_path_factory, data):
    run = tmp_path_factory.mktemp("h") / "ode"
    shutil.copytree(swept, run)
    name = data.draw(st.sampled_from(FILES))
    (run / name).write_bytes(damaged_document(data, name, (swept / name).read_text()))
    try:
        combined_report([load_run(run)])
    except UserError as exc:
        message = str(exc)
        assert "\n" not in message and str(run) in message, message
