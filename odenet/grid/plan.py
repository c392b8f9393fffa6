"""What a grid is: the grid YAML and flags (:class:`GridArgs`), checked into a :class:`GridPlan`, expanded.

Every section of the YAML and every flag is type-checked here, with the coercion ``train.py``
uses (:func:`odenet.config.coerce` with the dataclass field types: ``TrainConfig`` for ``base``
and ``grid``, ``EvalConfig`` for ``eval``), and every point is resolved, before anything runs:
a bad value is one :class:`ConfigError` sentence and nothing is written.
"""

from __future__ import annotations

import dataclasses
import itertools
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from odenet.config import ConfigError, coerce, flag, opt, read_yaml
from odenet.evaluate.sweep import EvalConfig, parse_eval_args
from odenet.grid.launch import LaunchOptions, check_on_this_machine, point_threads
from odenet.naming import solver_name_parts
from odenet.registry import closest
from odenet.run.dirs import check_writable
from odenet.solve import refusal
from odenet.train.config import TrainConfig, inapplicable_options, resolve_train_config

# Options a grid sets for each run itself; "threads" (--threads-per-job) is how a run ran, not what it is, so a
# point trained with another thread count is still that point (its numbers may differ in the last digits).
RUN_KEYS = ("out_dir", "run_name", "resume", "progress", "config", "threads")
SECTIONS = ("base", "grid", "eval", "out_dir", "title")
# eval.py's options but those a grid sets per run.
EVAL_KEYS = tuple(f.name for f in dataclasses.fields(EvalConfig) if f.name not in ("checkpoint", "out", "config"))
NAMED_KEYS = ("backbone", "solver", "tol", "rtol", "atol", "adjoint", "steps", "seed", "kinetic_reg", "jacobian_reg",
              "error_reg", "steer", "augment_dim", "first_step")  # in the run name already (odenet.naming)


@dataclass
class GridArgs(LaunchOptions):
    """odenet-grid's flags: the grid, its test-time sweeps, and how its points are launched."""

    config: str | None = opt(None, "grid YAML (base, grid, eval, out_dir)", cli_only=True, metavar="FILE")
    backbones: list[str] | None = opt(None, "grid: backbones (replaces the YAML grid)", metavar="B1,B2")
    tols: list[float] | None = opt(None, "grid: tolerances of the ODE backbones", metavar="T1,T2")
    solvers: list[str] | None = opt(None, "grid: solvers of the ODE backbones", metavar="S1,S2")
    adjoint: list[bool] | None = opt(None, "grid: backprop of the ODE backbones, e.g. false,true", metavar="B1,B2")
    seeds: list[int] | None = opt(None, "grid: seeds", metavar="S1,S2")
    set: list[str] | None = opt(None, "base options for every run, e.g. dataset=mnist-5k,epochs=2",
                                metavar="KEY=VALUE,...")
    eval_tols: list[float] | None = opt(None, "tolerances of the test-time sweep of each ODE run", metavar="T1,T2")
    eval_limit_test_batches: int | None = opt(None, "test batches per test-time setting", metavar="N")
    eval: bool | None = opt(None, "test-time sweep of each ODE run (default: when the YAML has an eval section "
                                  "or --eval-* is given)")
    out_dir: str | None = opt(None, "parent of the run directories and the report (default: runs/grid)",
                              metavar="DIR")


@dataclass
class GridPlan:
    base: dict[str, Any]
    grid: list[dict[str, list[Any]]]
    eval: dict[str, Any] | None = None  # test-time sweep options; None: no sweeps
    out_dir: str = "runs/grid"
    title: str = "odenet: training-run comparison"
    launch: LaunchOptions = field(default_factory=LaunchOptions)


