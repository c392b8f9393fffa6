"""An ODE block inside a model of your own, with its function evaluations counted.

`odenet.ODEBlock(func, odenet.SolverSettings(...))` is an `nn.Module` mapping x to the solution at t1 of
dx/dt = func(t, x), x(0) = x; it fits anywhere an `nn.Module` does (here, an `nn.Sequential`).
`func` is any module called as `func(t, x)` whose output has x's shape. `odenet.read_nfe(model)`
reads the exact counts of every ODE block in the model; `odenet.set_solver` changes their settings.
Runs in seconds on a CPU: `python examples/own_model.py`.
"""

import torch
from torch import nn

import odenet


class Field(nn.Module):
    """f(t, x) for a (B, 64, H, W) state: two 3x3 convolutions, the time added as one more input."""

    def __init__(self, channels: int = 64) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(8, channels)
        self.conv1 = nn.Conv2d(channels + 1, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels + 1, channels, 3, padding=1)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        time = t.expand(x.shape[0], 1, *x.shape[2:])  # t is a 0-d tensor: one time for the whole batch
        h = self.conv1(torch.cat([time, torch.relu(self.norm(x))], 1))
        return self.conv2(torch.cat([time, torch.relu(h)], 1))


model = nn.Sequential(
    nn.Conv2d(1, 64, 3, stride=2, padding=1),  # (B, 1, 28, 28) -> (B, 64, 14, 14)
    odenet.ODEBlock(Field(64), odenet.SolverSettings(method="dopri5", rtol=1e-3, atol=1e-3)),
    nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
)

x = torch.randn(8, 1, 28, 28)
loss = nn.functional.cross_entropy(model(x), torch.randint(0, 10, (8,)))
loss.backward()  # direct backprop through the solver (odenet.SolverSettings(adjoint=True): the adjoint)
counts = odenet.read_nfe(model)
print(f"forward NFE {counts['nfe_forward']}, backward NFE {counts['nfe_backward']}, "
      f"steps accepted {counts['steps_accepted']}, rejected {counts['steps_rejected']}")

odenet.reset_nfe(model)
odenet.set_solver(model, tol=1e-5)  # rtol = atol = 1e-5 for every ODE block of the model
with torch.no_grad():
    model(x)
print(f"at tol 1e-5: forward NFE {odenet.read_nfe(model)['nfe_forward']}")
