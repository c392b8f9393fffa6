"""Issue 21, classes 3, 6 and 8: options that would be silently ignored, entry points given bad places or
unbounded values, and numbers reported that did not happen.

One rule (``odenet.train.config.inapplicable_options``: the solver's, the levers' and the recipe's) says which
options do not apply; train.py refuses them given, the grid refuses one that applies to none of its points,
with the same sentence, and the demo and eval.py refuse through the same code.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from odenet.cli import demo_main, eval_main, grid_main, train_main

ROOT = Path(__file__).resolve().parents[1]


def assert_one_sentence(code: int, err: str, *fragments: str, exit_code: int = 2) -> None:
    assert code == exit_code, err
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("error: "), err
    for fragment in fragments:
        assert fragment in err, err


def files_under(path: Path) -> list[Path]:
    return sorted(path.rglob("*")) if path.exists() else []


# (flags given to train.py, the sentence train.py and the grid refuse them with)
IGNORED = [
    (["--optimizer", "adamw", "--momentum", "0.5"],
     "--momentum is SGD's; adamw has none: drop it, or use --optimizer sgd"),
    (["--schedule", "cosine", "--milestones", "1,2"],
     "--milestones belongs to the step schedule; --schedule cosine has no milestones"),
    (["--schedule", "onecycle", "--lr-gamma", "0.5"], "--lr-gamma belongs to the step schedule; --schedule onecycle"),
    (["--schedule", "step", "--warmup-epochs", "1"], "--warmup-epochs applies to --schedule cosine or onecycle"),
    (["--epochs", "1", "--per-sample-every", "2"], "--per-sample-every 2 never comes round in a run of --epochs 1"),
    (["--dataset", "mnist-5k", "--data-dir", "/etc/hostname"], "--data-dir does not apply to mnist-5k, which is read "
                                                               "from an installed package"),
    (["--dataset", "mnist-5k", "--download"], "--download does not apply to mnist-5k"),
    (["--force"], "--force lets a resumed run take other settings; without --resume there is none"),
    (["--backbone", "mlp", "--width", "8"], "--width applies to odenet, resnet, rknet, stem-only; drop it for mlp"),
    (["--backbone", "resnet", "--augment-dim", "2"], "--augment-dim widens the odenet backbone's ODE state"),
    (["--backbone", "rknet", "--steer", "0.1"], "--steer does not apply: rknet is fixed-step RK4"),
    (["--adjoint", "--error-reg", "0.1"], "--error-reg differentiates the forward solve's error estimates"),
    (["--solver", "rk4", "--error-reg", "0.1"], "--error-reg does not apply: rk4 is a fixed-step solver"),
    (["--solver", "rk4", "--first-step", "reuse"], "--first-step does not apply: rk4 is a fixed-step solver"),
]


@pytest.mark.parametrize("argv, sentence", IGNORED, ids=[" ".join(a) for a, _ in IGNORED])
def test_train_refuses_an_option_that_would_be_ignored(tmp_path, capsys, argv, sentence):
    code = train_main([*argv, "--out-dir", str(tmp_path / "runs"), "--run-name", "x"])
    assert_one_sentence(code, capsys.readouterr().err, sentence)
    assert files_under(tmp_path / "runs") == []


def grid_flags(argv: list[str]) -> tuple[dict, dict]:
    """train.py's flags as a grid: the first option an axis of one value, the others base."""
    from odenet.config import parse
    from odenet.train.config import TrainConfig

    cfg, explicit = parse(TrainConfig, argv, "t", "t")
    values = {k: getattr(cfg, k) for k in explicit}
    first = next(iter(values))
    return {first: [values.pop(first)]}, values


@pytest.mark.parametrize("argv, sentence", IGNORED, ids=[" ".join(a) for a, _ in IGNORED])
def test_the_grid_refuses_it_with_the_same_sentence_when_no_point_takes_it(tmp_path, capsys, argv, sentence):
    axis, base = grid_flags(argv)
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({"base": {"epochs": 2, **base} if "epochs" not in {**axis, **base} else base,
                                    "grid": [axis], "out_dir": str(tmp_path / "runs")}))
    code = grid_main(["--config", str(path)])
    assert_one_sentence(code, capsys.readouterr().err, sentence, "(in every point of the grid it was given for)")
    assert files_under(tmp_path / "runs") == []


