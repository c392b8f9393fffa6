"""The train-time grid (``odenet-sweep``): a grid of training runs, one directory each, then one combined report.

"Grid" here; "sweep" is the test-time tolerance sweep of one checkpoint (``eval.py``, ``sweep.json``)
that the grid runs for each ODE run when asked. A grid YAML (``configs/sweep-*.yaml``) has up to
four keys::

    base:  {dataset: mnist-5k, epochs: 2, ...}       # TrainConfig options shared by every run
    grid:                                           # one mapping, or a list of them (a union)
      - {backbone: [resnet]}
      - {backbone: [odenet], tol: [1e-1, 1e-3, 1e-5], adjoint: [false, true], seed: [0]}
    eval:  {tols: [1e-1, 1e-2, 1e-3, 1e-4], limit_test_batches: 1}   # test-time sweep of each ODE run
    out_dir: runs/sweep

Each mapping of ``grid`` is a Cartesian product. Points are resolved like ``train.py``
arguments, with options that do not apply dropped first (a ResNet has no tolerance), so the
product collapses to the distinct runs. Re-running a sweep skips finished runs, resumes
interrupted ones from their ``last.pt``, and rebuilds the report.
"""

from __future__ import annotations

import dataclasses
import itertools
import shutil
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from odenet.config import ConfigError, build_parser, coerce, flag, opt, read_yaml
from odenet.evaluate.sweep import EvalConfig, run_eval
from odenet.models import backbone_entry
from odenet.models.solvers import inapplicable_fields
from odenet.naming import solver_name_parts
from odenet.registry import closest
from odenet.reports import combined_report, find_runs, write_report
from odenet.run.tensorboard import write_report as write_tensorboard_report
from odenet.train.config import TrainConfig, resolve_train_config
from odenet.train.trainer import train

RUN_KEYS = ("out_dir", "run_name", "resume", "progress", "config")


@dataclass
class SweepArgs:
    config: str | None = opt(None, "sweep YAML (base, grid, eval, out_dir)", cli_only=True, metavar="FILE")
    backbones: list[str] | None = opt(None, "grid: backbones (replaces the YAML grid)", metavar="B1,B2")
    tols: list[float] | None = opt(None, "grid: tolerances of the ODE backbones", metavar="T1,T2")
    solvers: list[str] | None = opt(None, "grid: solvers of the ODE backbones", metavar="S1,S2")
    adjoint: list[bool] | None = opt(None, "grid: backprop of the ODE backbones, e.g. false,true", metavar="B1,B2")
    seeds: list[int] | None = opt(None, "grid: seeds", metavar="S1,S2")
    set: list[str] | None = opt(None, "base options for every run, e.g. dataset=mnist-5k,epochs=2",
                                metavar="KEY=VALUE,...")
    eval_tols: list[float] | None = opt(None, "tolerances of the test-time sweep of each ODE run", metavar="T1,T2")
    eval_limit_test_batches: int | None = opt(None, "test batches per test-time setting", metavar="N")
    no_eval: bool = opt(False, "skip the test-time sweeps")
    out_dir: str | None = opt(None, "parent of the run directories and the report (default: runs/sweep)",
                              metavar="DIR")


@dataclass
class SweepPlan:
    base: dict[str, Any]
    grid: list[dict[str, list[Any]]]
    eval: dict[str, Any] = field(default_factory=dict)
    out_dir: str = "runs/sweep"
    title: str = "odenet: training-run comparison"


