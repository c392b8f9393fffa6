"""Every entry point: parse the command line, call into the package, turn its errors into exit codes.

Exit codes (all commands): 0 done; 2 bad input — one sentence on stderr, nothing written;
3 a run started and failed (a solver blow-up, a non-finite loss), everything saved so far kept;
130 / 143 interrupted by SIGINT / SIGTERM after writing a checkpoint.

The command modules are imported inside each entry point so that a command loads only what it
runs (``odenet-report`` never imports torch).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from odenet.errors import EXIT_OK, EXIT_USER_ERROR, Interrupted, RunFailure, StoppedAtOnce, UserError, exit_code
from odenet.registry import closest


def fail(message: str, code: int = EXIT_USER_ERROR) -> int:
    """Print ``error: message`` on one line (a newline or other control character inside a user's input is shown
    escaped, as \\n or \\x00) → ``code``."""
    message = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(message))
    print(f"error: {message}", file=sys.stderr)
    return code


def run_command(command: Callable[[], int | None]) -> int:
    """Run ``command()`` with the project's exit-code table (:func:`odenet.errors.exit_code`)."""
    try:
        return command() or EXIT_OK
    except (UserError, RunFailure, Interrupted, StoppedAtOnce) as exc:
        if isinstance(exc, (Interrupted, StoppedAtOnce)):
            print(str(exc), file=sys.stderr)
            return exit_code(exc)
        return fail(str(exc), exit_code(exc))


def train_main(argv: list[str] | None = None) -> int:
    """``train.py`` / ``odenet-train``."""
    def command() -> None:
        from odenet.train.config import parse_train_args

        cfg = parse_train_args(argv)  # before the trainer (and torch) is imported: --help answers at once
        from odenet.run.tensorboard import links
        from odenet.train.trainer import train

        summary = train(cfg)
        run_dir = Path(summary["run_dir"])
        if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 says it
            return
        if cfg.solver is not None:
            print(f"next: python eval.py --checkpoint {run_dir / 'last.pt'} --tols 1e-1,1e-2,1e-3,1e-4 (accuracy and "
                  f"NFE against the test-time tolerance)")
        print(links(run_dir.parent))

    return run_command(command)


def eval_main(argv: list[str] | None = None) -> int:
    """``eval.py`` / ``odenet-eval``."""
    def command() -> None:
        if not {"-h", "--help"} & set(sys.argv[1:] if argv is None else argv):
            print("eval: starting (importing torch and odenet)", flush=True)  # seconds, on a busy machine
        from odenet.evaluate.sweep import parse_eval_args, run_eval
        from odenet.run.tensorboard import links

        out = run_eval(parse_eval_args(argv))
        print(f"sweep written to {out} (sweep.csv, sweep.json, report.md, report.html); {links(out)}")

    return run_command(command)


def grid_main(argv: list[str] | None = None) -> int:
    """``odenet-grid``: the train-time grid."""
    def command() -> None:
        from odenet.grid import parse_grid_args, run_grid

        from odenet.run.tensorboard import links

        _, out = run_grid(parse_grid_args(argv))
        print(f"combined report: {out / 'report.md'} and {out / 'report.html'}")
        print(links(out))

    return run_command(command)


def report_main(argv: list[str] | None = None) -> int:
    """``odenet-report RUN_DIR... [--out DIR]``: the combined report of saved runs (no torch)."""
    from odenet.config import Parser  # torch-free, like everything this command imports

    parser = Parser(prog="odenet-report", description=report_main.__doc__)
    parser.add_argument("runs", nargs="+", help="run directories, or folders holding run directories")
    parser.add_argument("--out", default=None, help="output folder (default: the common parent of the runs)")
    parser.add_argument("--title", default="odenet: training-run comparison", help="the report's title")

    def command() -> None:
        from odenet.reports import combined_report, common_parent, find_runs, write_report
        from odenet.run.dirs import check_writable
        from odenet.run.tensorboard import links, write_study
        from odenet.run.tensorboard import write_report as write_tensorboard_report

        args = parser.parse_args(argv)
        runs = find_runs(args.runs)
        out = Path(args.out) if args.out else common_parent([r.path for r in runs])
        check_writable(out)
        report = combined_report(runs, args.title)
        written = write_report(report, out)
        write_tensorboard_report(report, str(out / "_report"), "report")  # TensorBoard's copy says the same
        write_study(runs, out / "_report")
        print(f"report of {len(runs)} runs: {written['report.md']} and {written['report.html']}")
        print(links(out))

    return run_command(command)


def demo_main(argv: list[str] | None = None) -> int:
    """``make demo`` / ``odenet-demo``."""
    from odenet.demo import parse_demo_args, run_demo

    return run_command(lambda: run_demo(parse_demo_args(argv)))


def dynamics_main(argv: list[str] | None = None) -> int:
    """``odenet-dynamics COMMAND`` / ``python -m odenet.dynamics COMMAND``."""
    from odenet.dynamics.commands import COMMANDS, USAGE

    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stdout if argv else sys.stderr)
        return EXIT_OK if argv else EXIT_USER_ERROR
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        return fail(f"unknown command {command!r}{closest(command, list(COMMANDS))}; valid commands: "
                    f"{', '.join(COMMANDS)}")
    try:
        return run_command(lambda: COMMANDS[command](rest))
    except SystemExit as exc:  # argparse's --help
        return int(exc.code or 0)
