"""ODE-block solves as CUDA graphs: one adaptive step replayed k times per host check, or a
whole fixed-grid solve replayed at once.

A step of an ODE-Net's field on a GPU is a few dozen small kernels; launching them from Python
costs about as much as running them. :mod:`odenet.models.device_rk` already keeps step control on
the device, so a step has no host synchronisation and can be captured: all stages, the error
estimate, accept/reject and the next step size become one ``torch.cuda.CUDAGraph``, replayed
``check_every`` times between host checks of "done?" and "failed?". Fixed-grid methods (euler,
midpoint, rk4, heun2, heun3) have no decisions at all, so a whole solve is one graph.

A graph has static shapes and addresses: one solver object per input shape, the input copied
into its static buffer, the state updated in place. Per-sample control is masked (finished
images are still evaluated, since a graph cannot shrink its batch); ``field_calls`` says so.
The field must be capturable (no host syncs, no data-dependent Python control flow);
:class:`odenet.models.layers.ConvODEField` is. The block's parameters are read at replay, so
the graph follows in-place training updates, but not replaced tensors or a moved block.

Nothing here runs without CUDA; :func:`fixed_grid_solve` (what the fixed-grid graph captures)
runs anywhere and is tested against ODEBlock on CPU.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torchdiffeq._impl.misc import _PerturbFunc
from torchdiffeq._impl.odeint import SOLVERS as TORCHDIFFEQ_SOLVERS
from torchdiffeq._impl.solvers import FixedGridODESolver

from odenet.models.device_rk import Field, RKState, failure_message, solution_at, start, step
from odenet.models.device_solve import DeviceSolution, block_problem
from odenet.models.per_sample import PerSampleSolution
from odenet.models.solvers import SolverError

# Fixed-grid methods whose step (torchdiffeq's ``_step_func``) is pure tensor arithmetic.
GRAPHABLE_FIXED_GRID = ("euler", "heun2", "heun3", "midpoint", "rk4")


def require_cuda(x: torch.Tensor) -> None:
    """Raise a clear error unless ``x`` lives on a CUDA device."""
    if not torch.cuda.is_available():
        raise RuntimeError("CUDA graphs need a CUDA device and torch.cuda.is_available() is False; on CPU use "
                           "odenet.models.device_solve.solve_on_device (same step control, no graph)")
    if x.device.type != "cuda":
        raise ValueError(f"CUDA graphs capture work on the GPU; move the block and its input there "
                         f"(input is on {x.device})")


def _static(state: RKState) -> RKState:
    """A state whose fields own distinct memory (``start`` lets some alias), to update in place."""
    return RKState(**{f.name: getattr(state, f.name).clone() for f in dataclasses.fields(state)})


def _warm_up(fn, times: int) -> None:
    """Run ``fn`` on a side stream before capture (cuDNN/cuBLAS workspaces and lazy initialisation
    must not happen inside the graph; torch.cuda.graphs' recommended pattern)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(times):
            fn()
    torch.cuda.current_stream().wait_stream(side)


class GraphedAdaptiveSolver:
    """An ODEBlock's adaptive solve for inputs of one shape, its step captured as a CUDA graph.

    Args:
        block: an :class:`odenet.models.ODEBlock` with an adaptive solver, on a CUDA device.
        example: an input of the shape to be solved (B, ...), on the block's device.
        check_every: steps (graph replays) between host checks.
        per_sample: one error norm per image (masked; see the module docstring).
    """

    def __init__(self, block: nn.Module, example: torch.Tensor, *, check_every: int = 8,
                 per_sample: bool = False, warmup: int = 3) -> None:
        require_cuda(example)
        if check_every < 1:
            raise ValueError(f"check_every must be >= 1, got {check_every}")
        self.block, self.check_every, self.per_sample = block, check_every, per_sample
        field, tab, control, t0, t_end = block_problem(block, example, per_sample=per_sample)
        self._tab, self._t_end = tab, t_end
        self._x = example.detach().clone()  # the graphs' static input
        with torch.no_grad():
            def solve_a_few():
                s = start(field, tab, control, self._x, t0, t_end)
                for _ in range(warmup):
                    s = step(field, tab, control, s, t_end)
            _warm_up(solve_a_few, 1)
            self._state = _static(start(field, tab, control, self._x, t0, t_end))
            self._start_graph, self._step_graph = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
            with torch.cuda.graph(self._start_graph):
                self._state.copy_(start(field, tab, control, self._x, t0, t_end))
            before = field.calls
            with torch.cuda.graph(self._step_graph, pool=self._start_graph.pool()):
                self._state.copy_(step(field, tab, control, self._state, t_end))
            self.calls_per_step = field.calls - before  # = tab.stages: what one replay evaluates

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> DeviceSolution | PerSampleSolution:
        """Solve from ``x`` (same shape as the example). Raises SolverError as torchdiffeq would."""
        if x.shape != self._x.shape:
            raise ValueError(f"this graph was captured for inputs of shape {tuple(self._x.shape)}, got "
                             f"{tuple(x.shape)}; capture another GraphedAdaptiveSolver for that shape")
        self._x.copy_(x)
        self._start_graph.replay()
        s, replays, checks = self._state, 0, 0
        while True:
            for _ in range(self.check_every):
                self._step_graph.replay()
            replays += self.check_every
            checks += 1
            done, failure = torch.stack([s.done.all().long(), s.failure.max()]).tolist()  # the host check
            if failure:
                raise SolverError(failure_message(failure), self.block.solver, "forward")
            if done:
                break
        y = solution_at(s, self._t_end)
        calls = 2 + self.calls_per_step * replays
        if not self.per_sample:
            return DeviceSolution(y=y, nfe_forward=2 + self._tab.stages * int(s.steps), field_calls=calls,
                                  steps_accepted=int(s.accepted), steps_rejected=int(s.rejected), host_checks=checks)
        return PerSampleSolution(y=y, nfe_forward=2 + self._tab.stages * s.steps.clone(),
                                 steps_accepted=s.accepted.clone(), steps_rejected=s.rejected.clone(),
                                 field_calls=calls, rows_evaluated=calls * len(x), rounds=replays)


def fixed_grid_solve(func, y0: torch.Tensor, grid: torch.Tensor, method: str) -> torch.Tensor:
    """y at ``grid[-1]`` by torchdiffeq's fixed-grid ``method`` over ``grid`` — what
    ``FixedGridODESolver.integrate`` computes, without its host-side comparisons.

    ``integrate`` interpolates the output time linearly within the step that reaches it; the
    output time is the grid's last point, where that interpolation returns the step's end exactly.

    Args:
        func: the field, ``func(t, y)``.
        grid: the time grid (1-D), e.g. an ODEBlock's ``solver.options()["grid_constructor"]``'s.
        method: one of GRAPHABLE_FIXED_GRID.
    """
    if method not in GRAPHABLE_FIXED_GRID:
        raise ValueError(f"{method!r} cannot be solved as one graph; valid: {', '.join(GRAPHABLE_FIXED_GRID)}")
    perturbed = _PerturbFunc(func)  # torchdiffeq's wrapper: t in the state's dtype, perturb flags
    solver: FixedGridODESolver = TORCHDIFFEQ_SOLVERS[method](func=perturbed, y0=y0, atol=0.0)
    y = y0
    for t0, t1 in zip(grid[:-1], grid[1:]):  # iterating a device tensor yields 0-dim tensors: no sync
        dy, _ = solver._step_func(perturbed, t0, t1 - t0, t1, y)
        y = y + dy
    return y


def block_grid(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The time grid an ODEBlock's fixed-grid solve of ``x`` steps over (odenet's grid rule)."""
    return block.solver.options()["grid_constructor"](None, x, block.t)


class GraphedFixedGridSolver:
    """An ODEBlock's fixed-grid solve for inputs of one shape, captured whole as one CUDA graph.

    Attributes:
        field_calls: evaluations per solve (steps × the method's stages).
    """

    def __init__(self, block: nn.Module, example: torch.Tensor, *, warmup: int = 2) -> None:
        require_cuda(example)
        method = block.solver.method
        if method not in GRAPHABLE_FIXED_GRID:
            raise ValueError(f"{method!r} cannot be solved as one graph; valid: {', '.join(GRAPHABLE_FIXED_GRID)}")
        field = Field(block.func, block.autocast)
        self._x = example.detach().clone()
        grid = block_grid(block, example)
        with torch.no_grad():
            _warm_up(lambda: fixed_grid_solve(field, self._x, grid, method), warmup)
            self._graph = torch.cuda.CUDAGraph()
            before = field.calls
            with torch.cuda.graph(self._graph):
                self._y = fixed_grid_solve(field, self._x, grid, method)
            self.field_calls = field.calls - before

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The state at t1 from ``x`` (a fresh tensor; the graph's output buffer is reused)."""
        if x.shape != self._x.shape:
            raise ValueError(f"this graph was captured for inputs of shape {tuple(self._x.shape)}, got "
                             f"{tuple(x.shape)}; capture another GraphedFixedGridSolver for that shape")
        self._x.copy_(x)
        self._graph.replay()
        return self._y.clone()
