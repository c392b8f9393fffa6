"""The dynamics regularisers (RNODE, ERNODE, STEER) against direct computations on tiny fields."""

from __future__ import annotations

import pytest
import torch
from torchdiffeq import odeint, odeint_adjoint
from torchdiffeq._impl import rk_common
from torchdiffeq._impl.dopri5 import Dopri5Solver

from odenet.solve import host as fast_rk
from odenet.models.regularizers import IntegralsField, initial_state, recording_step_errors, state_norm

T = torch.tensor([0.0, 1.0], dtype=torch.float64)


class Linear(torch.nn.Module):
    def __init__(self, a: torch.Tensor) -> None:
        super().__init__()
        self.a = torch.nn.Parameter(a)

    def forward(self, t, x):
        return x @ self.a.T


def integrals(field, x0, jacobian=False, probe=None, adjoint=False, tol=1e-10):
    wrapped = IntegralsField(field, jacobian)
    wrapped.probe = probe
    solve = odeint_adjoint if adjoint else odeint
    extra = {"adjoint_params": tuple(field.parameters())} if adjoint else {}
    x, kinetic, jac = solve(wrapped, initial_state(x0), T, rtol=tol, atol=tol, method="dopri5",
                            options={"norm": state_norm}, **extra)
    return x[-1], kinetic[-1], jac[-1]


def test_kinetic_energy_of_a_linear_field_in_closed_form():
    a = torch.tensor([-0.7, 0.3, 1.1], dtype=torch.float64)
    x0 = torch.tensor([[1.0, -2.0, 0.5], [0.3, 0.2, -1.0]], dtype=torch.float64)
    _, kinetic, _ = integrals(Linear(torch.diag(a)), x0)
    # f_i = a_i x0_i e^{a_i t}: ∫₀¹ f_i² dt = a_i x0_i² (e^{2 a_i} − 1) / 2; RNODE's code integrates ½ · the mean
    # over the D = 3 elements.
    exact = 0.5 * (a * x0 ** 2 * (torch.exp(2 * a) - 1) / 2).mean(1)
    assert torch.allclose(kinetic, exact, rtol=1e-7)


def test_hutchinson_estimate_averages_to_the_jacobian_frobenius_norm():
    torch.manual_seed(0)
    a = torch.randn(4, 4, dtype=torch.float64)
    x0 = torch.randn(20000, 4, dtype=torch.float64)
    probe = torch.randn_like(x0)
    _, _, jac = integrals(Linear(a), x0, jacobian=True, probe=probe, tol=1e-6)
    # ∇ₓf = A everywhere, so ∫₀¹ ‖εᵀA‖²/D dt has mean ‖A‖²_F / D over probes (20,000 of them: ~1% noise).
    assert jac.mean().item() == pytest.approx((a ** 2).sum().item() / 4, rel=0.03)
    single = (probe[:1] @ a).pow(2).mean().item()
    assert jac[0].item() == pytest.approx(single, rel=1e-6)  # one probe: exactly its own estimate


def test_integrals_do_not_change_the_steps_of_x():
    torch.manual_seed(1)
    field = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).double()

    class Timed(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net, self.calls = field, 0

        def forward(self, t, x):
            self.calls += 1
            return self.net(x) * torch.cos(5 * t)

    x0 = torch.randn(6, 3, dtype=torch.float64)
    plain = Timed()
    y = odeint(plain, x0, T, rtol=1e-5, atol=1e-5, method="dopri5")[-1]
    regularised = Timed()
    x, _, _ = integrals(regularised, x0, jacobian=True, probe=torch.randn_like(x0), tol=1e-5)
    assert regularised.calls == plain.calls
    assert torch.allclose(x, y, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("adjoint", [False, True])
def test_regularised_loss_has_gradients_direct_and_adjoint(adjoint):
    torch.manual_seed(2)
    field = Linear(0.3 * torch.randn(3, 3, dtype=torch.float64))
    x0 = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    probe = torch.randn(5, 3, dtype=torch.float64)
    x, kinetic, jac = integrals(field, x0, jacobian=True, probe=probe, adjoint=adjoint, tol=1e-10)
    (x.square().sum() + kinetic.mean() + jac.mean()).backward()
    grad = field.a.grad[0, 1].item()
    # Central finite difference of the same scalar in one weight (same probe).
    values = []
    for step in (1e-6, -1e-6):
        with torch.no_grad():
            field.a[0, 1] += step
            xs, ks, js = integrals(field, x0.detach(), jacobian=True, probe=probe, tol=1e-10)
            values.append((xs.square().sum() + ks.mean() + js.mean()).item())
            field.a[0, 1] -= step
    assert grad == pytest.approx((values[0] - values[1]) / 2e-6, rel=1e-4)


def test_error_record_is_the_tolerance_scaled_error_ratio_of_each_accepted_step():
    # ERNODE (Pal et al. 2021): Σ_j r_j·|Δt_j|, r_j = RMS(err_j / (atol + rtol·max(|y0|, |y1|))), the number
    # the step controller compares with 1 (OrdinaryDiffEq's EEst), computed here by hand from
    # torchdiffeq's own Dormand–Prince stages.
    torch.manual_seed(3)
    field = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).double()

    class Field(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net, self.accepted = field, []

        def forward(self, t, x):
            return self.net(x) * torch.cos(40 * t)

        def callback_accept_step(self, t0, y0, dt):
            self.accepted.append((t0.clone(), y0.clone(), dt.clone()))

        def callback_reject_step(self, t0, y0, dt):
            pass

    f = Field()
    x0 = torch.randn(3, 2, dtype=torch.float64)
    tol = 1e-4
    with recording_step_errors() as errors:
        odeint(f, x0, T, rtol=tol, atol=tol, method=fast_rk.method_name("dopri5"))
    assert len(errors) == len(f.accepted) > 3
    ratios = []
    for (t0, y0, dt), recorded in zip(f.accepted, errors):
        func = lambda t, y, perturb=None: f(t, y)  # noqa: E731  (torchdiffeq's stage calls pass perturb)
        y1, _, y1_error, _ = rk_common._runge_kutta_step(func, y0, f(t0, y0), t0, dt, t0 + dt, Dopri5Solver.tableau)
        ratio = (y1_error / (tol + tol * torch.max(y0.abs(), y1.abs()))).pow(2).mean().sqrt()
        assert recorded.item() == pytest.approx((ratio * dt.abs()).item(), rel=1e-9)
        ratios.append(ratio.item())
    assert max(ratios) <= 1 and min(ratios) > 1e-3  # accepted steps, and not the raw error (which is ~tol)
    assert 0 < sum(e.item() for e in errors) <= T[-1].item()  # Σ r_j Δt_j ≤ T: ERNODE's bound


def test_nothing_is_recorded_outside_the_context():
    field = Linear(torch.eye(2, dtype=torch.float64))
    with recording_step_errors() as errors:
        pass
    odeint(field, torch.ones(1, 2, dtype=torch.float64), T, method=fast_rk.method_name("dopri5"))
    assert errors == []
