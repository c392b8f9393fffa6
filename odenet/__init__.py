"""odenet: ODE-Net and ResNet image classifiers with exact NFE, memory, time and accuracy measurement.

Public API: :func:`create_backbone`, :func:`list_backbones`, :class:`ODEBlock`,
:class:`SolverSettings`, :func:`read_nfe` (NFE counters per phase, summed over ODE blocks and
per block), :func:`reset_nfe` and :func:`set_solver`. They are imported lazily so that
torch-free parts (``odenet.reports``) load without torch.
"""

from importlib import import_module

__all__ = ["ODEBlock", "SolverSettings", "create_backbone", "list_backbones", "read_nfe", "reset_nfe", "set_solver"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in __all__:
        return getattr(import_module("odenet.models"), name)
    raise AttributeError(f"module 'odenet' has no attribute {name!r}")
