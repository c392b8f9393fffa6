"""Train-time sweeps: grid expansion, resumability, and the combined report end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from odenet.cli import grid_main
from odenet.config import ConfigError
from odenet.grid import SweepArgs, SweepPlan, expand, load_plan, prepare, run_sweep

ROOT = Path(__file__).resolve().parents[1]


def plan(tmp_path, grid, **base) -> SweepPlan:
    return SweepPlan(base={"dataset": "mnist-5k", "epochs": 1, **base}, grid=grid, out_dir=str(tmp_path / "sw"))


def test_grid_collapses_options_that_do_not_apply(tmp_path):
    runs = expand(plan(tmp_path, [{"backbone": ["resnet", "odenet"], "tol": [1e-1, 1e-3], "adjoint": [False, True]}]))
    names = [r.run_name for r in runs]
    assert names == ["resnet-s0", "odenet-dopri5-tol0.1-direct-s0", "odenet-dopri5-tol0.1-adjoint-s0",
                     "odenet-dopri5-tol0.001-direct-s0", "odenet-dopri5-tol0.001-adjoint-s0"]
    assert runs[0].solver is None and runs[4].adjoint and runs[4].rtol == 1e-3


def test_adjoint_only_options_apply_to_the_adjoint_points_only(tmp_path):
    runs = expand(plan(tmp_path, [{"backbone": ["odenet"], "adjoint": [False, True]}], adjoint_tol=1e-4,
                       seminorm=True))
    assert [(r.adjoint, r.adjoint_tol, r.seminorm) for r in runs] == [(False, None, False), (True, 1e-4, True)]


def test_grid_over_other_options_names_them_and_fixed_solvers_take_steps(tmp_path):
    runs = expand(plan(tmp_path, [{"backbone": ["odenet"], "solver": ["rk4"], "tol": [1e-3], "lr": [0.1, 0.05]}]))
    assert [r.run_name for r in runs] == ["odenet-rk4-steps6-direct-lr0.1-s0", "odenet-rk4-steps6-direct-lr0.05-s0"]


def test_sweep_yaml_and_cli_flags(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"base": {"dataset": "mnist-5k"}, "grid": [{"backbone": ["resnet"]}],
                                    "eval": {"tols": [0.1]}, "out_dir": "x"}))
    p = load_plan(SweepArgs(config=str(path), set=["epochs=3"], seeds=[1, 2], backbones=["mlp"]))
    assert p.base == {"dataset": "mnist-5k", "epochs": "3"} and p.grid == [{"backbone": ["mlp"], "seed": [1, 2]}]
    assert p.eval == {"tols": [0.1]} and p.out_dir == "x"


@pytest.mark.parametrize("data, message", [
    ({"grid": [{"backbone": ["resnet"]}], "bsae": {}}, "unknown key 'bsae'"),
    ({"grid": [{"backbone": ["resnet"]}], "base": {"tl": 1}}, "unknown option 'tl'"),
    ({"grid": [{"backbone": ["resnet"]}], "eval": {"tol": [1]}}, "unknown key 'tol' in"),
    ({"base": {}}, "the sweep has no grid"),
])
def test_bad_sweep_files(tmp_path, data, message):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=message):
        load_plan(SweepArgs(config=str(path)))


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
        elif "grid" in yaml.safe_load(path.read_text()):
            assert expand(load_plan(SweepArgs(config=str(path))))
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
    p = SweepPlan(base={"dataset": "fashion-mnist", "data_dir": str(tiny_fashion), "epochs": 2, "batch_size": 32,
                        "test_batch_size": 32, "limit_train_batches": 2, "limit_test_batches": 1},
                  grid=[{"backbone": ["resnet"]}, {"backbone": ["odenet"], "tol": [1e-1], "adjoint": [False, True]}],
                  eval={"tols": [1e-1, 1e-2], "limit_test_batches": 1}, out_dir=str(tmp_path / "sw"))
    summaries, out = run_sweep(p)
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

    monkeypatch.setattr("odenet.grid.train", no_training)
    summaries_again, _ = run_sweep(p)
    assert summaries_again == summaries


def test_sweep_cli_reports_bad_input_with_exit_2(capsys):
    assert grid_main(["--backbones", "resnet", "--set", "epochs"]) == 2
    assert "--set expects KEY=VALUE" in capsys.readouterr().err
