"""Issue 21, class 2 (and the unsafe-pickle sentence of class 8): resuming from, or evaluating, a checkpoint
whose contents are damaged.

Every entry a resume reads (progress counters, metrics, RNG states, model, optimizer, schedule, config) is
checked against what train.py writes before anything is restored or any file of the run is touched: exit 2,
one sentence naming the checkpoint and the entry, the run's files unchanged. per_sample_train.jsonl is refused
as metrics.jsonl is. Table-driven cases end to end, then hypothesis damaging checkpoint dictionaries.
"""

from __future__ import annotations

import copy
import json
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from conftest import assert_one_sentence, make_mnist_folder, snapshot  # noqa: E402
from odenet.cli import eval_main, train_main  # noqa: E402
from odenet.errors import UserError  # noqa: E402


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["--dataset", "fashion-mnist", "--data-dir", str(data), "--backbone", "odenet", "--width", "8", "--tol",
            "1e-2", "--batch-size", "32", "--test-batch-size", "64", "--limit-train-batches", "2",
            "--limit-test-batches", "1", "--out-dir", str(out), "--run-name", "x", "--no-progress", *extra]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ckpt")
    make_mnist_folder(root / "data" / "FashionMNIST" / "raw")
    assert train_main(train_args(root / "data", root / "runs", "--epochs", "1")) == 0
    return root


@pytest.fixture
def run(trained, tmp_path) -> Path:
    shutil.copytree(trained / "runs" / "x", tmp_path / "runs" / "x")
    return tmp_path / "runs" / "x"


def damage_checkpoint(run: Path, change) -> Path:
    state = torch.load(run / "last.pt", weights_only=True)
    change(state)
    path = run / "last.pt"
    torch.save(state, path)
    return path


def first(mapping: dict) -> str:
    return next(iter(mapping))


CASES = [
    ("rng without numpy", lambda s: s["rng"].pop("numpy"), "rng lacks its entry 'numpy'"),
    ("rng a string", lambda s: s.update(rng="x"), "rng is 'x', not a mapping"),
    ("torch rng of another length", lambda s: s["rng"].update(torch=torch.zeros(5, dtype=torch.uint8)),
     "rng.torch is a torch.uint8 tensor of shape (5,)"),
    ("torch rng garbage", lambda s: s["rng"].update(torch=torch.zeros_like(s["rng"]["torch"])),
     "its rng state cannot be restored"),
    ("python rng out of range", lambda s: s["rng"].update(python=(3, tuple([2 ** 40] * 625), None)),
     "its rng state cannot be restored"),
    ("numpy rng keys text", lambda s: s["rng"]["numpy"].__setitem__(1, "keys"), "rng.numpy[1] is 'keys'"),
    ("metrics without best_acc", lambda s: s["metrics"].pop("best_acc"), "metrics lacks its entry 'best_acc'"),
    ("metrics best_epoch text", lambda s: s["metrics"].update(best_epoch="1"), "metrics.best_epoch is '1'"),
    ("metrics a list", lambda s: s.update(metrics=[1]), "metrics is a list of 1, not a mapping"),
    ("epoch as a string", lambda s: s.update(epoch="1"), "its epoch is '1', not a whole number"),
    ("step negative", lambda s: s.update(step=-2), "its step is -2, not a whole number"),
    ("batches_done a float", lambda s: s.update(batches_done=1.5), "its batches_done is 1.5"),
    ("config a list", lambda s: s.update(config=[1]), "its config is not a mapping"),
    ("model with an extra tensor", lambda s: s["model"].update(extra=torch.zeros(3)),
     'does not fit the model (Unexpected key(s) in state_dict: "extra")'),
    ("model missing a tensor", lambda s: s["model"].pop(first(s["model"])), "Missing key(s) in state_dict"),
    ("model tensor of another shape", lambda s: s["model"].update({first(s["model"]): torch.zeros(2)}),
     "size mismatch"),
    ("model value text", lambda s: s["model"].update({first(s["model"]): "x"}),
     "its model entry is not a mapping of names to tensors"),
    ("model a list", lambda s: s.update(model=[1]), "its model entry is not a mapping"),
    ("optimizer of a model with other parameters", lambda s: s["optimizer"]["param_groups"][0].update(params=[0, 1]),
     "optimizer.param_groups[0].params is a list of 2, not a list of"),
    ("optimizer buffers of another model", lambda s: s["optimizer"]["state"].update({0: {"momentum_buffer":
                                                                                         torch.zeros(7)}}),
     "the optimizer of another model"),
    ("optimizer buffer text", lambda s: s["optimizer"]["state"].update({0: {"momentum_buffer": "x"}}),
     "its optimizer's momentum_buffer is a str, not a tensor"),
    ("optimizer lr text", lambda s: s["optimizer"]["param_groups"][0].update(lr="x"),
     "optimizer.param_groups[0].lr is 'x', not a number"),
    ("optimizer a string", lambda s: s.update(optimizer="x"), "optimizer is 'x', not a mapping"),
    ("scheduler a string", lambda s: s.update(scheduler="x"), "scheduler is 'x', not a mapping"),
    ("scheduler shadowing a method", lambda s: s["scheduler"].update(step="x"),
     "scheduler has an unexpected entry 'step'"),
    ("scheduler last_epoch text", lambda s: s["scheduler"].update(last_epoch="x"), "scheduler.last_epoch is 'x'"),
    ("scheduler milestones text", lambda s: s["scheduler"].update(milestones={"a": 1}),
     "scheduler.milestones holds 'a': 1, not numbers"),
]


