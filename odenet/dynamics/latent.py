"""The latent-ODE VAE of Chen et al. 2018 (§5, Fig. 8) on noisy, irregularly sampled 2-D spirals.

Data, networks and loss follow torchdiffeq's ``examples/latent_ode.py`` (spirals of a = 0,
b = 0.3 on t ∈ [0, 6π], clockwise around (−5, 0) or counter-clockwise around (5, 0); noise
std 0.3; latent 4, field 4→20→20→4 ELU, decoder 4→20→2 ReLU, recognition RNN of 25), with the
paper's irregular sampling, which the example leaves out: each spiral is observed at its own random
subset of its window (always including the window's first time, where z0 lives), and the RNN
consumes (x, Δt) pairs backwards in time, so it knows the gaps.

ELBO = E_q[log p(x | z0)] − KL(q(z0 | x) ‖ N(0, I)), with a Gaussian likelihood of the known noise
std over the observed points only; one reparameterised sample per spiral, as in the example.
The latent ODE is an :class:`ODEBlock`, so NFE is the project's count.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from odenet.dynamics.config import LatentConfig
from odenet.dynamics.plots import latent_figure
from odenet.dynamics.runs import check_run_dir, solver_guard
from odenet.dynamics.spirals import Spirals, make_spirals
from odenet.measure import Clock
from odenet.models import ODEBlock, SolverSettings, reset_nfe, take_nfe
from odenet.naming import solver_name_parts
from odenet.reports import Report, Section, md_table, write_report
from odenet.run.checkpoint import save_checkpoint
from odenet.run.files import write_config, write_json
from odenet.run.log import RunLogger
from odenet.train.step import optimizer_step

class RecognitionRNN(nn.Module):
    """Backwards over the observations: h ← tanh(W [x_k, t_{k+1} − t_k, h]) → q(z0) mean and log-variance.

    The time gap input is what lets it read irregularly sampled series (Chen et al. 2018, §5).
    """

    def __init__(self, latent_dim: int, obs_dim: int = 2, hidden: int = 25) -> None:
        super().__init__()
        self.hidden = hidden
        self.i2h = nn.Linear(obs_dim + 1 + hidden, hidden)
        self.h2o = nn.Linear(hidden, 2 * latent_dim)

    def forward(self, x: torch.Tensor, times: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (S, M, D), times (S, M) increasing → (mean, logvar), each (S, L), at times[:, 0]."""
        gaps = torch.cat([times[:, 1:] - times[:, :-1], torch.zeros_like(times[:, :1])], dim=1)  # (S, M)
        h = x.new_zeros(len(x), self.hidden)
        for k in reversed(range(x.shape[1])):
            h = torch.tanh(self.i2h(torch.cat([x[:, k], gaps[:, k : k + 1], h], dim=1)))
        return self.h2o(h).chunk(2, dim=1)


class LatentField(nn.Module):
    def __init__(self, latent_dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ELU(), nn.Linear(hidden, hidden), nn.ELU(),
                                 nn.Linear(hidden, latent_dim))

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class LatentShape(Protocol):
    """What :class:`LatentODE` reads of a config (:class:`LatentConfig`, the heartbeats' config)."""

    latent_dim: int
    hidden: int
    rnn_hidden: int

    def solver_settings(self) -> SolverSettings: ...


def recognition(cfg: LatentShape, obs_dim: int = 2) -> RecognitionRNN:
    return RecognitionRNN(cfg.latent_dim, obs_dim=obs_dim, hidden=cfg.rnn_hidden)


def decoder(cfg: LatentShape, obs_dim: int = 2) -> nn.Module:
    """z → x (4→20→2 ReLU in torchdiffeq's example). Every latent model shares it and :func:`recognition`:
    only the latent dynamics between them differ."""
    return nn.Sequential(nn.Linear(cfg.latent_dim, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, obs_dim))


