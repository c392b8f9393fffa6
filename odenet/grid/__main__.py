"""``python -m odenet.grid SPEC_JSON``: one grid point in a process of its own (see odenet.grid.job)."""

import sys

from odenet.grid.job import main

sys.exit(main())