@pytest.mark.parametrize("change, fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_resuming_a_damaged_checkpoint_is_one_sentence_and_touches_nothing(trained, run, capsys, change, fragment):
    path = damage_checkpoint(run, change)
    before = snapshot(run)
    code = train_main(train_args(trained / "data", run.parent, "--epochs", "2", "--resume", str(path)))
    assert_one_sentence(code, capsys.readouterr().err, f"checkpoint {path}", fragment)
    assert snapshot(run) == before


@pytest.mark.parametrize("change, fragment", [
    (lambda s: s["model"].update(extra=torch.zeros(3)), 'Unexpected key(s) in state_dict: "extra"'),
    (lambda s: s["model"].pop(first(s["model"])), "Missing key(s) in state_dict"),
    (lambda s: s.update(epoch="1"), "its epoch is '1', not a whole number"),
    (lambda s: s.update(config=[1]), "its config is not a mapping"),
    (lambda s: s.update(model={"a": "b"}), "its model entry is not a mapping of names to tensors"),
], ids=["unexpected key", "missing key", "epoch text", "config list", "model text"])
def test_eval_on_a_damaged_checkpoint_is_one_sentence(trained, run, capsys, change, fragment):
    path = damage_checkpoint(run, change)
    before = snapshot(run)
    code = eval_main(["--checkpoint", str(path), "--tols", "0.1", "--timing-repeats", "1", "--no-tensorboard"])
    assert_one_sentence(code, capsys.readouterr().err, str(path), fragment)
    assert snapshot(run) == before


def test_a_damaged_per_sample_train_line_refuses_the_resume_a_torn_last_one_is_dropped(trained, run, capsys):
    path = run / "per_sample_train.jsonl"
    rows = [json.dumps({"epoch": 1, "step": 2, "nfe_forward": [20, 26]}), "{not json",
            json.dumps({"epoch": 1, "step": 2})]
    for lines, line in (([rows[0], rows[1], rows[2]], "line 2 is not JSON"),
                        ([rows[0], json.dumps({"epoch": "1"})], "line 2 is not a row of an epoch"),
                        ([rows[0], json.dumps([1, 2]), rows[2]], "line 2 is not a row of an epoch")):
        path.write_text("\n".join(lines) + "\n")
        before = snapshot(run)
        code = train_main(train_args(trained / "data", run.parent, "--epochs", "2", "--resume", str(run / "last.pt")))
        assert_one_sentence(code, capsys.readouterr().err, str(path), line)
        assert snapshot(run) == before
    path.write_text(rows[0] + "\n" + json.dumps({"epoch": 2, "step": 4}) + "\n" + '{"epo')
    assert train_main(train_args(trained / "data", run.parent, "--epochs", "2", "--resume", str(run / "last.pt"))) == 0
    assert path.read_text() == rows[0] + "\n"  # the epoch-2 row (after the checkpoint) and the torn line dropped


class RunsCode:
    """A pickle that would run code if loaded unsafely: it makes the file ``marker``."""

    marker = Path("/nonexistent")

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_an_unsafe_pickle_is_refused_without_advice_to_load_it_anyway(tmp_path, capsys):
    RunsCode.marker = tmp_path / "ran"
    torch.save({"format": "odenet-checkpoint", "model": RunsCode(), "config": {}}, tmp_path / "evil.pt")
    for main, argv in ((train_main, ["--resume", str(tmp_path / "evil.pt"), "--out-dir", str(tmp_path / "o")]),
                       (eval_main, ["--checkpoint", str(tmp_path / "evil.pt")])):
        err = (main(argv), capsys.readouterr().err)
        assert_one_sentence(*err, "holds objects that safe loading refuses", "do not load it")
        assert "weights_only" not in err[1] and "will likely succeed" not in err[1] and "two options" not in err[1]
    assert not RunsCode.marker.exists()


# ------------------------------------------------------------------------- hypothesis

SETTINGS = settings(max_examples=80, deadline=timedelta(seconds=20), derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
VALUES = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70), st.floats(), st.text(max_size=4),
                   st.lists(st.integers(-3, 3), max_size=3),
                   st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                   st.builds(lambda shape, dtype: torch.zeros(shape, dtype=dtype),
                             st.lists(st.integers(0, 3), max_size=2), st.sampled_from([torch.uint8, torch.int64,
                                                                                       torch.float32])))


