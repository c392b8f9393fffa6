"""The one door to torchdiffeq's internals: every private name odenet uses is imported here, and only here.

odenet runs torchdiffeq's own step control (:mod:`odenet.solve.host`) and mirrors it in tensors
(:mod:`odenet.solve.control`), so it reads a few of torchdiffeq's private helpers — the solver table,
the Runge–Kutta state and tableaux, the error ratio, the step-size update, the interpolant. Those are
not a public API and may move in a release; if they have, importing this module raises one
:class:`ImportError` sentence naming the installed version and the one odenet was written against,
instead of an ``AttributeError`` deep inside a solve.

:data:`BASE_SOLVERS` is torchdiffeq's solver table as it was on import, before
:func:`add_solver` adds odenet's fast twins (as new keys, replacing nothing); read the methods'
classes from it.
"""

from __future__ import annotations

import torchdiffeq
from torchdiffeq import odeint, odeint_adjoint

TESTED_VERSION = "0.2.5"

try:
    from torchdiffeq._impl.interp import _interp_fit
    from torchdiffeq._impl.misc import Perturb, _compute_error_ratio, _optimal_step_size, _PerturbFunc, _rms_norm
    from torchdiffeq._impl.odeint import SOLVERS as _LIVE_SOLVERS
    from torchdiffeq._impl.rk_common import RKAdaptiveStepsizeODESolver, _RungeKuttaState
    from torchdiffeq._impl.solvers import FixedGridODESolver
except ImportError as exc:  # pragma: no cover - depends on the installed torchdiffeq
    raise ImportError(
        f"torchdiffeq {getattr(torchdiffeq, '__version__', '?')} does not have the internals odenet's solvers read "
        f"({exc}); install torchdiffeq {TESTED_VERSION} with pip install 'torchdiffeq=={TESTED_VERSION}'"
    ) from None

BASE_SOLVERS = dict(_LIVE_SOLVERS)  # torchdiffeq's methods only, whatever add_solver adds later

__all__ = ["BASE_SOLVERS", "FixedGridODESolver", "Perturb", "RKAdaptiveStepsizeODESolver", "TESTED_VERSION",
           "_PerturbFunc", "_RungeKuttaState", "_compute_error_ratio", "_interp_fit", "_optimal_step_size",
           "_rms_norm", "add_solver", "missing_methods", "odeint", "odeint_adjoint"]


def add_solver(name: str, cls: type) -> None:
    """Make ``odeint(..., method=name)`` run ``cls`` (a new key of torchdiffeq's table; idempotent)."""
    if name in BASE_SOLVERS:
        raise ValueError(f"{name!r} is torchdiffeq's own method; odenet adds new names only")
    _LIVE_SOLVERS.setdefault(name, cls)


def missing_methods(methods: tuple[str, ...]) -> list[str]:
    """The methods of ``methods`` the installed torchdiffeq does not have."""
    return [m for m in methods if m not in BASE_SOLVERS]