def load_plan(args: SweepArgs) -> SweepPlan:
    """The plan from the sweep YAML, with command-line grid flags and --set applied on top."""
    plan = SweepPlan(base={}, grid=[])
    if args.config:
        plan = _plan_from_yaml(Path(args.config))
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects KEY=VALUE items, got {item!r}")
        plan.base[_train_key(key, "--set")] = value
    cli_grid = {k: v for k, v in (("backbone", args.backbones), ("tol", args.tols), ("solver", args.solvers),
                                  ("adjoint", args.adjoint), ("seed", args.seeds)) if v}
    if cli_grid:
        plan.grid = [cli_grid]
    if not plan.grid:
        raise ConfigError("the sweep has no grid: give --backbones (and --tols, ...) or a --config with a 'grid'")
    if args.eval_tols:
        plan.eval["tols"] = args.eval_tols
    if args.eval_limit_test_batches:
        plan.eval["limit_test_batches"] = args.eval_limit_test_batches
    if args.no_eval:
        plan.eval = {}
    if args.out_dir:
        plan.out_dir = args.out_dir
    return plan


def _train_key(key: str, where: str) -> str:
    name = key.strip().replace("-", "_")
    names = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in RUN_KEYS]
    if name not in names:
        raise ConfigError(f"unknown option {key!r} in {where}{closest(name, names)}; use train.py's option names")
    return name


def _plan_from_yaml(path: Path) -> SweepPlan:
    data = read_yaml(path, "sweep file")
    if not isinstance(data, dict):
        raise ConfigError(f"sweep file {path} must be a mapping with keys base, grid, eval, out_dir")
    unknown = set(data) - {"base", "grid", "eval", "out_dir", "title"}
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(f"unknown key {key!r} in {path}{closest(key, ['base', 'grid', 'eval', 'out_dir', 'title'])}; "
                          f"a sweep file has base, grid, eval, out_dir and title")
    base = {_train_key(k, f"{path} base"): v for k, v in (data.get("base") or {}).items()}
    grids = data.get("grid") or []
    grids = [grids] if isinstance(grids, dict) else grids
    grid = []
    for g in grids:
        if not isinstance(g, dict):
            raise ConfigError(f"each grid entry in {path} must be a mapping of option: [values]")
        grid.append({_train_key(k, f"{path} grid"): v if isinstance(v, list) else [v] for k, v in g.items()})
    ev = data.get("eval") or {}
    bad = set(ev) - {"tols", "solvers", "steps", "limit_test_batches", "reference_tol", "reference_images",
                     "batch_size"}
    if bad:
        raise ConfigError(f"unknown key {sorted(bad)[0]!r} in {path} eval; use tols, solvers, steps, "
                          f"limit_test_batches, reference_tol, reference_images, batch_size")
    return SweepPlan(base, grid, ev, data.get("out_dir", "runs/sweep"), data.get("title", SweepPlan.title))


def expand(plan: SweepPlan) -> list[TrainConfig]:
    """Every distinct resolved run of the grid, in grid order."""
    hints = typing.get_type_hints(TrainConfig)
    runs: list[TrainConfig] = []
    seen: set[str] = set()
    for grid in plan.grid:
        keys = list(grid)
        for combo in itertools.product(*(grid[k] for k in keys)):
            values = {**plan.base, **dict(zip(keys, combo))}
            values = {k: coerce(flag(k), hints[k], v) for k, v in values.items()}
            cfg = _resolve_point(values)
            cfg = dataclasses.replace(cfg, out_dir=plan.out_dir, progress=False,
                                      run_name=run_name(cfg, [k for k in keys if k not in NAMED_KEYS]))
            key = yaml.safe_dump(comparable(cfg.to_dict()))
            if key not in seen:
                seen.add(key)
                runs.append(cfg)
    return runs


NAMED_KEYS = ("backbone", "solver", "tol", "rtol", "atol", "adjoint", "steps", "seed")


def _resolve_point(values: dict[str, Any]) -> TrainConfig:
    try:
        entry = backbone_entry(values.get("backbone", TrainConfig.backbone))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    drop = inapplicable_fields(entry.ode, values.get("solver", TrainConfig.solver),
                               bool(values.get("adjoint", TrainConfig.adjoint)), entry.solver)
    values = {k: v for k, v in values.items() if k not in drop}
    return resolve_train_config(TrainConfig(**values), set(values))


