"""Solver options as a config has them, and the one rule of which options apply to which run. Torch-free.

:class:`SolverOptions` is the block of flags and YAML keys every command that solves ODEs shares
(train.py, the train-time grid, eval.py's checkpoints, the dynamics experiments); it becomes a
:class:`~odenet.solve.settings.SolverSettings` with :meth:`SolverOptions.solver_settings`.

:func:`inapplicable` is the rule: for a run (ODE blocks or none, adaptive or fixed-step, adjoint or
direct, a backbone's fixed solver) it names every option that does not apply and why. Options of
other owners (the dynamics levers of :mod:`odenet.train.config`) join with their own :class:`Applies`
entries, so the rule stays one function that knows no regulariser. :func:`resolve_solver_options`
refuses inapplicable options given explicitly and blanks the rest; the grid leaves them out of
points (:func:`inapplicable` directly).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from odenet.config import opt
from odenet.errors import ConfigError
from odenet.registry import closest
from odenet.solve.settings import DEFAULT_STEPS, SOLVERS, SolverSettings, expand_tol, is_adaptive


def _solver_names() -> str:
    return ", ".join(SOLVERS)


@dataclass
class SolverOptions:
    """How the ODE blocks are integrated: the flags every command that solves ODEs shares.

    Values that do not apply to a run (a tolerance of a fixed-step solver, anything of a model without
    ODE blocks) are blanked to None by :func:`resolve_solver_options`, so a saved config says what ran.
    """

    solver: str | None = opt("dopri5", "torchdiffeq method of the ODE blocks", choices_help=_solver_names)
    tol: float | None = opt(1e-3, "adaptive solvers: rtol = atol = TOL")
    rtol: float | None = opt(None, "relative tolerance (overrides --tol)")
    atol: float | None = opt(None, "absolute tolerance (overrides --tol)")
    adjoint: bool | None = opt(False, "backpropagate with the adjoint ODE (O(1) memory) instead of through the "
                                      "solver")
    adjoint_tol: float | None = opt(None, "tolerance of the adjoint solve (default: the forward one)")
    seminorm: bool | None = opt(False, "seminorm error control in the adjoint solve (fewer backward NFE)")
    max_num_steps: int | None = opt(1000, "adaptive solvers fail after this many steps per solve (runaway guard)")
    steps: int | None = opt(None, "fixed-step solvers (rk4, euler, ...): steps per unit of time (step size 1/N)")

    def solver_settings(self, **more) -> SolverSettings:
        """The resolved options as :class:`SolverSettings`; ``more`` adds fields a config has beyond these."""
        return SolverSettings(method=self.solver, rtol=self.rtol, atol=self.atol, adjoint=bool(self.adjoint),
                              adjoint_rtol=self.adjoint_tol, adjoint_atol=self.adjoint_tol,
                              seminorm=bool(self.seminorm), max_num_steps=self.max_num_steps, steps=self.steps,
                              **more)


# --------------------------------------------------------------------------- the rule

@dataclass(frozen=True)
class Applies:
    """Which ODE runs an option applies to (every option needs a model with ODE blocks).

    Attributes:
        adaptive: True for adaptive solvers only, False for fixed-step solvers only, None for both.
        backprop: "direct" or "adjoint" only, None for both.
        fast_rk: needs odenet's fast RK solvers (``--fast-rk``, the default).
        why_backprop, why_fast_rk: the refusal when that condition fails, a whole sentence starting with the
            flag (empty: a generic "--flag does not apply: ...").
    """

    adaptive: bool | None = None
    backprop: str | None = None
    fast_rk: bool = False
    why_backprop: str = ""
    why_fast_rk: str = ""


SOLVER_RULES: dict[str, Applies] = {
    "solver": Applies(), "adjoint": Applies(), "t1": Applies(),
    "tol": Applies(adaptive=True), "rtol": Applies(adaptive=True), "atol": Applies(adaptive=True),
    "max_num_steps": Applies(adaptive=True), "fast_rk": Applies(adaptive=True), "first_step": Applies(adaptive=True),
    "adjoint_tol": Applies(adaptive=True, backprop="adjoint"),
    "seminorm": Applies(adaptive=True, backprop="adjoint",
                        why_backprop="--seminorm controls the adjoint solve's error; add --adjoint or drop --seminorm"),
    "steps": Applies(adaptive=False),
}


@dataclass(frozen=True)
class SolverConstraint:
    """What a backbone fixes of its ODE blocks' solver (rknet: direct RK4); kept on its registry entry.

    Attributes:
        name: the backbone.
        method: the only solver it runs.
        adjoint: whether the adjoint is allowed.
        own_fields: the options a user may still set.
        instead: what to use for anything else (ends the error message).
    """

    name: str
    method: str
    adjoint: bool = False
    own_fields: tuple[str, ...] = ("steps", "t1")
    instead: str = "--backbone odenet --solver ..."

    def check(self, settings: SolverSettings) -> None:
        """Raise ValueError unless ``settings`` is what the backbone runs."""
        if settings.method != self.method or (settings.adjoint and not self.adjoint):
            raise ValueError(self.why())

    def why(self) -> str:
        return (f"{self.name} is fixed-step {self.method.upper()} with direct backpropagation; for other solvers, "
                f"the adjoint or the dynamics levers use {self.instead}")


def inapplicable(values: Mapping[str, Any], *, ode: bool = True, constraint: SolverConstraint | None = None,
                 rules: Mapping[str, Applies] = SOLVER_RULES) -> dict[str, str]:
    """Every option of ``rules`` that does not apply to the run ``values`` describes → why not.

    Args:
        values: the run's options (``solver``, ``adjoint``, ``fast_rk``, ``backbone`` are read).
        ode: whether the model has ODE blocks at all.
        constraint: the backbone's fixed solver, if any.
        rules: the options judged (:data:`SOLVER_RULES` and any others').
    """
    if not ode:
        return dict.fromkeys(rules, f"{values.get('backbone', 'this model')} has no ODE block")
    if constraint is not None:
        return {f: constraint.why() for f in rules if f not in constraint.own_fields + ("solver", "adjoint")}
    solver = values.get("solver") or "dopri5"
    adjoint = bool(values.get("adjoint"))
    found = {}
    for name, rule in rules.items():
        if rule.adaptive is True and not is_adaptive(solver):
            found[name] = f"{solver} is a fixed-step solver; set --steps instead"
        elif rule.adaptive is False and is_adaptive(solver):
            found[name] = f"{solver} chooses its own steps; set --tol instead"
        elif rule.backprop == "adjoint" and not adjoint:
            found[name] = rule.why_backprop or "there is no adjoint solve without --adjoint"
        elif rule.backprop == "direct" and adjoint:
            found[name] = rule.why_backprop or "it needs direct backpropagation; drop --adjoint"
        elif rule.fast_rk and values.get("fast_rk") is False:
            found[name] = rule.why_fast_rk or "it needs odenet's fast RK solvers; drop --no-fast-rk"
    return found


def resolve_solver_options(values: Mapping[str, Any], explicit: set[str], *, ode: bool = True,
                           constraint: SolverConstraint | None = None,
                           rules: Mapping[str, Applies] = SOLVER_RULES,
                           default_steps: int | None = DEFAULT_STEPS) -> dict[str, Any]:
    """The changes that make a config's solver options say what will run.

    An inapplicable option given explicitly with a value that does something (not None, False or 0) is
    refused; the rest are blanked to None. ``tol`` becomes ``rtol``/``atol`` (:func:`expand_tol`).

    Args:
        values: the config's options (those in ``rules``; others are ignored).
        explicit: names set by a YAML file or a flag.
        ode: whether the model has ODE blocks at all.
        constraint: the backbone's fixed solver, if any.
        rules: the options judged (:data:`SOLVER_RULES` and any others').
        default_steps: steps of a fixed-step solver without ``steps``; None makes ``steps`` required.

    Raises:
        ConfigError: an unknown solver, or an option given that does not apply.
    """
    rules = {f: r for f, r in rules.items() if f in values}
    changes: dict[str, Any] = {}
    if ode:
        changes["solver"] = _solver(values, explicit, constraint)
        values = {**values, **changes}
    dropped = inapplicable(values, ode=ode, constraint=constraint, rules=rules)
    _refuse(values, explicit, dropped)
    changes.update(dict.fromkeys(dropped))
    if not ode:
        return changes
    solver = changes["solver"]
    if is_adaptive(solver):
        rtol, atol = expand_tol(values.get("tol"), values.get("rtol"), values.get("atol"))
        if rtol is None or atol is None:
            raise ConfigError(f"{solver} needs a tolerance; give --tol (or --rtol and --atol)")
        changes.update(rtol=rtol, atol=atol)
    else:
        steps = values.get("steps") or default_steps
        if steps is None:
            raise ConfigError(f"fixed-step solver {solver} needs --steps N (steps per unit of time)")
        changes["steps"] = steps
    return changes


def _solver(values: Mapping[str, Any], explicit: set[str], constraint: SolverConstraint | None) -> str:
    solver = values["solver"]
    if constraint is not None:
        if solver != constraint.method and "solver" in explicit:
            raise ConfigError(f"{constraint.name} is fixed-step {constraint.method.upper()}; drop --solver, or use "
                              f"--backbone odenet --solver {solver}")
        if values.get("adjoint") and not constraint.adjoint:
            raise ConfigError(f"{constraint.name} backpropagates directly through {constraint.method.upper()}; drop "
                              f"--adjoint, or use --backbone odenet --solver {constraint.method} --adjoint")
        return constraint.method
    if solver not in SOLVERS:
        raise ConfigError(f"unknown --solver {solver!r}{closest(str(solver), list(SOLVERS))}; valid: "
                          f"{', '.join(SOLVERS)}")
    return solver


def _refuse(values: Mapping[str, Any], explicit: set[str], dropped: Mapping[str, str]) -> None:
    """Refuse inapplicable options given with a value that would do something (``--no-seminorm`` is harmless)."""
    given = [name for name in dropped if name in explicit and values.get(name) not in (None, False, 0)]
    if given:
        why = dropped[given[0]]
        raise ConfigError(refusal([n for n in given if dropped[n] == why], why))


def refusal(names: list[str], why: str) -> str:
    """The sentence refusing inapplicable options ``names`` that share one reason ``why``: a rule's own whole
    sentence (Applies.why_*, naming the flag already), or "--x does not apply: why"."""
    return why if why.startswith("--") else f"{', '.join(_flag(n) for n in names)} does not apply: {why}"


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")
