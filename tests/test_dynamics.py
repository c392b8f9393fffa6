"""Learning dynamical systems from trajectories: true systems, batches, NFE, fits, fit-all and its report."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from odenet.config import ConfigError
from odenet.cli import dynamics_main as main
from odenet.dynamics.config import FitConfig, resolve_fit
from odenet.dynamics.data import observed_indices, predict_batch, sample_batch
from odenet.dynamics.fields import FIELDS, DynamicsModel, LearnedField, list_fields
from odenet.dynamics.fit import evaluate, make_model, make_problem, train_step
from odenet.dynamics.systems import SYSTEMS, build_system, list_systems, simulate, true_field
from odenet.models.ode import read_nfe
from odenet.solve import SolverSettings
from odenet.run.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


def fit_cli(tmp_path: Path, *args: str, name: str = "run") -> tuple[int, Path]:
    code = main(["fit", "--out-dir", str(tmp_path / "runs"), "--run-name", name, *args])
    return code, tmp_path / "runs" / name


# --------------------------------------------------------------------------- true systems

def test_registries_list_the_five_systems_and_two_fields_and_refuse_duplicates():
    assert list_systems() == sorted(SYSTEMS.in_order())
    assert list_fields() == ["2-150-50-50-2", "2-50-2"]
    with pytest.raises(ValueError, match="registered twice"):
        SYSTEMS.register("spiral")(lambda seed: None)
    with pytest.raises(ValueError, match="registered twice"):
        FIELDS.register("2-50-2")(lambda i, o: None)
    with pytest.raises(ConfigError, match="did you mean 'spiral'.*valid systems: lotka-volterra, mlp-field"):
        build_system("spirall")
    with pytest.raises(ConfigError, match="unknown field '2-5-2'.*valid fields: 2-150-50-50-2, 2-50-2"):
        LearnedField("2-5-2")


@pytest.mark.parametrize("name", SYSTEMS.in_order())
def test_each_system_integrates_to_finite_moving_values(name):
    system = build_system(name)
    traj = simulate(system, 200)
    assert traj.y.shape == (200, 2) and traj.t.shape == (200,)
    assert torch.isfinite(traj.y).all()
    assert torch.equal(traj.y[0], system.y0[0].float())
    assert traj.t[0] == system.t_span[0] and traj.t[-1] == system.t_span[1]
    assert (traj.y - traj.y[0]).abs().max() > 0.05  # it moves
    assert traj.y.abs().max() < 5  # and stays on the scale of y0


def test_true_fields_are_the_stated_formulas():
    y = torch.tensor([[1.0, 2.0]])
    # spiral: y³A with ode_demo's A → [1, 8] @ [[-0.1, 2], [-2, -0.1]]
    assert torch.allclose(true_field(build_system("spiral"), 0.0, y), torch.tensor([[-16.1, 1.2]]))
    # lotka-volterra: A = [[0, -bc/d], [da/b, 0]] = [[0, -3], [1.5, 0]]
    assert torch.allclose(true_field(build_system("lotka-volterra"), 0.0, y), torch.tensor([[12.0, -3.0]]))
    # nonlinear at y0 = (2, 0): s = 4, only the B2 branch: σ(−4) · B2 (2·y0), B2's first column × 4
    expected = torch.sigmoid(torch.tensor(-4.0)) * torch.tensor([[0.8, -4.0]])
    assert torch.allclose(true_field(build_system("nonlinear"), 0.0, torch.tensor([[2.0, 0.0]])), expected)
    # mlp-field: bias-free, fed y·t, so the field vanishes at t = 0 and is odd in y·t's sign flip of t
    mlp = build_system("mlp-field")
    assert mlp.time_dependent and torch.equal(true_field(mlp, 0.0, y), torch.zeros(1, 2))
    assert not torch.allclose(true_field(mlp, 3.0, y), true_field(mlp, -3.0, y))


def test_random_systems_are_seeded_and_screened_against_blow_up():
    a0, a0_again, a1 = (build_system("random-matrix", s).info["A"] for s in (0, 0, 1))
    assert a0 == a0_again and a0 != a1
    for seed in range(5):
        A = torch.tensor(build_system("random-matrix", seed).info["A"])
        # V = Σy⁴/4 has dV/dt = y³ A (y³)ᵀ ≤ 0 only if A's symmetric part is negative semidefinite
        assert torch.linalg.eigvalsh((A + A.T) / 2).max() <= 0
    mlp = simulate(build_system("mlp-field", 3), 100)
    assert mlp.y.abs().max() <= 5.0 and mlp.t[0] == -15 and mlp.t[-1] == 15


def test_lotka_volterra_conserves_its_energy():
    y = simulate(build_system("lotka-volterra"), 300).y.double()
    energy = 3 * y[:, 0] ** 4 / 4 + 1.5 * y[:, 1] ** 4 / 4  # y1' = 1.5 y2³, y2' = -3 y1³
    assert (energy - energy[0]).abs().max() / energy[0] < 1e-4


# --------------------------------------------------------------------------- observations and batches

def test_irregular_observations_keep_t0_and_drop_the_stated_fraction():
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    kept = observed_indices(101, 0.5, g())
    assert len(kept) == 51 and kept[0] == 0
    assert torch.equal(kept, kept.unique())  # sorted, no repeats
    assert torch.equal(kept, observed_indices(101, 0.5, g()))
    assert torch.equal(observed_indices(50, 0.0, g()), torch.arange(50))
    gaps = kept.diff()
    assert gaps.max() > 1  # irregular


def test_batch_asks_the_solver_for_the_union_of_window_times_and_gathers_each_window():
    t = torch.linspace(0, 10, 101)
    traj = type("T", (), {"t": t, "y": torch.stack([t, -t], 1), "dt": 0.1})()
    observed = observed_indices(101, 0.5, torch.Generator().manual_seed(0))
    batch = sample_batch(observed, 6, 8, 0.1, torch.Generator().manual_seed(1))
    assert batch.windows.shape == (8, 6)
    assert batch.tau[0] == 0 and (batch.tau.diff() > 0).all()
    for row in batch.windows:  # consecutive observed times
        start = int((observed == row[0]).nonzero())
        assert torch.equal(row, observed[start:start + 6])
    # A fake model whose state is y0 + elapsed time: each window must get its own elapsed times.
    fake = lambda y0, t0, tau: y0[None] + tau[:, None, None]  # noqa: E731
    pred, target = predict_batch(fake, traj, batch)
    elapsed = t[batch.windows] - t[batch.windows[:, :1]]
    assert torch.allclose(pred, traj.y[batch.windows[:, :1]] + elapsed[..., None], atol=1e-5)
    assert torch.equal(target, traj.y[batch.windows])


def test_time_input_windows_keep_their_own_clock_in_one_batched_solve():
    torch.manual_seed(0)
    field = LearnedField("2-50-2", "y", time_input=True)
    with torch.no_grad():
        field.net[0].weight.mul_(10)  # make t matter
    model = DynamicsModel(field, SolverSettings(rtol=1e-7, atol=1e-9))
    y0 = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    t0 = torch.tensor([-5.0, 5.0])
    tau = torch.linspace(0, 2, 5)
    with torch.no_grad():
        batched = model(y0, t0, tau)
        alone = torch.cat([model(y0[i:i + 1], t0[i:i + 1], tau) for i in range(2)], dim=1)
    assert batched.shape == (5, 2, 2)
    assert torch.allclose(batched, alone, atol=1e-5)
    assert not torch.allclose(batched[:, 0], batched[:, 1], atol=1e-2)  # same y0, different start times


def test_nfe_is_counted_by_the_project_counters_forward_and_adjoint():
    cfg = resolve_fit(FitConfig(system="spiral", adjoint=True), {"adjoint"})
    model = make_model(cfg)
    traj = simulate(build_system("spiral"), 100)
    batch = sample_batch(torch.arange(100), 5, 4, traj.dt, torch.Generator().manual_seed(0))
    pred, target = predict_batch(model, traj, batch)
    ((pred - target) ** 2).mean().backward()
    nfe = read_nfe(model)
    assert nfe["nfe_forward"] == 2 + 6 * (nfe["steps_accepted"] + nfe["steps_rejected"])  # dopri5
    assert nfe["nfe_backward"] > 0 and nfe["nfe_backprop"] == 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


# --------------------------------------------------------------------------- fitting

TRAIN_KEYS = {"loss", "mse", "lr", "nfe_forward", "nfe_backward", "nfe_backprop", "steps_accepted", "time_step_ms",
              "time_forward_ms", "time_backward_ms"}


def test_fitting_spiral_with_2_50_2_lowers_trajectory_mse_10x_and_writes_the_run(tmp_path):
    code, run = fit_cli(tmp_path, "--system", "spiral", "--field", "2-50-2", "--iters", "300", "--eval-every", "150")
    assert code == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["mse_final"] * 10 <= summary["mse_initial"]
    assert summary["mse_final"] * 10 <= summary["mse_still"]  # and 10x below standing still at y0

    config = yaml.safe_load((run / "config.yaml").read_text())
    assert (config["system"], config["features"], config["time_input"], config["rtol"]) == ("spiral", "cubic", False,
                                                                                           1e-5)
    rows = read_metrics(run / "metrics.jsonl")
    train = [r for r in rows if r["split"] == "train"]
    test = [r for r in rows if r["split"] == "test"]
    assert [r["step"] for r in train] == list(range(1, 301))
    assert [r["step"] for r in test] == [0, 150, 300]
    assert all(TRAIN_KEYS <= set(r) and r["nfe_backward"] == 0 and r["nfe_forward"] >= 14 for r in train)
    assert test[0]["mse"] == summary["mse_initial"] and test[-1]["mse"] == summary["mse_final"]
    assert all(r["loss"] == r["mse"] and r["nfe_forward"] > 0 for r in test)

    events = EventAccumulator(str(run)).Reload()
    assert {"train/loss", "train/nfe_forward", "train/nfe_backward", "train/time_step_ms", "test/mse",
            "test/nfe_forward"} <= set(events.Tags()["scalars"])
    assert "figures/fit" in events.Tags()["images"]
    assert [e.value for e in events.Scalars("test/mse")] == pytest.approx([r["mse"] for r in test])

    # The checkpoint alone rebuilds the model, which reproduces the final MSE.
    state = torch.load(run / "last.pt", weights_only=True)
    assert state["config"] == config and state["step"] == 300
    rebuilt = make_model(FitConfig(**state["config"]))
    rebuilt.load_state_dict(state["model"])
    assert evaluate(rebuilt, make_problem(FitConfig(**state["config"])).trajectory)[0]["mse"] == pytest.approx(
        summary["mse_final"], rel=1e-5)
    with np.load(run / "plot_data.npz") as data:
        assert data["y_pred"].shape == data["y_true"].shape == (1000, 2)
        assert data["field_pred"].shape == data["field_true"].shape == (21, 21, 2)
    assert (run / "fit.png").stat().st_size > 10_000


def test_irregular_half_of_the_times_still_fits(tmp_path):
    code, run = fit_cli(tmp_path, "--system", "spiral", "--irregular", "0.5", "--iters", "200", "--batch-time", "5",
                        "--eval-every", "200")
    assert code == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["observed"] == 500 and summary["data_size"] == 1000
    assert summary["mse_final"] * 10 <= summary["mse_still"]
    with np.load(run / "plot_data.npz") as data:
        assert len(data["observed"]) == 500 and data["observed"][0] == 0


def test_adjoint_training_counts_backward_evaluations_and_is_deterministic():
    cfg = resolve_fit(FitConfig(system="mlp-field", adjoint=True, data_size=200), {"adjoint", "data_size"})
    assert cfg.time_input is True and cfg.features == "y"  # mlp-field is time-dependent
    problem = make_problem(cfg)

    def three_steps() -> list[dict]:
        torch.manual_seed(cfg.seed)
        model = make_model(cfg)
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        batches = torch.Generator().manual_seed(cfg.seed)
        return [train_step(model, optimizer, problem.trajectory,
                           sample_batch(problem.observed, 10, 8, problem.trajectory.dt, batches)) for _ in range(3)]

    first, second = three_steps(), three_steps()
    assert all(r["nfe_backward"] > 0 and r["nfe_backprop"] == 0 for r in first)
    drop_times = lambda rows: [{k: v for k, v in r.items() if "time" not in k} for r in rows]  # noqa: E731
    assert drop_times(first) == drop_times(second)
    assert first[2]["loss"] < first[0]["loss"]


@pytest.mark.parametrize("args, message", [
    (("--system", "spirall"), "unknown system 'spirall' (did you mean 'spiral'?)"),
    (("--field", "2-5-2"), "unknown --field '2-5-2'"),
    (("--features", "quartic"), "unknown --features 'quartic'"),
    (("--irregular", "1"), "--irregular must be in [0, 1)"),
    (("--irregular", "-0.1"), "--irregular must be in [0, 1)"),
    (("--tol", "0"), "--tol must be a positive number"),
    (("--lr", "-1"), "--lr must be a positive number"),
    (("--batch-time", "1"), "--batch-time must be at least 2"),
    (("--data-size", "40", "--batch-size", "50"), "--batch-size 50 needs 50 distinct sub-trajectories"),
    (("--irregular", "0.99", "--data-size", "500"), "--batch-time 10 needs at least 10 observed times"),
    (("--seminorm",), "--seminorm controls the adjoint solve's error"),
    (("--steps", "4"), "--steps does not apply: dopri5 chooses its own steps"),
    (("--solver", "rk4"), "fixed-step solver rk4 needs --steps N"),
    (("--solver", "rk45"), "unknown --solver 'rk45'"),
    (("--iterations", "5"), "unknown flag --iterations"),
])
def test_bad_input_is_one_sentence_exit_2_and_writes_nothing(tmp_path, capsys, args, message):
    code, run = fit_cli(tmp_path, *args)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_solver_giving_up_is_one_sentence_exit_3(tmp_path, capsys):
    code, run = fit_cli(tmp_path, "--max-num-steps", "1", "--iters", "2", "--data-size", "20", "--batch-size", "4")
    err = capsys.readouterr().err
    assert code == 3 and err.startswith("error: evaluation at iteration 0 stopped: max_num_steps exceeded")
    assert "raise --max-num-steps" in err and len(err.strip().splitlines()) == 1
    assert not (run / "summary.json").exists()


def test_yaml_config_is_read_and_flags_override_it(tmp_path):
    (tmp_path / "c.yaml").write_text("system: nonlinear\niters: 3\neval_every: 3\ndata_size: 200\nbatch_size: 4\n")
    code, run = fit_cli(tmp_path, "--config", str(tmp_path / "c.yaml"), "--iters", "2")
    assert code == 0
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert (config["system"], config["iters"], config["batch_size"]) == ("nonlinear", 2, 4)


def test_shipped_yaml_configs_parse(tmp_path):
    from odenet.config import load_yaml
    from odenet.dynamics.config import FitAllConfig, LatentConfig

    for path, cls in ((ROOT / "configs" / "dynamics-fit-all.yaml", FitAllConfig),
                      (ROOT / "configs" / "dynamics-latent.yaml", LatentConfig)):
        assert load_yaml(path, cls)


# --------------------------------------------------------------------------- fit-all and the report

def test_fit_all_fits_each_system_and_writes_the_report_with_their_pictures(tmp_path, capsys):
    # Two systems here (figures cost ~2 s each); the slow test runs the documented command on all five.
    out, systems = tmp_path / "all", ["spiral", "mlp-field"]
    args = ["fit-all", "--out-dir", str(out), "--iters", "6", "--eval-every", "3", "--data-size", "200",
            "--batch-size", "8"]
    assert main([*args, "--systems", ",".join(systems)]) == 0
    for name in systems:
        assert (out / name / "summary.json").is_file() and (out / f"fit_{name}.png").stat().st_size > 10_000
    md = (out / "report.md").read_text()
    assert all(f"| `{name}` |" in md and f"![fit_{name}](fit_{name}.png)" in md for name in systems)
    assert "mse_during_training.png" in md
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and "<table>" in html
    tb = EventAccumulator(str(out / "_report")).Reload().Tags()
    assert "report/fit_spiral" in tb["images"]

    capsys.readouterr()
    assert main([*args, "--systems", "spiral"]) == 0  # a finished identical run is reused, not refitted
    assert "(1 already fitted)" in capsys.readouterr().out
    assert main([*args, "--systems", "spiral", "--iters", "7"]) == 2  # other settings there: refused
    assert "holds a run with other settings" in capsys.readouterr().err
    assert (out / "report.md").read_text().count("| `") == 1  # the report of the systems asked for

    # `report` (the same writer, from saved run directories alone) refuses what is not a finished fit.
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "nothing")]) == 2
    assert "is not a finished fit" in capsys.readouterr().err


def test_report_modules_do_not_import_torch():
    code = ("import sys, odenet.dynamics.report, odenet.dynamics.plots; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_usage_and_unknown_command():
    assert main([]) == 2 and main(["--help"]) == 0
    assert main(["fitt"]) == 2


@pytest.mark.slow
def test_documented_fit_all_fits_all_five_systems(tmp_path):
    """The README command with its defaults: every system ends 10x below standing still (about 3-4 min)."""
    out = tmp_path / "all"
    assert main(["fit-all", "--config", str(ROOT / "configs" / "dynamics-fit-all.yaml"), "--out-dir", str(out)]) == 0
    for name in SYSTEMS.in_order():
        summary = json.loads((out / name / "summary.json").read_text())
        assert summary["mse_final"] * 10 <= summary["mse_still"], name
        assert math.isfinite(summary["mse_final"])
