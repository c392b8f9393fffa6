"""Train-time sweeps: grid expansion, resumability, and the combined report end to end."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from odenet.cli import grid_main
from odenet.config import ConfigError
from odenet.grid import GridArgs, GridPlan, expand, load_plan, parse_grid_args, prepare, run_grid

ROOT = Path(__file__).resolve().parents[1]


def plan(tmp_path, grid, **base) -> GridPlan:
    return GridPlan(base={"dataset": "mnist-5k", "epochs": 1, **base}, grid=grid, out_dir=str(tmp_path / "sw"))


def test_grid_collapses_options_that_do_not_apply(tmp_path):
    runs = expand(plan(tmp_path, [{"backbone": ["resnet", "odenet"], "tol": [1e-1, 1e-3], "adjoint": [False, True]}]))
    names = [r.run_name for r in runs]
    assert names == ["resnet-s0", "odenet-dopri5-tol0.1-direct-s0", "odenet-dopri5-tol0.1-adjoint-s0",
                     "odenet-dopri5-tol0.001-direct-s0", "odenet-dopri5-tol0.001-adjoint-s0"]
    assert runs[0].solver is None and runs[4].adjoint and runs[4].rtol == 1e-3


def test_adjoint_only_options_apply_to_the_adjoint_points_only(tmp_path):
    runs = expand(plan(tmp_path, [{"backbone": ["odenet"], "adjoint": [False, True]}], adjoint_tol=1e-4,
                       seminorm=True))
    assert [(r.adjoint, r.adjoint_tol, r.seminorm) for r in runs] == [(False, None, None), (True, 1e-4, True)]


def test_grid_over_other_options_names_them_and_fixed_solvers_take_steps(tmp_path):
    runs = expand(plan(tmp_path, [{"backbone": ["odenet"], "solver": ["rk4"], "lr": [0.1, 0.05]}]))
    assert [r.run_name for r in runs] == ["odenet-rk4-steps6-direct-lr0.1-s0", "odenet-rk4-steps6-direct-lr0.05-s0"]


def test_grid_yaml_and_cli_flags(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"base": {"dataset": "mnist-5k"}, "grid": [{"backbone": ["resnet"]}],
                                    "eval": {"tols": [0.1]}, "out_dir": "x"}))
    p = load_plan(GridArgs(config=str(path), set=["epochs=3"], seeds=[1, 2], backbones=["mlp"]))
    assert p.base == {"dataset": "mnist-5k", "epochs": 3} and p.grid == [{"backbone": ["mlp"], "seed": [1, 2]}]
    assert p.eval == {"tols": [0.1]} and p.out_dir == "x"


@pytest.mark.parametrize("data, message", [
    ({"grid": [{"backbone": ["resnet"]}], "bsae": {}}, "unknown key 'bsae'"),
    ({"grid": [{"backbone": ["resnet"]}], "base": {"tl": 1}}, "unknown option 'tl'"),
    ({"grid": [{"backbone": ["resnet"]}], "eval": {"tol": [1]}}, "unknown key 'tol' in"),
    ({"base": {}}, "the grid is empty"),
])
def test_bad_sweep_files(tmp_path, data, message):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=message):
        load_plan(GridArgs(config=str(path)))


def test_every_shipped_config_loads():
    from odenet.train.config import parse_train_args

    from odenet.config import parse
    from odenet.dynamics.config import FitAllConfig, LatentConfig, fit_configs, resolve_latent

    for path in sorted((ROOT / "configs").glob("*.yaml")):
        if path.name == "dynamics-fit-all.yaml":
            cfg, explicit = parse(FitAllConfig, ["--config", str(path)], "t", "t")
            assert len(fit_configs(cfg, explicit)) == 5
        elif path.name == "dynamics-latent.yaml":
            assert resolve_latent(*parse(LatentConfig, ["--config", str(path)], "t", "t")).iters > 0
        elif path.name == "dynamics-heartbeats.yaml":
            from odenet.dynamics.beats_config import HeartbeatsConfig, resolve_heartbeats

            assert resolve_heartbeats(*parse(HeartbeatsConfig, ["--config", str(path)], "t", "t")).iters > 0
        elif "grid" in yaml.safe_load(path.read_text()):
            assert expand(load_plan(GridArgs(config=str(path))))
        else:
            assert parse_train_args(["--config", str(path)]).backbone


def test_prepare_skips_complete_resumes_interrupted_and_sets_aside_broken(tmp_path):
    cfg = expand(plan(tmp_path, [{"backbone": ["resnet"]}]))[0]
    run_dir = Path(cfg.out_dir) / cfg.run_name
    assert prepare(cfg) is cfg
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    (run_dir / "metrics.jsonl").write_text("")
    assert prepare(cfg) is cfg and not run_dir.exists() and run_dir.with_name(run_dir.name + ".incomplete-1").exists()
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    (run_dir / "last.pt").write_bytes(b"x")
    assert prepare(cfg).resume == str(run_dir / "last.pt")
    (run_dir / "summary.json").write_text("{}")
    assert prepare(cfg) is None
    (run_dir / "config.yaml").write_text(yaml.safe_dump({**cfg.to_dict(), "lr": 0.5}))
    with pytest.raises(ConfigError, match=r"holds a run with other settings \(lr\)"):
        prepare(cfg)


def test_sweep_end_to_end_then_rerun_reuses_finished_runs(tiny_fashion, tmp_path, monkeypatch):
    p = GridPlan(base={"dataset": "fashion-mnist", "data_dir": str(tiny_fashion), "epochs": 2, "batch_size": 32,
                        "test_batch_size": 32, "limit_train_batches": 2, "limit_test_batches": 1},
                  grid=[{"backbone": ["resnet"]}, {"backbone": ["odenet"], "tol": [1e-1], "adjoint": [False, True]}],
                  eval={"tols": [1e-1, 1e-2], "limit_test_batches": 1}, out_dir=str(tmp_path / "sw"))
    summaries, out = run_grid(p)
    assert [s["config"]["backbone"] for s in summaries] == ["resnet", "odenet", "odenet"]
    md = (out / "report.md").read_text()
    assert "Table 1 (Chen et al. 2018)" in md and "backward/forward NFE ratio" in md
    for name in ("fig3a_nfe_vs_error", "fig3b_nfe_vs_time", "fig3c_nfe_forward_vs_backward",
                 "fig3d_nfe_over_training"):
        assert (out / f"{name}.png").is_file()
    assert (out / "odenet-dopri5-tol0.1-adjoint-s0" / "sweep.json").is_file()
    assert list((out / "_report").glob("events.out.tfevents.*"))

    def no_training(cfg):
        raise AssertionError(f"{cfg.run_name} was trained again")

    monkeypatch.setattr("odenet.grid.job.train", no_training)
    summaries_again, _ = run_grid(p)
    assert summaries_again == summaries


def test_sweep_cli_reports_bad_input_with_exit_2(capsys):
    assert grid_main(["--backbones", "resnet", "--set", "epochs"]) == 2
    assert "--set expects KEY=VALUE" in capsys.readouterr().err


# --------------------------------------------------------------------------- bad input: one sentence, nothing run

TINY = {"dataset": "mnist-5k", "epochs": 1}
BAD_YAML = [
    ({"base": TINY, "grid": [{"backbone": []}]}, "backbone in .* grid entry 1 has no values"),
    ({"base": TINY, "grid": {"backbone": ["resnet"]}, "eval": 5}, "eval in .* must be a mapping"),
    ({"base": [1], "grid": {"backbone": ["resnet"]}}, "base in .* must be a mapping"),
    ({"base": TINY, "grid": {"backbone": ["resnet"]}, "out_dir": 5}, r"out_dir \(in .*\) expects a string"),
    ({"base": TINY, "grid": 5}, "grid in .* must be a mapping"),
    ({"base": {"epochs": "two"}, "grid": {"backbone": ["resnet"]}}, r"epochs \(in .* base\) expects an integer"),
    ({"base": TINY, "grid": {"backbone": ["resnet"], "lr": ["fast"]}}, r"lr \(in .* grid entry 1\) expects a number"),
    ({"base": TINY, "grid": {"backbone": ["resnet"]}, "eval": {"tols": ["abc"]}}, r"tols \(in .* eval\) expects"),
    ({"base": TINY, "grid": {"backbone": ["odenet"]}, "eval": {"tols": [-1]}}, "--tols must be positive"),
    ({"base": TINY, "grid": {"backbone": ["odenet"]}, "eval": {"solvers": ["dopri"]}}, "unknown solver 'dopri'"),
    ({"base": TINY, "grid": {"backbone": ["odenet"], "tol": [0]}}, "--tol must be a positive number"),
    ({"base": TINY, "grid": {"backbone": ["resnet"]}, "title": [1]}, r"title \(in .*\) expects a string"),
]
BAD_FLAGS = [
    (["--jobs", "0"], "--jobs must be at least 1"),
    (["--jobs", "two"], "--jobs expects an integer"),
    (["--launcher", "slurm"], "unknown --launcher 'slurm'"),
    (["--slurm-partition", "gpu"], "--slurm-partition applies to --launcher submitit only"),
    (["--launcher", "submitit", "--jobs", "2"], "--jobs is for the local launcher"),
    (["--launcher", "submitit", "--submitit-executor", "local", "--slurm-time", "soon"], "--slurm-time expects"),
    (["--no-no-eval"], "unknown flag --no-no-eval"),
    (["--eval-tols", "x"], "--eval-tols expects a list of"),
    (["--set", "epochs=two"], r"epochs \(in --set epochs\) expects an integer"),
    (["--tols", "-1"], "--tol must be a positive number"),
]


def files_under(path: Path) -> set[Path]:
    return {p for p in path.rglob("*")}


def assert_one_sentence_exit_2(capsys, argv, message, root):
    before = files_under(root)
    assert grid_main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert re.search(message, err), err
    assert files_under(root) == before  # nothing written


@pytest.mark.parametrize("data, message", BAD_YAML, ids=[m for _, m in BAD_YAML])
def test_a_bad_sweep_file_is_one_sentence_and_nothing_runs(tmp_path, monkeypatch, capsys, data, message):
    monkeypatch.chdir(tmp_path)
    data = {"out_dir": str(tmp_path / "sw"), **data}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(data))
    assert_one_sentence_exit_2(capsys, ["--config", "s.yaml"], message, tmp_path)


@pytest.mark.parametrize("flags, message", BAD_FLAGS, ids=[m for _, m in BAD_FLAGS])
def test_a_bad_flag_is_one_sentence_and_nothing_runs(tmp_path, monkeypatch, capsys, flags, message):
    monkeypatch.chdir(tmp_path)
    argv = ["--backbones", "odenet", "--set", "dataset=mnist-5k", "--out-dir", str(tmp_path / "sw"), *flags]
    assert_one_sentence_exit_2(capsys, argv, message, tmp_path)


@pytest.mark.parametrize("text", ["[: not yaml", "- a list\n- of things\n"])
def test_a_run_directory_with_a_broken_config_is_one_sentence(tmp_path, monkeypatch, capsys, text):
    monkeypatch.chdir(tmp_path)
    broken = tmp_path / "sw" / "resnet-s0" / "config.yaml"
    broken.parent.mkdir(parents=True)
    broken.write_text(text)
    (tmp_path / "sw" / "odenet-dopri5-tol0.1-direct-s0").mkdir()  # would be moved aside if anything ran
    argv = ["--backbones", "resnet,odenet", "--tols", "0.1", "--set", "dataset=mnist-5k", "--out-dir", "sw"]
    assert_one_sentence_exit_2(capsys, argv, "sw/resnet-s0/config.yaml", tmp_path)


def test_yaml_numbers_without_a_dot_are_numbers_before_anything_trains(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("base: {dataset: mnist-5k, lr: 1e-2}\ngrid: {backbone: [odenet], tol: [1e-1]}\n"
                    "eval: {tols: [1e-2, 1e-3], reference_tol: 1e-6}\n")
    p = load_plan(GridArgs(config=str(path)))
    assert p.eval == {"tols": [1e-2, 1e-3], "reference_tol": 1e-6} and p.base["lr"] == 1e-2
    assert expand(p)[0].tol == 0.1


def test_eval_flag_switches_the_test_time_sweeps(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("grid: {backbone: [odenet]}\neval: {tols: [0.1]}\n")
    assert parse_grid_args(["--config", str(path)]).eval == {"tols": [0.1]}
    assert parse_grid_args(["--config", str(path), "--no-eval"]).eval is None
    assert parse_grid_args(["--backbones", "odenet"]).eval is None
    assert parse_grid_args(["--backbones", "odenet", "--eval"]).eval == {}
    assert parse_grid_args(["--backbones", "odenet", "--eval-tols", "1e-2"]).eval == {"tols": [0.01]}


def test_grid_eval_section_takes_boolean_options():
    from odenet.grid.plan import check_eval

    ev = {"per_sample": True, "tensorboard": False, "tols": ["1e-2"]}
    check_eval(ev, "grid.yaml eval")
    assert ev == {"per_sample": True, "tensorboard": False, "tols": [0.01]}
    with pytest.raises(ConfigError, match="per_sample"):
        check_eval({"per_sample": "maybe"}, "grid.yaml eval")
