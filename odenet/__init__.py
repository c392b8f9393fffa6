"""odenet: ODE-Net and ResNet image classifiers with exact NFE, memory, time and accuracy measurement."""

from odenet.models import ODEBlock, SolverSettings, create_backbone, list_backbones, read_nfe, set_solver

__all__ = ["ODEBlock", "SolverSettings", "create_backbone", "list_backbones", "read_nfe", "set_solver"]
__version__ = "0.1.0"
