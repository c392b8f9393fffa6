"""Property-based: whatever bad flag value or YAML document train.py is given, it answers with exit 2,
one line on stderr, no traceback and nothing written (hypothesis; derandomized, so every run tries the
same examples)."""

from __future__ import annotations

import contextlib
import io
import math
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from odenet.cli import train_main  # noqa: E402
from odenet.solve import SOLVERS
from odenet.registry import catalogue  # noqa: E402
from odenet.train.config import TrainConfig  # noqa: E402

SETTINGS = settings(max_examples=60, deadline=timedelta(seconds=20), derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

AT_LEAST_1 = ("epochs", "batch_size", "test_batch_size", "limit_train_batches", "limit_test_batches",
              "max_num_steps", "checkpoint_every")
POSITIVE = ("lr", "tol", "rtol", "atol", "t1", "lr_gamma")
NON_NEGATIVE = ("momentum", "weight_decay")
CHOICES = {"backbone": catalogue("backbone"), "dataset": catalogue("dataset"), "solver": list(SOLVERS),
           "device": ["auto", "cpu", "cuda"], "amp": ["none", "bf16"], "on_solver_failure": ["stop", "skip-batch"]}
BOOLS = ("adjoint", "seminorm", "fast_rk", "download", "force", "progress", "compile", "channels_last")
KNOWN = {f for f in TrainConfig.__dataclass_fields__}


def parses(convert, text: str) -> bool:
    try:
        convert(text)
    except (ValueError, OverflowError):
        return False
    return True


def not_int_text() -> st.SearchStrategy[str]:
    return st.text(max_size=12).filter(lambda t: not parses(int, t) and not parses(float, t))


def not_float_text() -> st.SearchStrategy[str]:
    return st.text(max_size=12).filter(lambda t: not parses(float, t) and t.lower() not in ("none", "null"))


def bad_number(lowest_ok: float, strict: bool) -> st.SearchStrategy[float]:
    below = st.floats(max_value=lowest_ok, exclude_max=not strict, allow_nan=False, allow_infinity=False)
    return st.one_of(below, st.sampled_from([math.nan, math.inf, -math.inf]))


def bad_flag() -> st.SearchStrategy[list[str]]:
    """One flag with a value it must refuse (or a flag that does not exist)."""
    ints = st.tuples(st.sampled_from(AT_LEAST_1), st.one_of(st.integers(max_value=0).map(str), not_int_text()))
    positive = st.tuples(st.sampled_from(POSITIVE), st.one_of(bad_number(0.0, strict=True).map(repr),
                                                               not_float_text()))
    non_negative = st.tuples(st.sampled_from(NON_NEGATIVE), st.one_of(bad_number(0.0, strict=False).map(repr),
                                                                       not_float_text()))
    choice = st.sampled_from(sorted(CHOICES)).flatmap(
        lambda name: st.tuples(st.just(name), st.text(max_size=12).filter(lambda t: t not in CHOICES[name]
                                                                          and t.lower() not in ("none", "null"))))
    seed = st.tuples(st.just("seed"), st.one_of(st.integers(max_value=-1), st.integers(min_value=2 ** 32))
                     .map(str))
    run_name = st.tuples(st.just("run_name"), st.one_of(st.just(".."), st.just("."), st.text(max_size=8).map(
        lambda t: f"{t}/x"), st.text(max_size=8).map(lambda t: f"/{t}")))
    known = st.one_of(ints, positive, non_negative, choice, seed, run_name).map(
        lambda nv: ["--" + nv[0].replace("_", "-"), nv[1]])
    unknown = st.text(min_size=1, max_size=12).filter(lambda t: t.replace("-", "_") not in KNOWN
                                                      and not t.startswith("no-")).map(lambda t: ["--" + t])
    return st.one_of(known, unknown)


def wrong_value(name: str) -> st.SearchStrategy:
    """A YAML value of the wrong type, or out of range, for the option ``name``."""
    containers = st.one_of(st.lists(st.integers(), min_size=1, max_size=3), st.dictionaries(
        st.text(max_size=4), st.integers(), min_size=1, max_size=2))
    if name in AT_LEAST_1:
        return st.one_of(containers, st.booleans(), st.integers(max_value=0), not_int_text(),
                         st.floats().filter(lambda x: not (math.isfinite(x) and x.is_integer() and x >= 1)))
    if name in POSITIVE or name in NON_NEGATIVE:
        return st.one_of(containers, st.booleans(), not_float_text(), bad_number(0.0, strict=name in POSITIVE))
    if name in CHOICES:
        return st.one_of(containers, st.integers(), st.text(max_size=12).filter(
            lambda t: t not in CHOICES[name] and t.lower() not in ("none", "null")))
    # booleans
    return st.one_of(containers, st.integers(), st.floats(), st.text(max_size=8).filter(
        lambda t: t.lower() not in ("true", "false", "yes", "no", "none", "null")))


def bad_document() -> st.SearchStrategy[tuple[str, bool]]:
    """(YAML text, whether it was built to be wrong); free text counts only if it is not a valid config."""
    options = st.sampled_from(sorted({*AT_LEAST_1, *POSITIVE, *NON_NEGATIVE, *CHOICES, *BOOLS}))
    wrong = options.flatmap(lambda name: st.tuples(st.just(name), wrong_value(name))).map(
        lambda nv: yaml.safe_dump({nv[0].replace("_", st_dash(nv[0])): nv[1]}))
    unknown_key = st.text(min_size=1, max_size=10).filter(
        lambda t: t.replace("-", "_") not in KNOWN - {"config"}).map(lambda k: yaml.safe_dump({k: 1}))
    built = st.one_of(wrong, unknown_key).map(lambda doc: (doc, True))
    return st.one_of(built, st.text(max_size=40).map(lambda doc: (doc, False)))


def st_dash(name: str) -> str:
    return "-" if len(name) % 2 else "_"  # YAML keys may be written either way


def call(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = train_main(argv)
    return code, err.getvalue()


def check_refused(code: int, err: str, out: Path, given: object = None) -> None:
    assert code == 2, (given, err)
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("error: "), repr(err)
    assert not out.exists() or list(out.iterdir()) == []


@pytest.fixture
def base(tiny_fashion, tmp_path):
    out = tmp_path / "runs"
    argv = ["--dataset", "fashion-mnist", "--data-dir", str(tiny_fashion), "--backbone", "odenet", "--epochs", "1",
            "--limit-train-batches", "1", "--limit-test-batches", "1", "--no-progress", "--out-dir", str(out),
            "--run-name", "x"]
    return argv, out, tmp_path


@SETTINGS
@given(flag=bad_flag())
def test_any_bad_flag_value_is_refused_in_one_line(base, flag):
    argv, out, _ = base
    check_refused(*call([*argv, *flag]), out, flag)


@SETTINGS
@given(document=bad_document())
def test_any_bad_yaml_document_is_refused_in_one_line(base, document):
    text, built = document
    if not built:
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError:
            loaded = "not YAML"
        assume(loaded not in (None, {}))  # an empty document is a valid (empty) config
        assume(not isinstance(loaded, dict) or any(str(k).replace("-", "_") not in KNOWN - {"config"}
                                                   for k in loaded))
    argv, out, tmp_path = base
    argv = list(argv)
    if built:  # flags override YAML: drop the base flag the document sets, or it would hide the bad value
        key = "--" + next(iter(yaml.safe_load(text))).replace("_", "-")
        if key in argv:
            del argv[argv.index(key):argv.index(key) + 2]
    config = tmp_path / "c.yaml"
    config.write_text(text)
    check_refused(*call([*argv, "--config", str(config)]), out, text)