def test_an_axis_that_applies_to_some_points_is_kept_for_those(tmp_path):
    from odenet.grid import GridPlan, expand

    runs = expand(GridPlan(base={"dataset": "mnist-5k", "epochs": 2, "error_reg": 0.1},
                           grid=[{"backbone": ["odenet"], "adjoint": [False, True]}], out_dir=str(tmp_path)))
    assert [(r.adjoint, r.error_reg) for r in runs] == [(False, 0.1), (True, None)]
    runs = expand(GridPlan(base={"dataset": "mnist-5k", "epochs": 2},
                           grid=[{"optimizer": ["sgd", "adamw"], "momentum": [0.5]}], out_dir=str(tmp_path)))
    assert [(r.optimizer, r.momentum) for r in runs] == [("sgd", 0.5), ("adamw", 0.9)]


def test_the_demo_refuses_epochs_0_and_many_as_train_py_does(tmp_path, capsys):
    out = tmp_path / "demo"
    for value in ("0", "many"):
        assert train_main(["--epochs", value, "--out-dir", str(tmp_path / "t")]) == 2
        expected = capsys.readouterr().err
        code = demo_main(["--config", str(ROOT / "configs" / "demo.yaml"), "--out-dir", str(out), "--epochs", value])
        assert_one_sentence(code, capsys.readouterr().err, expected.strip().removeprefix("error: "))
    assert files_under(out) == [] and files_under(tmp_path / "t") == []


