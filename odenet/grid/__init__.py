"""The train-time grid (``odenet-grid``): a grid of training runs, one directory each, then one combined report.

"Grid" here; "sweep" is the test-time tolerance sweep of one checkpoint (``eval.py``, ``sweep.json``)
that the grid runs for each ODE run when asked. A grid YAML (``configs/grid-*.yaml``) has up to
five keys::

    base:  {dataset: mnist-5k, epochs: 2, ...}       # TrainConfig options shared by every run
    grid:                                           # one mapping, or a list of them (a union)
      - {backbone: [resnet]}
      - {backbone: [odenet], tol: [1e-1, 1e-3, 1e-5], adjoint: [false, true], seed: [0]}
    eval:  {tols: [1e-1, 1e-2, 1e-3, 1e-4], limit_test_batches: 1}   # test-time sweep of each ODE run
    out_dir: runs/grid
    title: "..."

Each mapping of ``grid`` is a Cartesian product. Points are resolved like ``train.py``
arguments, with options that do not apply dropped first (a ResNet has no tolerance), so the
product collapses to the distinct runs. Re-running a grid skips finished runs, resumes
interrupted ones from their ``last.pt``, and rebuilds the report.

Rooms: :mod:`~odenet.grid.plan` (the YAML and flags, checked and expanded), :mod:`~odenet.grid.points`
(each point's run directory), :mod:`~odenet.grid.job` (one point: train, sweep, record),
:mod:`~odenet.grid.launch` and :mod:`~odenet.grid.engines` (in this process, ``--jobs N`` processes,
a submitit job array), :mod:`~odenet.grid.runner` (the whole grid and its report).
"""

from odenet.grid.job import evaluate_run, run_point
from odenet.grid.launch import LaunchOptions
from odenet.grid.plan import GridArgs, GridPlan, comparable, expand, load_plan, run_name
from odenet.grid.points import point_state, prepare
from odenet.grid.runner import parse_grid_args, run_grid

__all__ = ["LaunchOptions", "GridArgs", "GridPlan", "comparable", "evaluate_run", "expand", "load_plan",
           "parse_grid_args", "point_state", "prepare", "run_name", "run_point", "run_grid"]
