"""The solving wing's torch-free rooms: the one tolerance expansion, the applicability rule, the shared flags."""

from __future__ import annotations

import dataclasses

import pytest

from odenet.config import ConfigError
from odenet.solve import (SOLVER_RULES, Applies, SolverConstraint, SolverOptions, expand_tol, inapplicable,
                          resolve_solver_options)


def test_a_tolerance_becomes_rtol_and_atol_unless_they_are_given():
    assert expand_tol(1e-3) == (1e-3, 1e-3)
    assert expand_tol(1e-3, rtol=1e-4) == (1e-4, 1e-3)
    assert expand_tol(1e-3, atol=1e-6) == (1e-3, 1e-6)
    assert expand_tol(None) == (None, None)


@pytest.mark.parametrize("values, expected", [
    ({"solver": "dopri5", "adjoint": False}, {"steps", "adjoint_tol", "seminorm"}),
    ({"solver": "dopri5", "adjoint": True}, {"steps"}),
    ({"solver": "rk4", "adjoint": False},
     {"tol", "rtol", "atol", "max_num_steps", "fast_rk", "first_step", "adjoint_tol", "seminorm"}),
])
def test_the_rule_names_what_does_not_apply(values, expected):
    assert set(inapplicable(values)) == expected


def test_the_rule_takes_other_owners_entries_and_a_backbones_fixed_solver():
    rules = {**SOLVER_RULES, "lever": Applies(adaptive=True, backprop="direct", why_backprop="--lever needs direct")}
    assert inapplicable({"solver": "dopri5", "adjoint": True}, rules=rules)["lever"] == "--lever needs direct"
    assert "lever" in inapplicable({"solver": "euler"}, rules=rules)
    fixed = SolverConstraint("rknet", method="rk4")
    assert set(inapplicable({"solver": "rk4"}, constraint=fixed, rules=rules)) == set(rules) - {
        "solver", "adjoint", "steps", "t1"}
    assert set(inapplicable({"backbone": "resnet"}, ode=False)) == set(SOLVER_RULES)


def test_resolution_refuses_given_options_and_blanks_defaults():
    values = dataclasses.asdict(SolverOptions())
    changes = resolve_solver_options(values, explicit=set())
    assert changes == {"solver": "dopri5", "adjoint_tol": None, "seminorm": None, "steps": None, "rtol": 1e-3,
                       "atol": 1e-3}
    with pytest.raises(ConfigError, match="^--steps does not apply: dopri5 chooses its own steps"):
        resolve_solver_options({**values, "steps": 4}, explicit={"steps"})
    fixed = resolve_solver_options({**values, "solver": "rk4"}, explicit={"solver"})
    assert fixed["steps"] == 6 and fixed["rtol"] is None and fixed["max_num_steps"] is None
    with pytest.raises(ConfigError, match="needs --steps"):
        resolve_solver_options({**values, "solver": "rk4"}, explicit={"solver"}, default_steps=None)
    assert resolve_solver_options(values, explicit=set(), ode=False) == dict.fromkeys(values)


def test_the_shared_flags_make_the_settings_a_solve_takes():
    options = SolverOptions(tol=None, rtol=1e-4, atol=1e-6, adjoint=True, adjoint_tol=1e-3, seminorm=True)
    settings = options.solver_settings(t1=2.0)
    assert (settings.rtol, settings.atol, settings.adjoint_rtol, settings.seminorm, settings.t1) == (
        1e-4, 1e-6, 1e-3, True, 2.0)
