"""The commands of ``odenet-dynamics`` (entry point: :func:`odenet.cli.dynamics_main`): parse, then run.

Commands: ``fit`` (one system), ``fit-all`` (several systems + combined report), ``latent`` (the
latent-ODE VAE on spirals), ``heartbeats`` (the latent-ODE VAE on heartbeat phase portraits, against
baselines, over seeds), ``report`` (rebuild fit-all's report from saved runs, no training).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from odenet.config import Parser, parse
from odenet.dynamics.beats_config import HeartbeatsConfig, resolve_heartbeats
from odenet.dynamics.beats_run import run_experiment
from odenet.dynamics.config import FitAllConfig, FitConfig, LatentConfig, fit_configs, resolve_fit, resolve_latent
from odenet.dynamics.fit import fit, fit_all, write_fit_report
from odenet.dynamics.latent import train_latent
from odenet.dynamics.report import load_fit_run

PROG = "odenet-dynamics"


def _parsed(cls: type, argv: list[str], command: str, description: str, resolve: Callable):
    """Parse ``command``'s flags into ``cls``, resolve them (``resolve(cfg, explicit)``) and set the threads."""
    cfg, explicit = parse(cls, argv, prog=f"{PROG} {command}", description=description)
    resolved = resolve(cfg, explicit)
    torch.set_num_threads(cfg.threads)
    return cfg, resolved


def fit_main(argv: list[str]) -> int:
    _, cfg = _parsed(FitConfig, argv, "fit", "Fit a learned vector field to one true 2-D system's trajectory.",
                     resolve_fit)
    summary = fit(cfg)
    print(f"{cfg.system}: whole-trajectory mse {summary['mse_initial']:.4g} → {summary['mse_final']:.4g} "
          f"({summary['mse_ratio']:.1f}×) in {summary['wall_time_s']:.1f} s; run in {summary['run_dir']}")
    return 0


def fit_all_main(argv: list[str]) -> int:
    cfg, configs = _parsed(FitAllConfig, argv, "fit-all",
                           "Fit every system (or --systems) and write one report with their pictures.", fit_configs)
    out = fit_all(configs, Path(cfg.out_dir))
    print(f"report: {out / 'report.md'} and {out / 'report.html'}; tensorboard --logdir {out} --host 127.0.0.1")
    return 0


def latent_main(argv: list[str]) -> int:
    _, cfg = _parsed(LatentConfig, argv, "latent", "Train a latent-ODE VAE on noisy, irregularly sampled 2-D "
                                                   "spirals.", resolve_latent)
    summary = train_latent(cfg)
    final = summary["final"]
    print(f"latent ODE: elbo {summary['initial']['elbo']:.1f} → {final['elbo']:.1f}; test mse interpolation "
          f"{final['mse_interp']:.4g}, extrapolation {final['mse_extrap']:.4g}; run in {summary['run_dir']}")
    return 0


def heartbeats_main(argv: list[str]) -> int:
    _, cfg = _parsed(HeartbeatsConfig, argv, "heartbeats",
                     "Latent-ODE VAE on heartbeat phase portraits (x, x'): real PPG and synthetic ECG beats; "
                     "reconstruction, interpolation and extrapolation against a GRU and the mean beat, over seeds.",
                     resolve_heartbeats)
    record = run_experiment(cfg)
    failed = sum(run["status"] == "failed" for run in record["runs"])
    print(f"heartbeats: {len(record['runs'])} runs ({failed} failed) in {record['wall_time_s']:.0f} s; report: "
          f"{record['out']}/report.md and report.html")
    return 0


def report_main(argv: list[str]) -> int:
    parser = Parser(prog=f"{PROG} report", description="Rebuild the fit-all report from runs.")
    parser.add_argument("runs", nargs="+", help="fit run directories")
    parser.add_argument("--out", required=True, help="folder of the report")
    args = parser.parse_args(argv)
    out = write_fit_report([load_fit_run(p) for p in args.runs], Path(args.out))
    print(f"report: {out / 'report.md'} and {out / 'report.html'}")
    return 0


COMMANDS: dict[str, Callable[[list[str]], int]] = {"fit": fit_main, "fit-all": fit_all_main, "latent": latent_main,
                                                   "heartbeats": heartbeats_main, "report": report_main}
USAGE = (f"usage: {PROG} {{{','.join(COMMANDS)}}} [options]  (COMMAND --help lists the options)\n\n"
         f"  fit         fit a learned field to one true system (--system spiral --field 2-50-2 --iters 1500 ...)\n"
         f"  fit-all     fit all five systems and write report.md / report.html with their pictures\n"
         f"  latent      latent-ODE VAE on noisy irregularly sampled spirals (ELBO, interpolation/extrapolation MSE)\n"
         f"  heartbeats  latent-ODE VAE on heartbeat phase portraits (real PPG, synthetic ECG) against baselines\n"
         f"  report      rebuild fit-all's report from saved run directories")
