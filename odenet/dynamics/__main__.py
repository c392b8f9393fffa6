"""``python -m odenet.dynamics COMMAND ...`` (see :mod:`odenet.dynamics.cli`)."""

from odenet.dynamics.cli import main

raise SystemExit(main())
