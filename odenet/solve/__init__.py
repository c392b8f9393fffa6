"""Solving ODEs: the wing that knows no model, dataset or regulariser.

Rooms, from what a config says to what runs on the device:

* :mod:`~odenet.solve.settings` — the table of methods, :class:`SolverSettings`, the one
  tol → (rtol, atol) expansion, :class:`SolverError` (torch-free);
* :mod:`~odenet.solve.options` — :class:`SolverOptions`, the flags every command shares, and the one
  rule of which options apply to which run (torch-free);
* :mod:`~odenet.solve.torchdiffeq_api` — the one door to torchdiffeq's internals;
* :mod:`~odenet.solve.tableau` — a Runge–Kutta method as Python numbers and its stage arithmetic,
  shared by both step controls;
* :mod:`~odenet.solve.host` — torchdiffeq's ``odeint``/``odeint_adjoint`` with odenet's settings, the
  fast Runge–Kutta twins and the accepted-step hook a regulariser subscribes to;
* :mod:`~odenet.solve.control` — the same step control in tensors (batch-shared or per image);
* :mod:`~odenet.solve.drivers` and :mod:`~odenet.solve.graphs` — the drivers of that control (on the
  device, per image, as CUDA graphs), one :class:`~odenet.solve.drivers.Solution` type and one failure check.

This package imports only the torch-free rooms, so configs and command-line parsers load fast.
"""

from odenet.solve.options import (SOLVER_RULES, Applies, SolverConstraint, SolverOptions, inapplicable,
                                  refusal, resolve_solver_options)
from odenet.solve.settings import (ADAPTIVE_SOLVERS, DEFAULT_STEPS, FIXED_SOLVERS, SOLVERS, SolverError,
                                   SolverSettings, expand_tol, is_adaptive)

__all__ = ["ADAPTIVE_SOLVERS", "Applies", "SOLVER_RULES", "DEFAULT_STEPS", "FIXED_SOLVERS", "SOLVERS", "SolverConstraint",
           "SolverError", "SolverOptions", "SolverSettings", "expand_tol", "inapplicable", "is_adaptive",
           "refusal", "resolve_solver_options"]
