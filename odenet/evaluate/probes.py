"""Probes of the test-time sweep: block inputs/outputs, the float64 reference solve, FLOPs, act_mem_mb."""

from __future__ import annotations

import copy
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from odenet.measure import SavedTensorMeter
from odenet.models.ode import ODEBlock, ode_blocks
from odenet.solve import SolverSettings


class BlockRecorder:
    """Forward hooks that keep each ODE block's last input and output (for the error measurement)."""

    def __init__(self, model: nn.Module) -> None:
        self.io: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._handles = [block.register_forward_hook(self._hook(name)) for name, block in ode_blocks(model).items()]

    def _hook(self, name: str):
        def hook(module, inputs, output):
            self.io[name] = (inputs[0].detach(), output.detach())
        return hook

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


class Reference:
    """Float64 dopri5 solves at ``tol`` of each block's input, cached per (block, batch) while
    the input is unchanged — so a sweep solves each test batch once, not once per setting.
    The cache lives on the CPU, out of the device's peak memory.

    Only the first ``images`` images of a batch are compared: float64 convolutions are slow on
    CPUs, and the error is a statistic of the solver, not of every image. dopri5 rather than
    dopri8: on the ReLU/GroupNorm field (only piecewise smooth) dopri8 needed 9× the
    evaluations of dopri5 for the same tolerance (1198 vs 134 at 1e-7, measured).
    """

    def __init__(self, model: nn.Module, tol: float, images: int = 64) -> None:
        self.tol = tol
        self.images = images
        self.blocks: dict[str, ODEBlock] = {}
        for name, block in ode_blocks(model).items():
            ref = copy.deepcopy(block).double()
            ref.configure(SolverSettings(method="dopri5", rtol=tol, atol=tol, t1=block.solver.t1,
                                         max_num_steps=1_000_000))
            self.blocks[name] = ref
        self._cache: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = {}

    @torch.no_grad()
    def error(self, name: str, batch: int, x: torch.Tensor, y: torch.Tensor) -> float:
        """Relative L2 error of block ``name``'s output ``y`` for input ``x``, the ``batch``-th test batch."""
        x, y = x[: self.images], y[: self.images]
        x_cpu = x.cpu()
        cached = self._cache.get((name, batch))
        if cached is None or cached[0].shape != x_cpu.shape or not torch.equal(cached[0], x_cpu):
            cached = self._cache[(name, batch)] = (x_cpu.clone(), self.blocks[name](x.double()).cpu())
        y_ref = cached[1].to(y.device)
        return ((y.double() - y_ref).norm() / y_ref.norm()).item()


class FlopCounter:
    """fvcore FLOPs (one multiply-add = one flop) of one image, traced once per model.

    Stem, head and residual blocks are traced once; each ODE block contributes its NFE times
    the FLOPs of one field evaluation — tracing through the adaptive solver would freeze one
    step count into the graph.
    """

    def __init__(self, model: nn.Module, image_shape: tuple[int, ...]) -> None:
        with warnings.catch_warnings():  # fvcore traces with torch.jit, which now warns that it is deprecated
            warnings.simplefilter("ignore", FutureWarning)
            from fvcore.nn import FlopCountAnalysis

            model = copy.deepcopy(model).cpu().float().eval()
            blocks = ode_blocks(model)
            inputs: dict[str, torch.Size] = {}
            for name in blocks:
                parent_name, _, child = name.rpartition(".")
                setattr(model.get_submodule(parent_name), child, _ShapeProbe(name, inputs))
            self.base = _count(FlopCountAnalysis(model, torch.zeros(1, *image_shape)))
            self.field = {name: _count(FlopCountAnalysis(block.func, (torch.zeros(()), torch.zeros(inputs[name]))))
                          for name, block in blocks.items()}

    def per_image(self, nfe_per_block: dict[str, float]) -> float:
        return float(self.base + sum(nfe_per_block[name] * flops for name, flops in self.field.items()))


class _ShapeProbe(nn.Module):
    """Stands in for an ODE block while tracing: identity, recording its input's shape."""

    def __init__(self, name: str, store: dict) -> None:
        super().__init__()
        self.name, self.store = name, store

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.store[self.name] = x.shape
        return x


def _count(analysis) -> int:
    return analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).total()


def act_mem_mb(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """MiB a training step at the current setting would save for backward (eval-mode norms)."""
    with torch.enable_grad(), SavedTensorMeter(exclude=model.parameters()) as meter:
        loss = F.cross_entropy(model(images), labels)  # held: the meter counts what the graph keeps at exit
    del loss
    return meter.mb
