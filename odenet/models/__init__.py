"""The architectures and their ODE block; importing this package registers every backbone.

Rooms: ``backbones`` (the registry and the stem → features → head classifier), ``layers``, ``paper``,
``cifar`` and ``mlp_ode`` (the models), ``ode`` (the ODE block and its counters), ``regularizers`` (the dynamics
levers of a block's training solves), ``per_sample_blocks`` (a model's blocks solved per image).
How an ODE is solved is :mod:`odenet.solve`'s.
"""

from odenet.models import cifar, mlp_ode, paper  # noqa: F401  (registration side effects)
from odenet.models.backbones import Classifier, backbone_entry, create_backbone, list_backbones
from odenet.models.ode import ODEBlock, SolverStats, read_nfe, reset_nfe, set_solver, take_nfe
from odenet.solve import SolverError, SolverSettings

__all__ = ["Classifier", "ODEBlock", "SolverError", "SolverSettings", "SolverStats", "backbone_entry",
           "create_backbone", "list_backbones", "read_nfe", "reset_nfe", "set_solver", "take_nfe"]
