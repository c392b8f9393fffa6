"""``python -m odenet.dynamics COMMAND ...`` (see :func:`odenet.cli.dynamics_main`)."""

from odenet.cli import dynamics_main

raise SystemExit(dynamics_main())
