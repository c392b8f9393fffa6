"""A model's ODE blocks swapped for per-image solves (:func:`odenet.solve.drivers.solve_per_sample`).

Each image of a batch is integrated with its own step-size control, as if it were solved alone; the
counts come back as data on the stand-in blocks, and the blocks' own counters are left untouched. The
field must take a per-sample ``t`` shaped (B, 1, ..., 1): :class:`odenet.models.layers.ConvODEField` does
(``torch.addcmul(conv, t, bias_map)``).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from odenet.models.ode import ODEBlock, block_problem, ode_blocks
from odenet.solve.drivers import Solution, solve_per_sample


def solve_block_per_sample(block: ODEBlock, x: torch.Tensor) -> Solution:
    """Solve ``block``'s problem for each image of ``x`` (B, ...) with its own adaptive step control.

    Raises:
        ValueError: the block's solver is fixed-grid, or ``x`` has no batch dimension.
        odenet.solve.SolverError: an image's solve failed as its batch-of-1 solve would; the message names
            the images.
    """
    return solve_per_sample(block_problem(block, x, per_sample=True), x)


class PerSampleBlock(nn.Module):
    """Stands in for an ODE block: the same problem solved per image; keeps the last solve's counts."""

    def __init__(self, block: ODEBlock) -> None:
        super().__init__()
        self.block = block
        self.last: Solution | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.last = solve_block_per_sample(self.block, x)
        return self.last.y


@contextmanager
def per_sample_blocks(model: nn.Module):
    """Swap every ODE block of ``model`` for a :class:`PerSampleBlock` (restored on exit); yields them by name."""
    swapped = {}
    for name, block in ode_blocks(model).items():
        parent, _, child = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        swapped[name] = (owner, child, block, PerSampleBlock(block))
        setattr(owner, child, swapped[name][3])
    try:
        yield {name: s[3] for name, s in swapped.items()}
    finally:
        for owner, child, block, _ in swapped.values():
            setattr(owner, child, block)
