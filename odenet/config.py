"""Typed configuration: dataclass defaults < YAML file < command-line flags.

One flat namespace (as in nanoGPT) described once, as dataclass fields; the argparse
parser and the YAML reader are generated from it, so a flag and a YAML key can never
disagree. Every input error — unknown flag or key, wrong type, bad value — becomes a
:class:`ConfigError` with one sentence naming the input and the fix; entry points print
it and exit with status 2 before anything is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from odenet.registry import closest


class ConfigError(ValueError):
    """A user input error; the message is the whole story."""


def opt(default: Any, help: str, **extra) -> Any:  # noqa: A002 - mirrors argparse
    """A dataclass field carrying its command-line help."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **extra})
    return field(default=default, metadata={"help": help, **extra})


# --------------------------------------------------------------------------- type coercion

def _base_type(tp: Any) -> tuple[Any, bool]:
    """(underlying type, whether None is allowed) of an annotation such as ``float | None``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def coerce(name: str, tp: Any, value: Any) -> Any:
    """Convert a YAML or command-line value to the field's type, or raise ConfigError."""
    base, nullable = _base_type(tp)
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and nullable):
        if nullable:
            return None
        raise ConfigError(f"{name} cannot be empty; give a {_type_name(base)}")
    try:
        if base is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
                return value.lower() in ("true", "yes")
        elif base is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if isinstance(value, str):
                return int(value)
            if isinstance(value, float) and value.is_integer():
                return int(value)
        elif base is float:
            # PyYAML reads 1e-3 (no dot) as a string, so numeric strings are accepted.
            if isinstance(value, (int, float, str)) and not isinstance(value, bool):
                return float(value)
        elif base is str:
            if isinstance(value, str):
                return value
        elif typing.get_origin(base) is list:
            items = value.split(",") if isinstance(value, str) else value
            if isinstance(items, (list, tuple)):
                return [coerce(name, typing.get_args(base)[0], v) for v in items]
    except ValueError:
        pass
    raise ConfigError(f"{name} expects {_type_name(base)}, got {value!r}")


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}s (e.g. 60,100,140)"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


# --------------------------------------------------------------------------- parser

class _Parser(argparse.ArgumentParser):
    """argparse that raises ConfigError (one sentence, with a did-you-mean) instead of exiting."""

    def error(self, message: str) -> typing.NoReturn:
        if message.startswith("unrecognized arguments:"):
            unknown = message.split(":", 1)[1].split()
            first = next((u for u in unknown if u.startswith("-")), unknown[0])
            known = [s for a in self._actions for s in a.option_strings if s.startswith("--")]
            hint = closest(first.split("=")[0], known) if first.startswith("--") else ""
            raise ConfigError(f"unknown flag {first}{hint}; run with --help for the list")
        if message.startswith("argument ") and ": " in message:  # "argument --tol: expects a number, ..."
            name, rest = message.removeprefix("argument ").split(": ", 1)
            message = f"{name.split('/')[0]} {rest}"
        raise ConfigError(message)


def build_parser(cls: type, prog: str, description: str) -> argparse.ArgumentParser:
    """An argparse parser with one flag per dataclass field; absent flags stay absent."""
    parser = _Parser(prog=prog, description=description, argument_default=argparse.SUPPRESS, allow_abbrev=False)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, _ = _base_type(hints[f.name])
        kw: dict[str, Any] = {"help": f.metadata.get("help", "")}
        if "choices_help" in f.metadata:
            kw["help"] += f" ({f.metadata['choices_help']()})"
        if tp is bool:
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["metavar"] = f.metadata.get("metavar", f.name.upper())
            kw["type"] = _cli_converter(f.name, hints[f.name])
        parser.add_argument(flag(f.name), dest=f.name, **kw)
    return parser


def _cli_converter(name: str, tp: Any):
    def convert(text: str) -> Any:
        try:
            return coerce(flag(name), tp, text)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix(flag(name) + " ")) from None

    convert.__name__ = _type_name(_base_type(tp)[0])
    return convert


