"""The commands of ``odenet-dynamics`` (entry point: :func:`odenet.cli.dynamics_main`): parse, then run.

Commands: ``fit`` (one system), ``fit-all`` (several systems + combined report), ``latent`` (the
latent-ODE VAE on spirals), ``report`` (rebuild fit-all's report from saved runs, no training).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from odenet.config import Parser, parse
from odenet.dynamics.config import FitAllConfig, FitConfig, LatentConfig, fit_configs, resolve_fit, resolve_latent
from odenet.dynamics.fit import fit, fit_all, write_fit_report
from odenet.dynamics.latent import train_latent
from odenet.dynamics.report import load_fit_run

PROG = "odenet-dynamics"


def set_threads(threads: int) -> None:
    torch.set_num_threads(threads)


def fit_main(argv: list[str]) -> int:
    cfg, explicit = parse(FitConfig, argv, prog=f"{PROG} fit",
                          description="Fit a learned vector field to one true 2-D system's trajectory.")
    cfg = resolve_fit(cfg, explicit)
    set_threads(cfg.threads)
    summary = fit(cfg)
    print(f"{cfg.system}: whole-trajectory mse {summary['mse_initial']:.4g} → {summary['mse_final']:.4g} "
          f"({summary['mse_ratio']:.1f}×) in {summary['wall_time_s']:.1f} s; run in {summary['run_dir']}")
    return 0


def fit_all_main(argv: list[str]) -> int:
    cfg, explicit = parse(FitAllConfig, argv, prog=f"{PROG} fit-all",
                          description="Fit every system (or --systems) and write one report with their pictures.")
    configs = fit_configs(cfg, explicit)
    set_threads(cfg.threads)
    out = fit_all(configs, Path(cfg.out_dir))
    print(f"report: {out / 'report.md'} and {out / 'report.html'}; tensorboard --logdir {out} --host 127.0.0.1")
    return 0


def latent_main(argv: list[str]) -> int:
    cfg, explicit = parse(LatentConfig, argv, prog=f"{PROG} latent",
                          description="Train a latent-ODE VAE on noisy, irregularly sampled 2-D spirals.")
    cfg = resolve_latent(cfg, explicit)
    set_threads(cfg.threads)
    summary = train_latent(cfg)
    final = summary["final"]
    print(f"latent ODE: elbo {summary['initial']['elbo']:.1f} → {final['elbo']:.1f}; test mse interpolation "
          f"{final['mse_interp']:.4g}, extrapolation {final['mse_extrap']:.4g}; run in {summary['run_dir']}")
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
                                                   "report": report_main}
USAGE = (f"usage: {PROG} {{{','.join(COMMANDS)}}} [options]  (COMMAND --help lists the options)\n\n"
         f"  fit       fit a learned field to one true system (--system spiral --field 2-50-2 --iters 1500 ...)\n"
         f"  fit-all   fit all five systems and write report.md / report.html with their pictures\n"
         f"  latent    latent-ODE VAE on noisy irregularly sampled spirals (ELBO, interpolation/extrapolation MSE)\n"
         f"  report    rebuild fit-all's report from saved run directories")