def run_name(cfg: TrainConfig, extra_keys: list[str]) -> str:
    parts = [cfg.backbone, *solver_name_parts(cfg.to_dict())]
    parts += [f"{k.replace('_', '')}{getattr(cfg, k)}" for k in extra_keys]
    parts.append(f"s{cfg.seed}")
    return "-".join(str(p) for p in parts).replace(" ", "")


def comparable(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in RUN_KEYS}


def prepare(cfg: TrainConfig) -> TrainConfig | None:
    """What to do with a run's directory: None = already complete; else the config to run (maybe resuming)."""
    run_dir = Path(cfg.out_dir) / cfg.run_name
    if not run_dir.exists():
        return cfg
    saved_path = run_dir / "config.yaml"
    if saved_path.is_file():
        saved, current = comparable(yaml.safe_load(saved_path.read_text())), comparable(cfg.to_dict())
        if saved != current:
            changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
            raise ConfigError(f"{run_dir} holds a run with other settings ({', '.join(changed)}); use another "
                              f"out_dir or delete that run")
    if (run_dir / "summary.json").is_file():
        return None
    if (run_dir / "last.pt").is_file():
        return dataclasses.replace(cfg, resume=str(run_dir / "last.pt"))
    # Died before its first checkpoint: nothing to resume. Keep what it wrote, start afresh.
    for n in itertools.count(1):
        aside = run_dir.with_name(f"{run_dir.name}.incomplete-{n}")
        if not aside.exists():
            shutil.move(str(run_dir), aside)
            print(f"moved an incomplete run without checkpoint aside to {aside}", flush=True)
            return cfg
    raise AssertionError("unreachable")


def evaluate_run(run_dir: Path, plan: SweepPlan) -> None:
    """Test-time sweep of an ODE run's final checkpoint (skipped when sweep.json is newer)."""
    last = run_dir / "last.pt"
    done = run_dir / "sweep.json"
    if done.is_file() and done.stat().st_mtime >= last.stat().st_mtime:
        return
    ev = plan.eval
    cfg = EvalConfig(checkpoint=str(last), tols=ev.get("tols"), solvers=ev.get("solvers"), steps=ev.get("steps"),
                     reference_tol=ev.get("reference_tol"), reference_images=ev.get("reference_images", 64),
                     limit_test_batches=ev.get("limit_test_batches"),
                     batch_size=ev.get("batch_size"), out=str(run_dir))
    run_eval(cfg)


def run_sweep(plan: SweepPlan) -> tuple[list[dict], Path]:
    """Train every run of the plan (skipping finished ones), sweep ODE runs, write the combined report."""
    configs = expand(plan)
    todo = [(cfg, prepare(cfg)) for cfg in configs]
    print(f"sweep: {len(configs)} runs in {plan.out_dir} ({sum(t is None for _, t in todo)} already complete)",
          flush=True)
    for cfg, to_run in todo:
        if to_run is not None:
            train(to_run)
    run_dirs = [Path(plan.out_dir) / cfg.run_name for cfg in configs]
    if plan.eval:
        for cfg, run_dir in zip(configs, run_dirs):
            if cfg.solver is not None:
                evaluate_run(run_dir, plan)
    runs = find_runs(run_dirs)
    report = combined_report(runs, plan.title)
    out = Path(plan.out_dir)
    write_report(report, out)
    write_tensorboard_report(report, str(out / "_report"), "report")
    return [r.summary for r in runs], out


def parse_sweep_args(argv: list[str] | None = None) -> SweepPlan:
    parser = build_parser(SweepArgs, prog="odenet-sweep",
                          description="Train a grid of runs (backbone x tol x solver x adjoint x seed) and write "
                                      "one combined report; re-running skips finished runs.")
    args = SweepArgs(**vars(parser.parse_args(sys.argv[1:] if argv is None else argv)))
    return load_plan(args)
