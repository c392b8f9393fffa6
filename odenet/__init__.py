"""odenet: ODE-Net and ResNet image classifiers with exact NFE, memory, time and accuracy measurement.

Public API:

* :func:`load` a trained checkpoint → :class:`TrainedModel` (preprocessing, class names, ``predict`` with
  each image's own NFE);
* :func:`create_backbone`, :func:`list_backbones`: the architectures; :class:`ODEBlock` with
  :class:`SolverSettings`: an ODE block for any model of your own;
* :func:`read_nfe` (NFE counters per phase, summed over ODE blocks and per block), :func:`reset_nfe` and
  :func:`set_solver`.

They are imported lazily, so that the torch-free parts (``odenet.reports``) load without torch.
"""

from importlib import import_module

_HOMES = {"ODEBlock": "odenet.models", "SolverSettings": "odenet.models", "create_backbone": "odenet.models",
          "list_backbones": "odenet.models", "read_nfe": "odenet.models", "reset_nfe": "odenet.models",
          "set_solver": "odenet.models", "load": "odenet.inference", "TrainedModel": "odenet.inference"}
__all__ = sorted(_HOMES)
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'odenet' has no attribute {name!r}")
