"""Config precedence and the user-error catalogue: one sentence, exit 2, nothing written."""

from __future__ import annotations

import pytest

from odenet.cli import train_main
from odenet.config import ConfigError
from odenet.train.config import parse_train_args


def write_yaml(tmp_path, text: str):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


def test_defaults_are_the_paper_recipe():
    cfg = parse_train_args([])
    assert (cfg.backbone, cfg.dataset, cfg.solver, cfg.rtol, cfg.atol, cfg.adjoint) == \
        ("odenet", "mnist", "dopri5", 1e-3, 1e-3, False)
    assert (cfg.lr, cfg.momentum, cfg.batch_size, cfg.epochs, cfg.milestones, cfg.lr_gamma) == \
        (0.1, 0.9, 128, 160, [60, 100, 140], 0.1)


def test_yaml_overrides_defaults_and_flags_override_yaml(tmp_path):
    path = write_yaml(tmp_path, "epochs: 3\ntol: 1e-2\nbatch-size: 64\nmilestones: [1, 2]\n")
    cfg = parse_train_args(["--config", path, "--epochs", "5"])
    assert (cfg.epochs, cfg.tol, cfg.rtol, cfg.batch_size, cfg.milestones) == (5, 1e-2, 1e-2, 64, [1, 2])


def test_rtol_atol_override_tol():
    cfg = parse_train_args(["--tol", "1e-2", "--rtol", "1e-4"])
    assert (cfg.rtol, cfg.atol) == (1e-4, 1e-2)


def test_settings_that_do_not_apply_are_blanked_in_the_resolved_config():
    resnet = parse_train_args(["--backbone", "resnet"])
    assert (resnet.solver, resnet.tol, resnet.adjoint, resnet.steps) == (None, None, None, None)
    rk4 = parse_train_args(["--solver", "rk4", "--steps", "4"])
    assert (rk4.solver, rk4.steps, rk4.tol, rk4.rtol) == ("rk4", 4, None, None)
    rknet = parse_train_args(["--backbone", "rknet"])
    assert (rknet.solver, rknet.steps, rknet.adjoint) == ("rk4", 6, False)


@pytest.mark.parametrize("argv, message", [
    (["--tl", "1e-3"], "unknown flag --tl (did you mean '--tol'?)"),
    (["--tol", "abc"], "--tol expects a number, got 'abc'"),
    (["--tol", "0"], "--tol must be a positive number, got 0.0"),
    (["--tol=-1e-3"], "--tol must be a positive number, got -0.001"),
    (["--tol", "nan"], "--tol must be a positive number, got nan"),
    (["--epochs", "2.5"], "--epochs expects an integer, got '2.5'"),
    (["--backbone", "resnt"], "unknown --backbone 'resnt' (did you mean 'resnet'?)"),
    (["--dataset", "mnist5k"], "unknown --dataset 'mnist5k' (did you mean 'mnist-5k'?)"),
    (["--solver", "dpri5"], "unknown --solver 'dpri5' (did you mean 'dopri5'?)"),
    (["--device", "tpu"], "unknown --device 'tpu'"),
    (["--backbone", "resnet", "--tol", "1e-2"], "--tol does not apply: resnet has no ODE block"),
    (["--solver", "rk4", "--tol", "1e-2"], "--tol does not apply: rk4 is a fixed-step solver"),
    (["--steps", "4"], "--steps does not apply: dopri5 chooses its own steps"),
    (["--seminorm"], "--seminorm controls the adjoint solve's error"),
    (["--backbone", "rknet", "--adjoint"], "rknet backpropagates directly"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
])
def test_bad_flags_are_one_clear_sentence(argv, message):
    with pytest.raises(ConfigError) as err:
        parse_train_args(argv)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("text, message", [
    ("tl: 1e-3\n", "unknown key 'tl'"),
    ("epochs: many\n", "epochs (in"),
    ("adjoint: 3\n", "expects true or false"),
    ("- a\n- b\n", "must be a mapping"),
    ("epochs: [\n", "is not valid YAML"),
    ("lr: " + "[" * 5000 + "]" * 5000 + "\n", "nests its values deeper"),
])
def test_bad_yaml_is_one_clear_sentence(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        parse_train_args(["--config", write_yaml(tmp_path, text)])


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        parse_train_args(["--config", str(tmp_path / "absent.yaml")])


@pytest.mark.parametrize("argv", [["--tol", "0"], ["--tl", "1"], ["--backbone", "nope"], ["--solver", "x"]])
def test_train_exits_2_and_writes_nothing(tmp_path, capsys, argv):
    out = tmp_path / "runs"
    assert train_main([*argv, "--out-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert not out.exists()


def test_missing_dataset_exits_2_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ODENET_DATA", raising=False)
    (tmp_path / "empty").mkdir()
    assert train_main(["--dataset", "mnist", "--data-dir", str(tmp_path / "empty"), "--out-dir", "runs"]) == 2
    assert "mnist not found: looked in" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
