"""``python -m odenet.dynamics COMMAND`` / ``odenet-dynamics COMMAND``: parse, then call into the package.

Commands: ``fit`` (one system), ``fit-all`` (several systems + combined report), ``latent`` (the
latent-ODE VAE on spirals), ``report`` (rebuild fit-all's report from saved runs, no training).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from odenet.cli import USER_ERRORS, fail
from odenet.config import parse
from odenet.registry import closest
from odenet.reports import ReportError

PROG = "odenet-dynamics"


def set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def fit_main(argv: list[str]) -> int:
    from odenet.dynamics.config import FitConfig, resolve_fit
    from odenet.dynamics.fit import fit

    cfg, explicit = parse(FitConfig, argv, prog=f"{PROG} fit",
                          description="Fit a learned vector field to one true 2-D system's trajectory.")
    cfg = resolve_fit(cfg, explicit)
    set_threads(cfg.threads)
    summary = fit(cfg)
    print(f"{cfg.system}: whole-trajectory mse {summary['mse_initial']:.4g} → {summary['mse_final']:.4g} "
          f"({summary['mse_ratio']:.1f}×) in {summary['wall_time_s']:.1f} s; run in {summary['run_dir']}")
    return 0


def fit_all_main(argv: list[str]) -> int:
    from odenet.dynamics.config import FitAllConfig, fit_configs
    from odenet.dynamics.fit import fit_all

    cfg, explicit = parse(FitAllConfig, argv, prog=f"{PROG} fit-all",
                          description="Fit every system (or --systems) and write one report with their pictures.")
    configs = fit_configs(cfg, explicit)
    set_threads(cfg.threads)
    out = fit_all(configs, Path(cfg.out_dir))
    print(f"report: {out / 'report.md'} and {out / 'report.html'}; tensorboard --logdir {out} --host 127.0.0.1")
    return 0


def latent_main(argv: list[str]) -> int:
    from odenet.dynamics.config import LatentConfig, resolve_latent
    from odenet.dynamics.latent import train_latent

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
    import argparse

    from odenet.dynamics.fit import write_fit_report
    from odenet.dynamics.report import load_fit_run

    parser = argparse.ArgumentParser(prog=f"{PROG} report", description="Rebuild the fit-all report from runs.")
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


def main(argv: list[str] | None = None) -> int:
    """0 done, 2 bad input (nothing written), 3 a run started and its solver failed (as train.py)."""
    from odenet.dynamics.fit import EXIT_FAILED, SolverFailure

    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        return fail(f"unknown command {command!r}{closest(command, list(COMMANDS))}; valid commands: "
                    f"{', '.join(COMMANDS)}")
    try:
        return COMMANDS[command](rest)
    except (*USER_ERRORS, ReportError) as exc:
        return fail(str(exc))
    except SolverFailure as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except SystemExit as exc:  # argparse's --help
        return int(exc.code or 0)