def load_plan(args: GridArgs) -> GridPlan:
    """The plan from the grid YAML, with command-line grid flags and --set applied on top; checked."""
    plan = _plan_from_yaml(Path(args.config)) if args.config else GridPlan(base={}, grid=[])
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects KEY=VALUE items, got {item!r}")
        name = _train_key(key, "--set")
        plan.base[name] = _train_value(name, value, f"--set {key.strip()}")
    cli_grid = {k: v for k, v in (("backbone", args.backbones), ("tol", args.tols), ("solver", args.solvers),
                                  ("adjoint", args.adjoint), ("seed", args.seeds)) if v}
    if cli_grid:
        plan.grid = [cli_grid]
    if not plan.grid:
        raise ConfigError("the grid is empty: give --backbones (and --tols, ...) or a --config with a 'grid'")
    options = {"tols": args.eval_tols, "limit_test_batches": args.eval_limit_test_batches}
    options = {k: v for k, v in options.items() if v is not None}
    if options or args.eval:
        plan.eval = {**(plan.eval or {}), **options}
    if args.eval is False:
        plan.eval = None
    if plan.eval is not None:
        check_eval(plan.eval, "--eval-* flags" if not args.config else f"{args.config} eval")
    if args.out_dir:
        plan.out_dir = args.out_dir
    plan.launch = LaunchOptions.of(args)
    check_on_this_machine(plan.launch, plan.base.get("device", TrainConfig.device))
    check_writable(Path(plan.out_dir), "--out-dir")  # before any point: not five failed points, then exit 3
    return plan


def _train_key(key: Any, where: str) -> str:
    name = str(key).strip().replace("-", "_")
    names = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in RUN_KEYS]
    if name == "threads":
        raise ConfigError(f"threads in {where} is the grid's to set: give --threads-per-job instead")
    if name not in names:
        raise ConfigError(f"unknown option {key!r} in {where}{closest(name, names)}; use train.py's option names")
    return name


def _train_value(name: str, value: Any, where: str) -> Any:
    return coerce(f"{name} (in {where})", typing.get_type_hints(TrainConfig)[name], value)


def _mapping(value: Any, what: str, example: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{what} must be a mapping, e.g. {example}; got {value!r}")
    return value


def _plan_from_yaml(path: Path) -> GridPlan:
    data = read_yaml(path, "grid file")
    data = _mapping(data, f"grid file {path}", "base: {...}, grid: [...], eval: {...}, out_dir: DIR")
    unknown = sorted(map(str, set(data) - set(SECTIONS)))
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} in {path}{closest(unknown[0], list(SECTIONS))}; "
                          f"a grid file has base, grid, eval, out_dir and title")
    base_in = _mapping(data.get("base"), f"base in {path}", "{dataset: mnist-5k, epochs: 2}")
    base = {}
    for key, value in base_in.items():
        name = _train_key(key, f"{path} base")
        base[name] = _train_value(name, value, f"{path} base")
    grids = data.get("grid") or []
    grids = [grids] if isinstance(grids, dict) else grids
    if not isinstance(grids, list):
        raise ConfigError(f"grid in {path} must be a mapping of option: [values] or a list of them; got {grids!r}")
    grid = [_grid_entry(g, i, path) for i, g in enumerate(grids)]
    ev = data.get("eval")
    if "eval" in data:
        ev = _mapping(ev, f"eval in {path}", "{tols: [1e-1, 1e-3], limit_test_batches: 1}")
    out_dir = coerce(f"out_dir (in {path})", str, data.get("out_dir", GridPlan.out_dir))
    title = coerce(f"title (in {path})", str, data.get("title", GridPlan.title))
    return GridPlan(base, grid, ev, out_dir, title)


def _grid_entry(entry: Any, index: int, path: Path) -> dict[str, list[Any]]:
    where = f"{path} grid entry {index + 1}"
    if not isinstance(entry, dict):
        raise ConfigError(f"each grid entry in {path} must be a mapping of option: [values]; entry {index + 1} is "
                          f"{entry!r}")
    out = {}
    for key, values in entry.items():
        name = _train_key(key, where)
        values = values if isinstance(values, list) else [values]
        if not values:
            raise ConfigError(f"{name} in {where} has no values, so the grid has no points; give at least one")
        out[name] = [_train_value(name, v, where) for v in values]
    return out


