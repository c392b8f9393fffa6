"""Solves as CUDA graphs: one adaptive step replayed k times per host check, or a whole fixed-grid
solve replayed at once.

A step of an ODE-Net's field on a GPU is a few dozen small kernels; launching them from Python
costs about as much as running them. :mod:`odenet.solve.control` already keeps step control on the
device, so a step has no host synchronisation and can be captured: all stages, the error estimate,
accept/reject and the next step size become one ``torch.cuda.CUDAGraph``, replayed ``check_every``
times between host checks of "done?" and "failed?". Fixed-grid methods (euler, midpoint, rk4, heun2,
heun3) have no decisions at all, so a whole solve is one graph.

A graph has static shapes and addresses: one solver object per input shape, the input copied into
its static buffer, the state updated in place. Per-sample control is masked (finished images are
still evaluated, since a graph cannot shrink its batch); ``field_calls`` says so. The field must be
capturable (no host syncs, no data-dependent Python control flow); odenet's ``ConvODEField`` is. The
field's parameters are read at replay, so the graph follows in-place training updates, but not
replaced tensors or a moved field.

Nothing here runs without CUDA; :func:`fixed_grid_solve` (what the fixed-grid graph captures) runs
anywhere and is tested against the host-side solve on CPU.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from odenet.solve.control import FieldCalls, RKState, solution_at
from odenet.solve.drivers import Problem, Solution, host_check
from odenet.solve.host import odeint_options
from odenet.solve.settings import SolverSettings
from odenet.solve.torchdiffeq_api import BASE_SOLVERS, FixedGridODESolver, _PerturbFunc

# Fixed-grid methods whose step (torchdiffeq's ``_step_func``) is pure tensor arithmetic.
GRAPHABLE_FIXED_GRID = ("euler", "heun2", "heun3", "midpoint", "rk4")


def require_cuda(x: torch.Tensor) -> None:
    """Raise a clear error unless ``x`` lives on a CUDA device."""
    if not torch.cuda.is_available():
        raise RuntimeError("CUDA graphs need a CUDA device and torch.cuda.is_available() is False; on CPU use "
                           "odenet.solve.drivers.solve_on_device (same step control, no graph)")
    if x.device.type != "cuda":
        raise ValueError(f"CUDA graphs capture work on the GPU; move the field and its input there "
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


def _same_shape(x: torch.Tensor, captured: torch.Tensor, what: str) -> None:
    if x.shape != captured.shape:
        raise ValueError(f"this graph was captured for inputs of shape {tuple(captured.shape)}, got "
                         f"{tuple(x.shape)}; capture another {what} for that shape")


class GraphedAdaptiveSolver:
    """An adaptive solve for inputs of one shape, its step captured as a CUDA graph.

    Args:
        problem: the solve (:class:`Problem`, batch-shared or per sample), on a CUDA device.
        example: an input of the shape to be solved (B, ...), on the same device.
        check_every: steps (graph replays) between host checks.
    """

    def __init__(self, problem: Problem, example: torch.Tensor, *, check_every: int = 8, warmup: int = 3) -> None:
        require_cuda(example)
        if check_every < 1:
            raise ValueError(f"check_every must be >= 1, got {check_every}")
        self.problem, self.check_every = problem, check_every
        self.per_sample = problem.control.per_sample
        self._x = example.detach().clone()  # the graphs' static input
        with torch.no_grad():
            def solve_a_few():
                s = problem.start(self._x)
                for _ in range(warmup):
                    s = problem.step(s)
            _warm_up(solve_a_few, 1)
            self._state = _static(problem.start(self._x))
            self._start_graph, self._step_graph = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
            with torch.cuda.graph(self._start_graph):
                self._state.copy_(problem.start(self._x))
            before = problem.field.calls
            with torch.cuda.graph(self._step_graph, pool=self._start_graph.pool()):
                self._state.copy_(problem.step(self._state))
            self.calls_per_step = problem.field.calls - before  # = stages: what one replay evaluates

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> Solution:
        """Solve from ``x`` (same shape as the example). Raises SolverError as torchdiffeq would."""
        _same_shape(x, self._x, "GraphedAdaptiveSolver")
        self._x.copy_(x)
        self._start_graph.replay()
        s, replays, checks = self._state, 0, 0
        solves = len(x) if self.per_sample else 1
        while True:
            for _ in range(self.check_every):
                self._step_graph.replay()
            replays += self.check_every
            checks += 1
            if host_check(s, self.problem.settings) == solves:
                break
        y = solution_at(s, self.problem.t_end)
        calls = 2 + self.calls_per_step * replays
        counts = (s.steps.clone(), s.accepted.clone(), s.rejected.clone()) if self.per_sample else \
            (int(s.steps), int(s.accepted), int(s.rejected))
        return Solution(y=y, nfe_forward=self.problem.nfe(counts[0]), steps_accepted=counts[1],
                        steps_rejected=counts[2], field_calls=calls, rows_evaluated=calls * len(x),
                        host_checks=checks)


def fixed_grid_solve(func: Callable, y0: torch.Tensor, grid: torch.Tensor, method: str) -> torch.Tensor:
    """y at ``grid[-1]`` by torchdiffeq's fixed-grid ``method`` over ``grid`` — what
    ``FixedGridODESolver.integrate`` computes, without its host-side comparisons.

    ``integrate`` interpolates the output time linearly within the step that reaches it; the
    output time is the grid's last point, where that interpolation returns the step's end exactly.

    Args:
        func: the field, ``func(t, y)``.
        grid: the time grid (1-D), e.g. :func:`solve_grid`'s.
        method: one of GRAPHABLE_FIXED_GRID.
    """
    if method not in GRAPHABLE_FIXED_GRID:
        raise ValueError(f"{method!r} cannot be solved as one graph; valid: {', '.join(GRAPHABLE_FIXED_GRID)}")
    perturbed = _PerturbFunc(func)  # torchdiffeq's wrapper: t in the state's dtype, perturb flags
    solver: FixedGridODESolver = BASE_SOLVERS[method](func=perturbed, y0=y0, atol=0.0)
    y = y0
    for t0, t1 in zip(grid[:-1], grid[1:]):  # iterating a device tensor yields 0-dim tensors: no sync
        dy, _ = solver._step_func(perturbed, t0, t1 - t0, t1, y)
        y = y + dy
    return y


def solve_grid(settings: SolverSettings, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The time grid a fixed-grid solve of ``x`` over ``t = [t0, t1]`` steps over (odenet's grid rule)."""
    return odeint_options(settings)["grid_constructor"](None, x, t)


class GraphedFixedGridSolver:
    """A fixed-grid solve for inputs of one shape, captured whole as one CUDA graph.

    Args:
        func: the field; settings: a fixed-grid method of GRAPHABLE_FIXED_GRID; t: [t0, t1].

    Attributes:
        field_calls: evaluations per solve (steps × the method's stages).
    """

    def __init__(self, func: Callable, settings: SolverSettings, example: torch.Tensor, t: torch.Tensor, *,
                 autocast: torch.dtype | None = None, warmup: int = 2) -> None:
        require_cuda(example)
        method = settings.method
        if method not in GRAPHABLE_FIXED_GRID:
            raise ValueError(f"{method!r} cannot be solved as one graph; valid: {', '.join(GRAPHABLE_FIXED_GRID)}")
        field = FieldCalls(func, autocast)
        self._x = example.detach().clone()
        grid = solve_grid(settings, example, t)
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
        _same_shape(x, self._x, "GraphedFixedGridSolver")
        self._x.copy_(x)
        self._graph.replay()
        return self._y.clone()