class LatentODE(nn.Module):
    """Recognition RNN → q(z0); z(t) from the latent ODE; decoder z → x.

    ``field`` is the latent vector field (default: :class:`LatentField`, the spirals'); ``obs_dim`` the
    number of observed channels.
    """

    def __init__(self, cfg: LatentShape, field: nn.Module | None = None, obs_dim: int = 2) -> None:
        super().__init__()
        self.rec = recognition(cfg, obs_dim)  # built in this order: the spirals' initial weights per seed
        self.ode = ODEBlock(field or LatentField(cfg.latent_dim, cfg.hidden), cfg.solver_settings())
        self.dec = decoder(cfg, obs_dim)

    def latent(self, z0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """z0 (S, L), t (T,) from 0 → z (S, T, L)."""
        return self.ode.trajectory(z0, t).transpose(0, 1)

    def decode(self, z0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """z0 (S, L), t (T,) from 0 → x̂ (S, T, D)."""
        return self.dec(self.latent(z0, t))


def log_normal(x: torch.Tensor, mean: torch.Tensor, std: float) -> torch.Tensor:
    return -0.5 * (math.log(2 * math.pi) + 2 * math.log(std) + ((x - mean) / std) ** 2)


def kl_to_standard_normal(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, e^logvar) ‖ N(0, I)), summed over latent dimensions → (S,)."""
    return 0.5 * (mean ** 2 + logvar.exp() - 1 - logvar).sum(dim=1)


class Observations(Protocol):
    """What the ELBO reads of a data set (:class:`Spirals`, the heartbeats' windows)."""

    t: torch.Tensor  # (T,)
    obs: torch.Tensor  # (S, W, D)
    mask: torch.Tensor  # (S, W) bool
    window: int

    def observed(self) -> tuple[torch.Tensor, torch.Tensor]: ...


def posterior_sample(model: nn.Module, data: Observations, generator: torch.Generator | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One reparameterised z0 ~ q(z0 | observations) per series, with q's mean and log-variance, each (S, L)."""
    mean, logvar = model.rec(*data.observed())
    eps = torch.randn(mean.shape, generator=generator)
    return mean + eps * (0.5 * logvar).exp(), mean, logvar


def elbo_terms(x_hat: torch.Tensor, data: Observations, mean: torch.Tensor, logvar: torch.Tensor,
               noise_std: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean ELBO per series from x̂ (S, W, D) decoded over the window and q's parameters; and its parts."""
    log_px = (log_normal(data.obs, x_hat, noise_std).sum(-1) * data.mask).sum(-1)  # (S,)
    kl = kl_to_standard_normal(mean, logvar)
    value = (log_px - kl).mean()
    return value, {"elbo": value.item(), "log_px": log_px.mean().item(), "kl": kl.mean().item()}


def elbo(model: nn.Module, data: Observations, noise_std: float, generator: torch.Generator | None = None
         ) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean ELBO per series (a tensor, for backward) and its parts."""
    z0, mean, logvar = posterior_sample(model, data, generator)
    # Decoded at every window time: the union of the series' observed times is (nearly) all of
    # them, and the mask keeps only each series' own observations in the likelihood.
    x_hat = model.decode(z0, data.t[: data.window])  # (S, W, D)
    return elbo_terms(x_hat, data, mean, logvar, noise_std)


@torch.no_grad()
def evaluate(model: LatentODE, data: Spirals, noise_std: float, seed: int) -> tuple[dict[str, float], torch.Tensor]:
    """Test ELBO, and MSE against the noiseless spirals of x̂ decoded from q's mean, inside the window
    (interpolation) and after it (extrapolation) → (measurements, x̂ (S, W + E, 2))."""
    w = data.window
    _, parts = elbo(model, data, noise_std, torch.Generator().manual_seed(seed))
    clock = Clock(data.t.device)
    reset_nfe(model)
    t0 = clock.now()
    mean, _ = model.rec(*data.observed())
    x_hat = model.decode(mean, data.t)
    elapsed = clock.now() - t0
    err = ((x_hat - data.true) ** 2).mean(dim=(0, 2))  # (W + E,)
    return {**parts, "loss": -parts["elbo"], "mse_interp": err[:w].mean().item(), "mse_extrap": err[w:].mean().item(),
            "time_ms": elapsed * 1e3, "nfe_forward": take_nfe(model)["nfe_forward"]}, x_hat


def train_step(model: LatentODE, optimizer: torch.optim.Optimizer, data: Spirals, noise_std: float,
               generator: torch.Generator) -> dict[str, float]:
    """One optimizer step on −ELBO (the reported ``loss``), with the ELBO's parts."""
    def compute():
        value, parts = elbo(model, data, noise_std, generator)
        return -value, parts

    return optimizer_step(model, optimizer, compute, measure_memory=False)


def default_run_name(cfg: LatentConfig) -> str:
    return "-".join(["latent", *solver_name_parts(cfg.to_dict()), f"obs{cfg.observations}", f"s{cfg.seed}"])


def train_latent(cfg: LatentConfig, log: bool = True) -> dict[str, Any]:
    """Train on ``cfg.spirals`` spirals (full batch), evaluate on held-out ones; returns summary.json's content."""
    run_dir = Path(cfg.out_dir) / (cfg.run_name or default_run_name(cfg))
    check_run_dir(run_dir)
    data_gen = torch.Generator().manual_seed(cfg.seed)
    train, test = make_spirals(cfg.spirals, cfg, data_gen), make_spirals(cfg.test_spirals, cfg, data_gen)
    torch.manual_seed(cfg.seed)
    model = LatentODE(cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    noise = torch.Generator().manual_seed(cfg.seed + 1)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_config(run_dir, cfg.to_dict())
    logger = RunLogger(run_dir, cfg.to_dict(), classifier=False)
    started, completed = time.perf_counter(), False
    try:
        initial, _ = _evaluate(model, test, cfg, 0, logger)
        rows = []
        for step in range(1, cfg.iters + 1):
            with solver_guard("training step", step, diverged="the ELBO is not finite; lower --lr"):
                rows.append(train_step(model, optimizer, train, cfg.noise_std, noise))
            logger.log({"split": "train", "epoch": 1, "step": step, **rows[-1]})
            if step % cfg.eval_every == 0 or step == cfg.iters:
                final, x_hat = _evaluate(model, test, cfg, step, logger)
                if log:
                    print(_progress(cfg, step, rows[-cfg.eval_every:], final), flush=True)
        summary = _summary(cfg, run_dir, model, initial, final, rows, time.perf_counter() - started)
        _save(run_dir, model, optimizer, cfg, summary, test, x_hat, logger)
        completed = True
    finally:
        logger.close(completed)
    return summary


def _evaluate(model, test: Spirals, cfg: LatentConfig, step: int, logger: RunLogger):
    with solver_guard("evaluation", step):
        row, x_hat = evaluate(model, test, cfg.noise_std, cfg.seed + 2)
    logger.log({"split": "test", "epoch": 1, "step": step, **row})
    return row, x_hat


def _progress(cfg: LatentConfig, step: int, rows: list[dict], test: dict) -> str:
    mean = lambda key: float(np.mean([r[key] for r in rows]))  # noqa: E731
    return (f"latent iter {step}/{cfg.iters} | train elbo {mean('elbo'):.1f} nfe_forward {mean('nfe_forward'):.1f} "
            f"nfe_backward {mean('nfe_backward'):.1f} time_step_ms {mean('time_step_ms'):.0f} | test elbo "
            f"{test['elbo']:.1f} mse interp {test['mse_interp']:.4f} extrap {test['mse_extrap']:.4f}")


TRAIN_MEANS = ("elbo", "nfe_forward", "nfe_backward", "time_step_ms")


def _summary(cfg, run_dir, model, initial, final, rows, wall_s) -> dict[str, Any]:
    last = rows[-cfg.eval_every:]
    return {"run_dir": str(run_dir), "config": cfg.to_dict(), "params": sum(p.numel() for p in model.parameters()),
            "initial": initial, "final": final,
            "train_last": {k: float(np.mean([r[k] for r in last])) for k in TRAIN_MEANS},
            "wall_time_s": wall_s, "versions": {"torch": torch.__version__}}


def _save(run_dir: Path, model, optimizer, cfg: LatentConfig, summary: dict, test: Spirals, x_hat: torch.Tensor,
          logger: RunLogger) -> None:
    save_checkpoint(run_dir / "last.pt", {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                          "step": cfg.iters, "config": cfg.to_dict(),
                                          "metrics": {k: summary["final"][k] for k in ("elbo", "mse_interp",
                                                                                       "mse_extrap")}})
    write_json(run_dir / "summary.json", summary)
    data = {"t": test.t.numpy(), "true": test.true.numpy(), "pred": x_hat.numpy(), "obs": test.obs.numpy(),
            "mask": test.mask.numpy(), "window": np.array(test.window)}
    np.savez_compressed(run_dir / "plot_data.npz", **data)
    report = latent_report(summary, data, logger.run_dir)
    write_report(report, run_dir)
    logger.tb.add_figure("figures/latent", report.figures["latent_spirals"], global_step=cfg.iters)


def latent_report(summary: dict, data: dict, run_dir: Path):
    i, f = summary["initial"], summary["final"]
    rows = [[key, f"{i[key]:.4g}", f"{f[key]:.4g}"] for key in ("elbo", "log_px", "kl", "mse_interp", "mse_extrap",
                                                                  "nfe_forward")]
    c = summary["config"]
    text = (f"{c['spirals']} training and {c['test_spirals']} test spirals, each observed at {c['observations']} of "
            f"{c['window']} window points (noise std {c['noise_std']:g}); extrapolation scored on the next "
            f"{c['extrapolate']} points. Test-set values before and after {c['iters']} iterations "
            f"({summary['wall_time_s']:.0f} s); `nfe_forward` is one decode of the test set.\n\n"
            + md_table(["metric", "initial", "final"], rows)
            + f"\n\nTraining, last {c['eval_every']} iterations: {summary['train_last']['nfe_forward']:.1f} forward "
              f"and {summary['train_last']['nfe_backward']:.1f} backward evaluations, "
              f"{summary['train_last']['time_step_ms']:.0f} ms per step.")
    figure = latent_figure(data, f"latent ODE: test spirals after {c['iters']} iterations")
    return Report(f"Latent ODE on irregularly sampled spirals: {Path(run_dir).name}",
                  [Section("Metrics", text), Section("Test spirals", "Observed noisy points (black), true spiral "
                                                                     "(grey), reconstruction inside the window "
                                                                     "(blue), extrapolation after it (red).",
                                                     ["latent_spirals"])],
                  {"latent_spirals": figure})
