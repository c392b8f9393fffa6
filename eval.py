"""Test-time tolerance sweep of one checkpoint. See README.md or ``python eval.py --help``."""

from odenet.cli import eval_main

if __name__ == "__main__":
    raise SystemExit(eval_main())