def check_eval(ev: dict[str, Any], where: str) -> None:
    """Coerce the test-time sweep options in place (EvalConfig's types) and check them as eval.py does."""
    hints = typing.get_type_hints(EvalConfig)
    for key in list(ev):
        if key not in EVAL_KEYS:
            raise ConfigError(f"unknown key {key!r} in {where}{closest(str(key), list(EVAL_KEYS))}; use "
                              f"{', '.join(EVAL_KEYS)}")
        ev[key] = coerce(f"{key} (in {where})", hints[key], ev[key])
    argv = ["--checkpoint", "unused.pt"]
    for key, value in ev.items():
        if isinstance(value, bool):  # a BooleanOptionalAction flag: --per-sample / --no-per-sample
            argv.append(flag(key) if value else "--no-" + flag(key)[2:])
        elif value is not None:
            argv += [flag(key), ",".join(map(str, value)) if isinstance(value, list) else str(value)]
    try:
        parse_eval_args(argv)  # eval.py's own range and name checks, so both refuse the same values
    except ConfigError as exc:
        raise ConfigError(f"in {where}: {exc}") from None


def expand(plan: GridPlan) -> list[TrainConfig]:
    """Every distinct resolved run of the grid, in grid order, each with the thread count it runs with.

    Raises:
        ConfigError: a bad point, or an option given (in base or an axis) that applies to none of the points
            it would reach (error_reg with adjoint: true): refused with train.py's sentence, not left out silently.
    """
    hints = typing.get_type_hints(TrainConfig)
    runs: list[TrainConfig] = []
    seen: set[str] = set()
    threads = point_threads(plan.launch)
    base_dropped: dict[str, str] = {}
    base_kept: set[str] = set()
    for grid in plan.grid:
        keys = list(grid)
        dropped: dict[str, str] = {}
        kept: set[str] = set()
        for combo in itertools.product(*(grid[k] for k in keys)):
            values = {**plan.base, **dict(zip(keys, combo))}
            values = {k: coerce(flag(k), hints[k], v) for k, v in values.items()}
            cfg = _resolve_point(values, dropped, kept)
            cfg = dataclasses.replace(cfg, out_dir=plan.out_dir, progress=False, threads=threads,
                                      run_name=run_name(cfg, [k for k in keys if k not in NAMED_KEYS]))
            key = yaml.safe_dump(comparable(cfg.to_dict()))
            if key not in seen:
                seen.add(key)
                runs.append(cfg)
        _refuse_dropped({k: why for k, why in dropped.items() if k in grid and k not in kept})
        base_dropped.update({k: why for k, why in dropped.items() if k not in grid})
        base_kept |= {k for k in kept if k not in grid}
    _refuse_dropped({k: why for k, why in base_dropped.items() if k not in base_kept})
    if not runs:
        raise ConfigError("the grid has no points; give every grid option at least one value")
    return runs


def _resolve_point(values: dict[str, Any], dropped: dict[str, str], kept: set[str]) -> TrainConfig:
    """The point's config, its inapplicable options left out; each given option noted as ``kept`` by this point or
    ``dropped`` (with why) if its value would have done something."""
    drop = inapplicable_options(values)
    for key, value in values.items():
        if key not in drop:
            kept.add(key)
        elif value not in (None, False, 0, []):
            dropped.setdefault(key, drop[key])
    values = {k: v for k, v in values.items() if k not in drop}
    return resolve_train_config(TrainConfig(**values), set(values))


def _refuse_dropped(dropped: dict[str, str]) -> None:
    if dropped:
        name, why = next(iter(dropped.items()))
        raise ConfigError(f"{refusal([name], why)} (in every point of the grid it was given for)")


def run_name(cfg: TrainConfig, extra_keys: list[str]) -> str:
    parts = [cfg.backbone, *solver_name_parts(cfg.to_dict())]
    parts += [f"{k.replace('_', '')}{getattr(cfg, k)}" for k in extra_keys]
    parts.append(f"s{cfg.seed}")
    return "-".join(str(p) for p in parts).replace(" ", "")


def comparable(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in RUN_KEYS}