@pytest.fixture(scope="module")
def mnist5k_mlp(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mlp")
    assert train_main(["--dataset", "mnist-5k", "--backbone", "mlp", "--epochs", "1", "--limit-train-batches", "2",
                       "--batch-size", "32", "--test-batch-size", "500", "--out-dir", str(out), "--run-name", "m",
                       "--no-progress"]) == 0
    return out / "m"


def test_eval_refuses_a_data_dir_for_an_embedded_dataset_with_train_pys_sentence(mnist5k_mlp, tmp_path, capsys):
    assert train_main(["--dataset", "mnist-5k", "--data-dir", "/etc/hostname", "--out-dir", str(tmp_path)]) == 2
    sentence = capsys.readouterr().err.strip().removeprefix("error: ")
    code = eval_main(["--checkpoint", str(mnist5k_mlp / "last.pt"), "--data-dir", "/etc/hostname",
                      "--out", str(tmp_path / "e")])
    assert_one_sentence(code, capsys.readouterr().err, sentence)
    assert files_under(tmp_path / "e") == []


def test_eval_reports_the_batch_that_ran(mnist5k_mlp, tmp_path):
    """--batch-size 5000 on the 1,000 test images: one batch of 1,000 ran, and that is what is reported."""
    assert eval_main(["--checkpoint", str(mnist5k_mlp / "last.pt"), "--batch-size", "5000", "--timing-repeats", "1",
                      "--no-tensorboard", "--out", str(tmp_path / "e")]) == 0
    meta = json.loads((tmp_path / "e" / "sweep.json").read_text())["meta"]
    assert meta["images"] == 1000 and meta["batch_size"] == 1000
    assert "batch 5000" not in (tmp_path / "e" / "report.md").read_text()


def test_eval_refuses_sweep_options_its_solvers_ignore(tmp_path, capsys):
    out = tmp_path / "o"
    assert train_main(["--dataset", "mnist-5k", "--epochs", "1", "--limit-train-batches", "1", "--batch-size", "16",
                       "--test-batch-size", "100", "--limit-test-batches", "1", "--tol", "0.1", "--out-dir", str(out),
                       "--run-name", "r", "--no-progress"]) == 0
    capsys.readouterr()
    for extra, fragment in (
            (["--solvers", "rk4", "--tols", "0.1", "--steps", "2"], "--tols apply to adaptive solvers, and the "
                                                                    "sweep's (rk4) take steps"),
            (["--tols", "0.1", "--steps", "2"],
             "--steps apply to fixed-step solvers, and the sweep's (dopri5) choose")):
        code = eval_main(["--checkpoint", str(out / "r" / "last.pt"), *extra, "--out", str(tmp_path / "e")])
        assert_one_sentence(code, capsys.readouterr().err, fragment)
    assert files_under(tmp_path / "e") == []


# ----------------------------------------------------------------------------- class 6: entry points

@pytest.mark.parametrize("main, argv, fragment", [
    (grid_main, ["--backbones", "mlp", "--set", "dataset=mnist-5k", "--out-dir", "/proc/odenet-grid"],
     "is not writable"),
    (demo_main, ["--config", str(ROOT / "configs" / "demo.yaml"), "--out-dir", "/proc/odenet-demo"],
     "is not writable"),
    (grid_main, ["--backbones", "mlp", "--jobs", "100000000000", "--out-dir", "OUT"],
     "--jobs 100,000,000,000 is more than any machine runs at once"),
    (grid_main, ["--backbones", "mlp", "--threads-per-job", "1000", "--out-dir", "OUT"],
     "--threads-per-job 1000 is more than this machine's"),
    (grid_main, ["--backbones", "mlp", "--set", "threads=2", "--out-dir", "OUT"], "give --threads-per-job instead"),
    (train_main, ["--augment-dim", "100000000000", "--out-dir", "OUT"],
     "--augment-dim 1e+11 is beyond any run's reach"),
    (train_main, ["--epochs", "99999999999", "--out-dir", "OUT"], "--epochs 1e+11 is beyond any run's reach"),
], ids=["grid out-dir /proc", "demo out-dir /proc", "grid jobs 1e11", "threads 1000", "grid set threads",
        "augment-dim 1e11", "epochs 1e11"])
def test_entry_points_refuse_bad_places_and_unbounded_values_before_any_work(tmp_path, capsys, main, argv, fragment):
    out = tmp_path / "out"
    code = main([a.replace("OUT", str(out)) for a in argv])
    assert_one_sentence(code, capsys.readouterr().err, fragment)
    assert files_under(out) == [] and not Path("/proc/odenet-grid").exists()


def test_eval_out_in_proc_is_refused_before_the_sweep(mnist5k_mlp, capsys):
    before = sorted(p.name for p in mnist5k_mlp.iterdir())
    code = eval_main(["--checkpoint", str(mnist5k_mlp / "last.pt"), "--out", "/proc/odenet-eval"])
    assert_one_sentence(code, capsys.readouterr().err, "is not writable", "choose another --out")
    assert sorted(p.name for p in mnist5k_mlp.iterdir()) == before


def test_a_yaml_value_beyond_any_run_is_one_sentence(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("augment_dim: 1.0e+100\n")
    code = train_main(["--config", str(tmp_path / "c.yaml"), "--out-dir", str(tmp_path / "o")])
    assert_one_sentence(code, capsys.readouterr().err, "--augment-dim 1e+100 is beyond any run's reach")


def test_jobs_per_gpu_without_a_gpu_is_refused(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code = grid_main(["--backbones", "mlp", "--jobs", "2", "--jobs-per-gpu", "2", "--out-dir", str(tmp_path / "o")])
    assert_one_sentence(code, capsys.readouterr().err, "--jobs-per-gpu shares GPUs between points")


@pytest.mark.parametrize("argv, fragment", [
    (["{nope"], "(the argument is not JSON)"), (["[1]"], "no object with a config"),
    (["{}", "{}"], "(got 2 arguments)"),
    (['{"config": {"epochs": 1}}'], "its config lacks out_dir"),
    (['{"config": {"out_dir": "o", "run_name": "r", "frob": 1}}'], "unknown key 'frob'"),
    (['{"config": {"out_dir": "o", "run_name": "r", "epochs": 0}}'], "--epochs must be at least 1"),
], ids=["not JSON", "a list", "two arguments", "no out_dir", "unknown key", "epochs 0"])
def test_a_bad_point_spec_is_one_sentence_exit_2(tmp_path, monkeypatch, capsys, argv, fragment):
    from odenet.grid.job import main

    monkeypatch.chdir(tmp_path)
    assert_one_sentence(main(argv), capsys.readouterr().err, "python -m odenet.grid takes one argument", fragment)
    assert files_under(tmp_path) == []


def test_python_m_odenet_grid_without_a_spec_exits_2_not_130(tmp_path):
    result = subprocess.run([sys.executable, "-m", "odenet.grid"], capture_output=True, text=True, cwd=tmp_path,
                            timeout=120)
    assert_one_sentence(result.returncode, result.stderr, "(got 0 arguments)")