def places(value, prefix=()) -> list[tuple]:
    """Every place in a checkpoint dictionary (tensors are leaves; long lists contribute a few indices)."""
    found = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            found += places(v, (*prefix, k))
    elif isinstance(value, (list, tuple)):
        for i in sorted({0, 1, len(value) - 1} & set(range(len(value)))):
            found += places(value[i], (*prefix, i))
    return found


def put(value, where: tuple, new, delete: bool):
    if not where:
        return new
    head, rest = where[0], where[1:]
    if isinstance(value, tuple):
        return tuple(put(v, rest, new, delete) if i == head else v for i, v in enumerate(value))
    if not rest and delete:
        value.pop(head)
    else:
        value[head] = put(value[head], rest, new, delete)
    return value


@pytest.fixture(scope="module")
def pieces(trained):
    from odenet.train.build import build_data
    from odenet.train.config import parse_train_args

    cfg = parse_train_args(train_args(trained / "data", trained / "unused", "--epochs", "2"))
    return cfg, build_data(cfg, torch.device("cpu"), 0, 1), torch.load(trained / "runs" / "x" / "last.pt",
                                                                      weights_only=True)


@SETTINGS
@given(data=st.data())
def test_any_damaged_checkpoint_dictionary_is_restored_or_refused_in_one_sentence(pieces, tmp_path_factory, data):
    from odenet.run.checkpoint import load_checkpoint
    from odenet.train.build import build_model
    from odenet.train.optim import build_optimizer, build_schedule, steps_per_epoch
    from odenet.train.resume import check_resumable, check_resume_config, restore_state
    from odenet.train.step import train_step
    from odenet.train.trainer import RESUME_KEYS

    cfg, bundle, saved = pieces
    state = copy.deepcopy(saved)
    where = data.draw(st.sampled_from(places(state)))
    state = put(state, where, data.draw(VALUES), data.draw(st.booleans()) and bool(where))
    path = tmp_path_factory.mktemp("c") / "last.pt"
    torch.save(state, path)
    model = build_model(cfg, bundle)
    optimizer = build_optimizer(model.parameters(), cfg)
    scheduler = build_schedule(optimizer, cfg, steps_per_epoch(cfg, bundle.train))
    rng = torch.get_rng_state()
    try:
        loaded = load_checkpoint(path, required=RESUME_KEYS)
        check_resumable(loaded, str(path))
        check_resume_config(loaded["config"], cfg, str(path))
        restore_state(loaded, str(path), model, optimizer, scheduler, bundle.train.generator)
        images, labels = next(iter(bundle.train))  # what the resumed run does next: a step that must not fail
        train_step(model, images, labels, optimizer, list(model.parameters()))
        scheduler.after_step()
        scheduler.after_epoch()
    except UserError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc), str(exc)
    finally:
        torch.set_rng_state(rng)