def read_yaml(path: str | Path, what: str = "config file") -> Any:
    """The YAML document at ``path``; every way of failing is one ConfigError sentence."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist; check the path given to --config") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path} is not text (not UTF-8); pass a YAML file to --config") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read ({exc.strerror or exc}); pass a readable YAML file "
                          f"to --config") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path} is not valid YAML ({str(exc).splitlines()[0]}); fix its syntax") \
            from None


def load_yaml(path: str | Path, cls: type) -> dict[str, Any]:
    """Read a YAML config and check its keys and types against ``cls``."""
    path = Path(path)
    data = read_yaml(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must be a mapping of option: value, not a {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if not f.metadata.get("cli_only")]
    values = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in names:
            raise ConfigError(f"unknown key {key!r} in {path}{closest(name, names)}; valid keys are the long "
                              f"flags without '--' (see --help)")
        values[name] = coerce(f"{name} (in {path})", hints[name], value)
    return values


def parse(cls: type, argv: list[str] | None, prog: str, description: str) -> tuple[Any, set[str]]:
    """defaults < YAML (``--config``) < flags → (config, names set explicitly by YAML or flags)."""
    parser = build_parser(cls, prog, description)
    args = vars(parser.parse_args(sys.argv[1:] if argv is None else argv))
    values = load_yaml(args["config"], cls) if args.get("config") else {}
    values.update(args)
    return cls(**values), set(values)


# --------------------------------------------------------------------------- train config

def _backbone_names() -> str:
    from odenet.models import list_backbones
    return ", ".join(list_backbones())


def _dataset_names() -> str:
    from odenet.data import list_datasets
    return ", ".join(list_datasets())


def _solver_names() -> str:
    from odenet.models.ode import SOLVERS
    return ", ".join(SOLVERS)


# Solver fields, and which backbones/solvers they apply to (see TrainConfig.resolve).
ODE_FIELDS = ("solver", "tol", "rtol", "atol", "adjoint", "adjoint_tol", "seminorm", "max_num_steps", "steps", "t1",
              "fast_rk")
TOLERANCE_FIELDS = ("tol", "rtol", "atol", "adjoint_tol", "seminorm", "max_num_steps", "fast_rk")
ADJOINT_ONLY_FIELDS = ("adjoint_tol", "seminorm")


def inapplicable_fields(backbone: str, ode: bool, solver: str | None, adjoint: bool) -> tuple[str, ...]:
    """Solver fields that do not apply to this kind of run; :func:`resolve_train_config` refuses
    them when given and a sweep leaves them out of grid points where they do not apply."""
    from odenet.models.ode import is_adaptive

    if not ode:
        return ODE_FIELDS
    if backbone == "rknet":  # fixed-step RK4: only the steps and the time span are its own
        return tuple(f for f in ODE_FIELDS if f not in ("steps", "t1"))
    if not is_adaptive(solver or "dopri5"):
        return TOLERANCE_FIELDS
    return ("steps",) + (() if adjoint else ADJOINT_ONLY_FIELDS)


@dataclass
class TrainConfig:
    """Everything a training run depends on. Saved resolved as ``config.yaml`` and in every checkpoint."""

    config: str | None = opt(None, "YAML file of options (keys = long flags without --); flags override it",
                             cli_only=True, metavar="FILE")
    backbone: str = opt("odenet", "model", choices_help=_backbone_names)
    dataset: str = opt("mnist", "dataset", choices_help=_dataset_names)
    data_dir: str | None = opt(None, "folder holding datasets (searched first, then $ODENET_DATA, then ./data)",
                               metavar="DIR")
    download: bool = opt(False, "fetch the dataset with torchvision if it is not found (needs a network)")
    epochs: int = opt(160, "training epochs")
    batch_size: int = opt(128, "training batch size")
    test_batch_size: int = opt(1000, "evaluation batch size")
    workers: int = opt(0, "DataLoader worker processes (data are in memory; 0 is usually fastest on CPU)")
    lr: float = opt(0.1, "SGD learning rate")
    momentum: float = opt(0.9, "SGD momentum")
    weight_decay: float = opt(0.0, "SGD weight decay")
    milestones: list[int] = opt([60, 100, 140], "epochs after which the learning rate is multiplied by --lr-gamma",
                                metavar="E1,E2")
    lr_gamma: float = opt(0.1, "learning-rate decay factor at each milestone")
    solver: str | None = opt("dopri5", "torchdiffeq method of the ODE blocks", choices_help=_solver_names)
    tol: float | None = opt(1e-3, "adaptive solvers: rtol = atol = TOL")
    rtol: float | None = opt(None, "relative tolerance (overrides --tol)")
    atol: float | None = opt(None, "absolute tolerance (overrides --tol)")
    adjoint: bool | None = opt(False, "backpropagate with the adjoint ODE (O(1) memory) instead of directly")
    adjoint_tol: float | None = opt(None, "tolerance of the adjoint solve (default: the forward one)")
    seminorm: bool | None = opt(False, "seminorm error control in the adjoint solve (fewer backward NFE)")
    max_num_steps: int | None = opt(1000, "adaptive solvers fail after this many steps per solve (runaway guard)")
    steps: int | None = opt(None, "fixed-step solvers (rk4, euler, ...) and rknet: number of steps (default 6)")
    t1: float | None = opt(1.0, "integrate the ODE blocks over t in [0, T1]")
    fast_rk: bool | None = opt(True, "adaptive Runge-Kutta solvers with odenet's cheaper stage arithmetic (same "
                                     "method and step control as torchdiffeq); --no-fast-rk runs torchdiffeq's own")
    seed: int = opt(0, "seed of weights, batch order and augmentation")
    device: str = opt("auto", "auto, cpu or cuda")
    out_dir: str = opt("runs", "parent folder of run directories", metavar="DIR")
    run_name: str | None = opt(None, "run directory name (default: backbone-dataset-solver-tol-seed-time)",
                               metavar="NAME")
    resume: str | None = opt(None, "continue from this checkpoint, or 'auto': the last checkpoint of --run-name "
                                   "if there is one", metavar="PATH|auto")
    force: bool = opt(False, "resume even if the settings differ from the run's")
    checkpoint_every: int | None = opt(None, "also write last.pt every N training steps (default: each epoch)",
                                       metavar="N")
    on_solver_failure: str = opt("stop", "stop, or skip-batch: skip a batch whose ODE solve fails or whose loss is "
                                         "not finite (counted and logged)")
    limit_train_batches: int | None = opt(None, "stop each epoch after N training batches (smoke runs)",
                                          metavar="N")
    limit_test_batches: int | None = opt(None, "evaluate on the first N test batches only", metavar="N")
    progress: bool = opt(True, "show a tqdm progress bar")
    data_on_device: bool = opt(False, "hold the whole dataset on the device and augment there (MNIST-size data on "
                                      "a GPU: no loader workers, no per-batch copies)")
    compile: bool = opt(False, "torch.compile the ODE fields (or the residual blocks of non-ODE backbones)")
    channels_last: bool = opt(False, "channels-last memory format for model and inputs")
    amp: str = opt("none", "none, or bf16: evaluate the ODE field under bf16 autocast; solver state and error "
                           "estimates stay float32")
    tf32: bool | None = opt(None, "allow TF32 in CUDA matmuls and convolutions (default: PyTorch's own defaults)")

    def solver_settings(self):
        """SolverSettings of the ODE blocks, or None for a backbone without any."""
        from odenet.models.ode import SolverSettings
        if self.solver is None:
            return None
        return SolverSettings(method=self.solver, rtol=self.rtol, atol=self.atol, adjoint=bool(self.adjoint),
                              adjoint_rtol=self.adjoint_tol, adjoint_atol=self.adjoint_tol,
                              seminorm=bool(self.seminorm), max_num_steps=self.max_num_steps, steps=self.steps,
                              t1=self.t1, fast_rk=self.fast_rk is not False)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "config"}


DEFAULT_STEPS = 6


def resolve_train_config(cfg: TrainConfig, explicit: set[str]) -> TrainConfig:
    """Validate ``cfg`` and blank out settings that do not apply, so the saved config says what ran.

    Raises:
        ConfigError: a bad value, or an explicitly given option that does not apply
            (e.g. ``--tol`` for a ResNet, ``--steps`` for dopri5).
    """
    from odenet.data import list_datasets
    from odenet.models import backbone_entry, list_backbones
    from odenet.models.ode import SOLVERS, is_adaptive

    _check_choice("--backbone", cfg.backbone, list_backbones())
    _check_choice("--dataset", cfg.dataset, list_datasets())
    _check_choice("--device", cfg.device, ["auto", "cpu", "cuda"])
    _check_choice("--amp", cfg.amp, ["none", "bf16"])
    _check_choice("--on-solver-failure", cfg.on_solver_failure, ["stop", "skip-batch"])
    for name in ("epochs", "batch_size", "test_batch_size", "limit_train_batches", "limit_test_batches",
                 "max_num_steps", "steps", "checkpoint_every"):
        value = getattr(cfg, name)
        if value is not None and value < 1:
            raise ConfigError(f"{flag(name)} must be at least 1, got {value}")
    if cfg.workers < 0:
        raise ConfigError(f"--workers must be 0 or more, got {cfg.workers}")
    if not 0 <= cfg.seed < 2 ** 32:
        raise ConfigError(f"--seed must be between 0 and 2**32 - 1 (numpy's range), got {cfg.seed}")
    for name in ("lr", "tol", "rtol", "atol", "adjoint_tol", "t1", "lr_gamma"):
        value = getattr(cfg, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{flag(name)} must be a positive number, got {value}")
    for name in ("momentum", "weight_decay"):
        if not (math.isfinite(getattr(cfg, name)) and getattr(cfg, name) >= 0):
            raise ConfigError(f"{flag(name)} must be 0 or a positive number, got {getattr(cfg, name)}")

    changes: dict[str, Any] = {}
    solver = cfg.solver
    if not backbone_entry(cfg.backbone).ode:
        _reject_explicit(explicit, ODE_FIELDS, f"{cfg.backbone} has no ODE block")
        return dataclasses.replace(cfg, **{name: None for name in ODE_FIELDS})
    if cfg.backbone == "rknet":
        if cfg.solver != "rk4" and "solver" in explicit:
            raise ConfigError("rknet is fixed-step RK4; drop --solver, or use --backbone odenet --solver "
                              f"{cfg.solver}")
        if cfg.adjoint:
            raise ConfigError("rknet backpropagates directly through RK4; drop --adjoint, or use --backbone odenet "
                              "--solver rk4 --adjoint")
        changes["solver"] = solver = "rk4"
    _check_choice("--solver", solver, list(SOLVERS))
    if is_adaptive(solver):
        _reject_explicit(explicit, ("steps",), f"{solver} chooses its own steps; set --tol instead")
        changes.update(steps=None, rtol=cfg.rtol or cfg.tol, atol=cfg.atol or cfg.tol)
        if not cfg.adjoint:
            _reject_explicit(explicit, ("adjoint_tol",), "there is no adjoint solve without --adjoint")
            changes.update(adjoint_tol=None)
        if cfg.seminorm and not cfg.adjoint:
            raise ConfigError("--seminorm controls the adjoint solve's error; add --adjoint or drop --seminorm")
    else:
        _reject_explicit(explicit, TOLERANCE_FIELDS, f"{solver} is a fixed-step solver; set --steps instead")
        changes.update({name: None for name in TOLERANCE_FIELDS}, steps=cfg.steps or DEFAULT_STEPS)
    return dataclasses.replace(cfg, **changes)


def _check_choice(name: str, value: str, valid: list[str]) -> None:
    if value not in valid:
        raise ConfigError(f"unknown {name} {value!r}{closest(str(value), valid)}; valid: {', '.join(valid)}")


def _reject_explicit(explicit: set[str], names: tuple[str, ...], why: str) -> None:
    given = [flag(n) for n in names if n in explicit]
    if given:
        raise ConfigError(f"{', '.join(given)} does not apply: {why}")


def parse_train_args(argv: list[str] | None = None) -> TrainConfig:
    """Parse and resolve ``train.py`` arguments (defaults < --config YAML < flags)."""
    cfg, explicit = parse(TrainConfig, argv, prog="train.py",
                          description="Train an ODE-Net or ResNet image classifier, measuring NFE, memory, time and "
                                      "accuracy.")
    return resolve_train_config(cfg, explicit)
