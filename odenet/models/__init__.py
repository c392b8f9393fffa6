"""Backbones and their ODE blocks; importing this package registers every backbone.

Rooms: ``solvers`` (names, settings, failures, which options apply), ``fast_rk`` (cheaper RK
stage arithmetic), ``ode`` (the ODE block and its counters), ``backbones`` (the registry and
the stem → features → head classifier), ``layers``, ``paper`` and ``cifar`` (the models).
"""

from odenet.models import cifar, paper  # noqa: F401  (registration side effects)
from odenet.models.backbones import Classifier, backbone_entry, create_backbone, list_backbones
from odenet.models.ode import ODEBlock, SolverStats, read_nfe, reset_nfe, set_solver, take_nfe
from odenet.models.solvers import SolverError, SolverSettings

__all__ = ["Classifier", "ODEBlock", "SolverError", "SolverSettings", "SolverStats", "backbone_entry",
           "create_backbone", "list_backbones", "read_nfe", "reset_nfe", "set_solver", "take_nfe"]
