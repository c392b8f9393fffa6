"""Backbones: one registry; importing this package registers them all."""

from odenet.models import cifar, paper  # noqa: F401  (registration side effects)
from odenet.models.ode import ODEBlock, SolverSettings, SolverStats, read_nfe, set_solver
from odenet.models.registry import Classifier, backbone_entry, create_backbone, list_backbones

__all__ = ["Classifier", "ODEBlock", "SolverSettings", "SolverStats", "backbone_entry", "create_backbone",
           "list_backbones", "read_nfe", "set_solver"]
