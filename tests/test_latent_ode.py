"""The latent-ODE VAE: spiral data, recognition RNN, ELBO terms, a short training run and its outputs."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from odenet.cli import dynamics_main as main
from odenet.dynamics.config import LatentConfig, resolve_latent
from odenet.dynamics.latent import LatentODE, RecognitionRNN, elbo, kl_to_standard_normal, log_normal, train_step
from odenet.dynamics.spirals import make_spirals, spiral_curves
from odenet.models.ode import reset_nfe
from odenet.run.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


def config(**changes) -> LatentConfig:
    return resolve_latent(dataclasses.replace(LatentConfig(), **changes), set(changes))


def test_spirals_are_noisy_irregular_and_both_directions():
    cfg = config()
    data = make_spirals(400, cfg, torch.Generator().manual_seed(0))
    assert data.true.shape == (400, 200, 2) and data.obs.shape == (400, 100, 2) and data.t.shape == (200,)
    assert data.mask[:, 0].all() and (data.mask.sum(1) == 30).all()
    assert len({tuple(row.nonzero().flatten().tolist()) for row in data.mask}) == 400  # each its own times
    assert 0.35 < data.clockwise.float().mean() < 0.65
    noise = (data.obs - data.true[:, :100])[data.mask]
    assert noise.std().item() == pytest.approx(0.3, rel=0.05)
    x, times = data.observed()
    assert x.shape == (400, 30, 2) and (times.diff(dim=1) > 0).all() and (times[:, 0] == 0).all()
    assert torch.equal(x[:, 0], data.obs[:, 0])
    again = make_spirals(400, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(again.obs, data.obs) and torch.equal(again.mask, data.mask)
    # torchdiffeq's curves: counter-clockwise r = 0.3·t around (5, 0);
    # clockwise r = 15 / (6π + 1 − t) around (−5, 0)
    cw, cc = spiral_curves(torch.tensor([2.0]))
    assert torch.allclose(cc, torch.tensor([[5 + 0.6 * math.cos(2.0), 0.6 * math.sin(2.0)]]))
    z = 6 * math.pi + 1 - 2.0
    assert torch.allclose(cw, torch.tensor([[15 / z * math.cos(z) - 5, 15 / z * math.sin(z)]]))


def test_recognition_rnn_reads_the_time_gaps():
    torch.manual_seed(0)
    rnn = RecognitionRNN(latent_dim=4)
    x = torch.randn(3, 5, 2)
    times = torch.tensor([[0.0, 0.1, 0.2, 0.3, 0.4]]).expand(3, 5)
    mean, logvar = rnn(x, times)
    assert mean.shape == logvar.shape == (3, 4)
    assert not torch.allclose(rnn(x, times * 3)[0], mean)  # same values, other gaps: another posterior


def test_elbo_terms_match_torch_distributions():
    x, mean = torch.randn(7, 2), torch.randn(7, 2)
    expected = torch.distributions.Normal(mean, 0.3).log_prob(x)
    assert torch.allclose(log_normal(x, mean, 0.3), expected, atol=1e-5)
    mu, logvar = torch.randn(5, 4), torch.randn(5, 4)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros(4), torch.ones(4))
    assert torch.allclose(kl_to_standard_normal(mu, logvar), torch.distributions.kl_divergence(q, p).sum(1),
                          atol=1e-5)


def test_adjoint_step_counts_backward_evaluations_and_masks_unobserved_points():
    cfg = config(adjoint=True, spirals=8)
    data = make_spirals(8, cfg, torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    model = LatentODE(cfg)
    row = train_step(model, torch.optim.Adam(model.parameters()), data, 0.3, torch.Generator().manual_seed(2))
    assert row["nfe_forward"] > 0 and row["nfe_backward"] > 0 and row["nfe_backprop"] == 0
    assert row["elbo"] == pytest.approx(row["log_px"] - row["kl"], rel=1e-5)
    # Unobserved points do not enter the likelihood: changing them leaves the ELBO as it was.
    hidden = dataclasses.replace(data, obs=torch.where(data.mask[..., None], data.obs, torch.full_like(data.obs, 99.0)))
    same = [elbo(model, d, 0.3, torch.Generator().manual_seed(3))[1]["elbo"] for d in (data, hidden)]
    assert same[0] == pytest.approx(same[1], rel=1e-6)
    reset_nfe(model)


def test_short_run_raises_the_elbo_and_writes_the_run(tmp_path):
    out = tmp_path / "runs"
    args = ["latent", "--out-dir", str(out), "--run-name", "r", "--spirals", "64", "--test-spirals", "32",
            "--iters", "60", "--eval-every", "20"]
    assert main(args) == 0
    run = out / "r"
    summary = json.loads((run / "summary.json").read_text())
    first, last = summary["initial"], summary["final"]
    assert last["elbo"] > first["elbo"] + 100  # the test-set ELBO rises
    assert last["mse_interp"] < first["mse_interp"]
    rows = read_metrics(run / "metrics.jsonl")
    train = [r for r in rows if r["split"] == "train"]
    test = [r for r in rows if r["split"] == "test"]
    assert [r["step"] for r in test] == [0, 20, 40, 60] and len(train) == 60
    assert sum(r["elbo"] for r in train[-10:]) > sum(r["elbo"] for r in train[:10])
    assert all({"elbo", "loss", "kl", "log_px", "nfe_forward", "nfe_backward", "time_step_ms"} <= set(r) for r in train)
    assert all({"elbo", "mse_interp", "mse_extrap", "nfe_forward"} <= set(r) and r["nfe_forward"] > 0 for r in test)
    config_saved = yaml.safe_load((run / "config.yaml").read_text())
    state = torch.load(run / "last.pt", weights_only=True)
    assert state["config"] == config_saved and state["metrics"]["elbo"] == last["elbo"]
    model = LatentODE(LatentConfig(**config_saved))
    model.load_state_dict(state["model"])
    for name in ("report.md", "report.html", "latent_spirals.png", "plot_data.npz"):
        assert (run / name).is_file()
    assert "data:image/png;base64," in (run / "report.html").read_text()
    tags = EventAccumulator(str(run)).Reload().Tags()
    scalars = {"train/elbo", "test/elbo", "test/mse_interp", "test/mse_extrap", "train/nfe_forward"}
    assert scalars <= set(tags["scalars"])
    assert "figures/latent" in tags["images"]


@pytest.mark.parametrize("args, message", [
    (("--observations", "101"), "--observations 101 cannot exceed --window 100"),
    (("--window", "500"), "need 2·window + extrapolate <= 1000"),
    (("--noise-std", "0"), "--noise-std must be a positive number"),
    (("--solver", "euler"), "fixed-step solver euler needs --steps N"),
])
def test_bad_latent_input_exits_2_and_writes_nothing(tmp_path, capsys, args, message):
    assert main(["latent", "--out-dir", str(tmp_path / "runs"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_documented_latent_run_reconstructs_and_extrapolates(tmp_path):
    """configs/dynamics-latent.yaml (about 1.5 min): reconstructions close, extrapolation of the right scale."""
    assert main(["latent", "--config", str(ROOT / "configs" / "dynamics-latent.yaml"), "--out-dir",
                 str(tmp_path), "--run-name", "r"]) == 0
    final = json.loads((tmp_path / "r" / "summary.json").read_text())["final"]
    assert final["mse_interp"] < 0.1 and final["mse_extrap"] < 1.0
