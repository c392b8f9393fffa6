"""What a training run depends on: :class:`TrainConfig`, and its resolution into what will run.

One flat namespace (as in nanoGPT) described once, as dataclass fields; :mod:`odenet.config`
generates the argparse parser and the YAML reader from it, so a flag and a YAML key can never
disagree. The solver's flags are :class:`odenet.solve.SolverOptions`, shared with every command that
solves ODEs; they and the dynamics levers (:data:`LEVER_RULES`) are resolved by the project's one
applicability rule (:func:`odenet.solve.inapplicable`).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from odenet.config import ConfigError, coerce, flag, opt, parse
from odenet.registry import catalogue, closest
from odenet.run.dirs import check_run_name
from odenet.solve import (ADAPTIVE_SOLVERS, SOLVER_RULES, Applies, SolverConstraint, SolverOptions, inapplicable,
                          refusal, resolve_solver_options)

if TYPE_CHECKING:
    from odenet.solve import SolverSettings

# This module imports no torch at the top, so that ``train.py --help`` and a refused flag answer in well
# under a second (importing torch takes seconds); the models and data are imported where they are used.


def _backbone_names() -> str:
    return ", ".join(catalogue("backbone"))


def _dataset_names() -> str:
    return ", ".join(catalogue("dataset"))


@dataclass
class _BeforeSolver:
    """The options ``--help`` lists before the solver's (see :class:`TrainConfig`)."""

    config: str | None = opt(None, "YAML file of options (keys = long flags without --); flags override it",
                             cli_only=True, metavar="FILE")
    backbone: str = opt("odenet", "model", choices_help=_backbone_names)
    width: int | None = opt(None, "channels of the stem, the residual or ODE block and the head (mnist-family "
                                  "backbones mlp excepted; default: the paper's 64)", metavar="C")
    dataset: str = opt("mnist", "dataset", choices_help=_dataset_names)
    data_dir: str | None = opt(None, "folder holding datasets (searched first, then $ODENET_DATA, then ./data)",
                               metavar="DIR")
    download: bool = opt(False, "fetch the dataset with torchvision if it is not found (needs a network)")
    epochs: int = opt(160, "training epochs")
    batch_size: int = opt(128, "training batch size")
    test_batch_size: int = opt(1000, "evaluation batch size")
    workers: int = opt(0, "DataLoader worker processes (data are in memory; 0 is usually fastest on CPU)")
    optimizer: str = opt("sgd", "sgd (the paper's, with --momentum) or adamw")
    lr: float = opt(0.1, "learning rate (the peak rate of cosine and onecycle)")
    momentum: float = opt(0.9, "SGD momentum")
    weight_decay: float = opt(0.0, "weight decay (AdamW: decoupled)")
    schedule: str = opt("step", "step (x --lr-gamma after each of --milestones, per epoch: the paper's), cosine or "
                                "onecycle (per step, after --warmup-epochs)")
    warmup_epochs: float = opt(0.0, "cosine and onecycle: linear warm-up from lr/25 over this many epochs")
    label_smoothing: float = opt(0.0, "label smoothing of the training cross-entropy (the logged loss stays the "
                                      "plain cross-entropy)")
    grad_clip: float | None = opt(None, "clip the gradients' global norm to this value before each step")
    milestones: list[int] = opt([60, 100, 140], "epochs after which the learning rate is multiplied by --lr-gamma",
                                metavar="E1,E2")
    lr_gamma: float = opt(0.1, "learning-rate decay factor at each milestone")


# A dataclass's fields are its bases' in reverse method-resolution order, then its own: TrainConfig's
# flags read _BeforeSolver's, then the solver's (SolverOptions), then the ones below.
@dataclass
class TrainConfig(SolverOptions, _BeforeSolver):
    """Everything a training run depends on. Saved resolved as ``config.yaml`` and in every checkpoint."""

    steps: int | None = opt(None, "fixed-step solvers (rk4, euler, ...) and rknet: steps per unit of time "
                                  "(default 6)")
    t1: float | None = opt(1.0, "integrate the ODE blocks over t in [0, T1]")
    kinetic_reg: float | None = opt(0.0, "RNODE kinetic-energy weight: lambda_K * integral of |f|^2 dt")
    jacobian_reg: float | None = opt(0.0, "RNODE Jacobian weight: lambda_J * integral of |df/dx|_F^2 dt "
                                          "(Hutchinson estimate, one probe per solve)")
    error_reg: float | None = opt(0.0, "ERNODE weight: lambda_E * sum over accepted steps of |local error| * |dt| "
                                       "(adaptive solvers, direct backpropagation)")
    steer: float | None = opt(0.0, "STEER: train with the end time drawn from U(t1 - B, t1 + B) per batch "
                                   "(0 < B < t1); evaluation uses t1", metavar="B")
    augment_dim: int | None = opt(0, "ANODE: zero channels appended to the ODE state (odenet backbone)",
                                  metavar="K")
    first_step: str | None = opt("auto", "adaptive solvers' first step: auto (torchdiffeq's choice, one trial "
                                         "evaluation) or reuse (the previous solve's last accepted step)")
    fast_rk: bool | None = opt(True, "adaptive Runge-Kutta solvers with odenet's cheaper stage arithmetic (same "
                                     "method and step control as torchdiffeq); --no-fast-rk runs torchdiffeq's own")
    seed: int = opt(0, "seed of weights, batch order and augmentation")
    device: str = opt("auto", "auto, cpu or cuda")
    threads: int | None = opt(None, "CPU threads of torch's operations (default: torch's, the cores); float rounding, "
                                    "so the last digits of every number, depends on it: the count that ran is "
                                    "recorded in config.yaml (odenet-grid sets it with --threads-per-job)", metavar="T")
    out_dir: str = opt("runs", "parent folder of run directories", metavar="DIR")
    run_name: str | None = opt(None, "run directory name, inside --out-dir (default: backbone-dataset-solver-"
                                     "setting-backprop-s<seed>-<time>, e.g. odenet-mnist-dopri5-tol1e-3-direct-s0-"
                                     "20260101-120000)", metavar="NAME")
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
    per_sample_every: int | None = opt(None, "every N epochs, solve the first 1,000 test images each with its own "
                                             "step control: per-image nfe_forward in per_sample_train.jsonl and the "
                                             "TensorBoard histogram sample/nfe_forward (ODE backbones, adaptive "
                                             "solvers; default off)", metavar="N")
    progress: bool = opt(True, "show a tqdm progress bar")
    data_on_device: bool = opt(False, "hold the whole dataset on the device and augment there (MNIST-size data on "
                                      "a GPU: no loader workers, no per-batch copies)")
    compile: bool = opt(False, "torch.compile the ODE fields (or the residual blocks of non-ODE backbones)")
    channels_last: bool = opt(False, "channels-last memory format for model and inputs")
    amp: str = opt("none", "none, or bf16: evaluate the ODE field under bf16 autocast; solver state and error "
                           "estimates stay float32")
    tf32: bool | None = opt(None, "allow TF32 in CUDA matmuls and convolutions (default: PyTorch's own defaults)")

    def solver_settings(self) -> SolverSettings | None:
        """SolverSettings of the ODE blocks, or None for a backbone without any."""
        if self.solver is None:
            return None
        return super().solver_settings(t1=self.t1, fast_rk=self.fast_rk is not False,
                                       first_step=self.first_step or "auto")

    def regularization(self):
        """The ODE blocks' :class:`~odenet.models.regularizers.Regularization` (None values count as off)."""
        from odenet.models.regularizers import Regularization  # torch: imported when a model is built

        return Regularization(kinetic=self.kinetic_reg or 0.0, jacobian=self.jacobian_reg or 0.0,
                              error=self.error_reg or 0.0, steer=self.steer or 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "config"}


WIDTH_BACKBONES = ("odenet", "resnet", "rknet", "stem-only")  # the paper's conv backbones (their ``width``)

# The dynamics levers beside the solver's own options, for the one applicability rule (odenet.solve.options).
LEVER_RULES: dict[str, Applies] = {
    "kinetic_reg": Applies(), "jacobian_reg": Applies(), "steer": Applies(), "augment_dim": Applies(),
    "error_reg": Applies(adaptive=True, backprop="direct", fast_rk=True,
                         why_backprop="--error-reg differentiates the forward solve's error estimates, which the "
                                      "adjoint does not backpropagate through; drop --adjoint or --error-reg",
                         why_fast_rk="--error-reg reads the error estimates of odenet's fast RK solvers; drop "
                                     "--no-fast-rk"),
}
TRAIN_RULES: dict[str, Applies] = {**SOLVER_RULES, **LEVER_RULES}
EMBEDDED_DATASETS = ("mnist-5k",)  # read from an installed package (odenet/data/datasets.py), not from a folder
INT_LIMIT = 2 ** 31 - 1  # counts and sizes beyond this overflow torch's and numpy's integers long before they run


def recipe_inapplicable(values: Mapping[str, Any]) -> dict[str, str]:
    """The training recipe's options that do not apply to a run (``values``, TrainConfig's defaults filling the
    gaps), each with a whole sentence saying why and what to do; the recipe's half of :func:`inapplicable_options`."""
    get = {**{f.name: f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
              for f in dataclasses.fields(TrainConfig)}, **values}.get
    found = {}
    if get("optimizer") != "sgd":
        found["momentum"] = f"--momentum is SGD's; {get('optimizer')} has none: drop it, or use --optimizer sgd"
    if get("schedule") != "step":
        for name in ("milestones", "lr_gamma"):
            found[name] = (f"{flag(name)} belongs to the step schedule; --schedule {get('schedule')} has no "
                           f"milestones: drop it, or use --schedule step")
    else:
        found["warmup_epochs"] = "--warmup-epochs applies to --schedule cosine or onecycle; the step schedule has none"
    every, epochs = get("per_sample_every"), get("epochs")
    if isinstance(every, int) and isinstance(epochs, int) and every > epochs:
        found["per_sample_every"] = (f"--per-sample-every {every} never comes round in a run of --epochs {epochs}; "
                                     f"give at most {epochs}, or drop it")
    if get("dataset") in EMBEDDED_DATASETS:
        for name in ("data_dir", "download"):
            found[name] = (f"{flag(name)} does not apply to {get('dataset')}, which is read from an installed "
                           f"package, not from a folder; drop it")
    if not get("resume"):
        found["force"] = "--force lets a resumed run take other settings; without --resume there is none: drop it"
    if get("backbone") not in WIDTH_BACKBONES:
        found["width"] = f"--width applies to {', '.join(WIDTH_BACKBONES)}; drop it for {get('backbone')}"
    if get("backbone") != "odenet":
        found["augment_dim"] = (f"--augment-dim widens the odenet backbone's ODE state; {get('backbone')} has no such "
                                f"option: drop it or use --backbone odenet")
    return found


def _backbone(values: Mapping[str, Any]) -> tuple[bool, SolverConstraint | None]:
    """(has ODE blocks, fixed solver) of the backbone ``values`` names."""
    from odenet.models import backbone_entry  # torch: only once the flags have parsed (see the top)

    try:
        entry = backbone_entry(values.get("backbone", TrainConfig.backbone))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return entry.ode, entry.solver


def inapplicable_options(values: Mapping[str, Any]) -> dict[str, str]:
    """The options of a training run (``values``, TrainConfig's defaults filling the gaps) that do not apply
    to it, each with why: what train.py refuses when given and the grid leaves out of a point."""
    ode, constraint = _backbone(values)
    defaults = {k: values.get(k, getattr(TrainConfig, k)) for k in ("backbone", "solver", "adjoint", "fast_rk")}
    return {**inapplicable({**values, **defaults}, ode=ode, constraint=constraint, rules=TRAIN_RULES),
            **recipe_inapplicable(values)}


def resolve_train_config(cfg: TrainConfig, explicit: set[str]) -> TrainConfig:
    """Validate ``cfg`` and blank out settings that do not apply, so the saved config says what ran.

    Raises:
        ConfigError: a bad value, or an explicitly given option that does not apply
            (e.g. ``--tol`` for a ResNet, ``--steps`` for dopri5).
    """
    from odenet.data import list_datasets  # torch: only once the flags have parsed (see the top)
    from odenet.models import list_backbones

    check_run_name(cfg.run_name)
    _check_choice("--backbone", cfg.backbone, list_backbones())
    _check_choice("--dataset", cfg.dataset, list_datasets())
    _check_choice("--device", cfg.device, ["auto", "cpu", "cuda"])
    _check_choice("--amp", cfg.amp, ["none", "bf16"])
    _check_choice("--on-solver-failure", cfg.on_solver_failure, ["stop", "skip-batch"])
    _check_choice("--optimizer", cfg.optimizer, ["sgd", "adamw"])
    _check_choice("--schedule", cfg.schedule, ["step", "cosine", "onecycle"])
    if cfg.first_step is not None:
        _check_choice("--first-step", cfg.first_step, ["auto", "reuse"])
    for name in ("width", "epochs", "batch_size", "test_batch_size", "limit_train_batches", "limit_test_batches",
                 "max_num_steps", "steps", "checkpoint_every", "per_sample_every", "threads"):
        value = getattr(cfg, name)
        if value is not None and value < 1:
            raise ConfigError(f"{flag(name)} must be at least 1, got {value}")
    for name in ("width", "epochs", "batch_size", "test_batch_size", "limit_train_batches", "limit_test_batches",
                 "max_num_steps", "steps", "checkpoint_every", "per_sample_every", "workers", "augment_dim", "threads"):
        value = getattr(cfg, name)
        if value is not None and value > INT_LIMIT:
            raise ConfigError(f"{flag(name)} {value:.3g} is beyond any run's reach; give at most {INT_LIMIT:,}")
    if cfg.workers < 0:
        raise ConfigError(f"--workers must be 0 or more, got {cfg.workers}")
    if not 0 <= cfg.seed < 2 ** 32:
        raise ConfigError(f"--seed must be between 0 and 2**32 - 1 (numpy's range), got {cfg.seed}")
    for name in ("lr", "tol", "rtol", "atol", "adjoint_tol", "t1", "lr_gamma"):
        value = getattr(cfg, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{flag(name)} must be a positive number, got {value}")
    for name in ("momentum", "weight_decay", "warmup_epochs", "kinetic_reg", "jacobian_reg", "error_reg", "steer"):
        value = getattr(cfg, name)
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"{flag(name)} must be 0 or a positive number, got {value}")
    _check_recipe(cfg)
    given = {k: why for k, why in recipe_inapplicable(dataclasses.asdict(cfg)).items()
             if k in explicit and getattr(cfg, k) not in (None, False, 0, [])}
    if given:
        raise ConfigError(refusal([next(iter(given))], next(iter(given.values()))))
    ode, constraint = _backbone(dataclasses.asdict(cfg))
    changes = resolve_solver_options(dataclasses.asdict(cfg), explicit, ode=ode, constraint=constraint,
                                     rules=TRAIN_RULES)
    cfg = dataclasses.replace(cfg, **changes)
    if cfg.per_sample_every and not (ode and cfg.solver in ADAPTIVE_SOLVERS):
        raise ConfigError(f"--per-sample-every needs an ODE backbone with an adaptive solver (each image's own step "
                          f"control); {cfg.backbone} with solver {cfg.solver} has none: drop it or use --backbone "
                          f"odenet --solver dopri5")
    return cfg


def _check_recipe(cfg: TrainConfig) -> None:
    """Optimizer and schedule values that need each other, or a range."""
    if not 0 <= cfg.label_smoothing < 1:
        raise ConfigError(f"--label-smoothing must be in [0, 1), got {cfg.label_smoothing}")
    if cfg.grad_clip is not None and not (math.isfinite(cfg.grad_clip) and cfg.grad_clip > 0):
        raise ConfigError(f"--grad-clip must be a positive number, got {cfg.grad_clip}")
    if cfg.warmup_epochs >= cfg.epochs:
        raise ConfigError(f"--warmup-epochs {cfg.warmup_epochs:g} leaves nothing of --epochs {cfg.epochs} to "
                          f"anneal; use fewer warm-up epochs")
    if cfg.augment_dim is not None and cfg.augment_dim < 0:
        raise ConfigError(f"--augment-dim must be 0 or more, got {cfg.augment_dim}")
    if cfg.steer and cfg.t1 is not None and cfg.steer >= cfg.t1:
        raise ConfigError(f"--steer {cfg.steer:g} must be below --t1 {cfg.t1:g} (the end time is drawn from "
                          f"[t1 - B, t1 + B] and must stay positive)")


def _check_choice(name: str, value: str, valid: list[str]) -> None:
    if value not in valid:
        raise ConfigError(f"unknown {name} {value!r}{closest(str(value), valid)}; valid: {', '.join(valid)}")


def parse_train_args(argv: list[str] | None = None) -> TrainConfig:
    """Parse and resolve ``train.py`` arguments (defaults < --config YAML < flags)."""
    cfg, explicit = parse(TrainConfig, argv, prog="train.py",
                          description="Train an ODE-Net or ResNet image classifier, measuring NFE, memory, time and "
                                      "accuracy.")
    return resolve_train_config(cfg, explicit)


def saved_train_config(state: dict, path: str) -> TrainConfig:
    """The config a checkpoint (``state``, read from ``path``) was trained with, checked by the rules train.py
    applies to its own input: what eval.py and :func:`odenet.load` rebuild the model from."""
    saved = state["config"]
    if not isinstance(saved, dict):
        raise ConfigError(f"checkpoint {path} holds no readable config (a {type(saved).__name__}); pass a last.pt "
                          f"or best.pt that train.py wrote")
    hints = typing.get_type_hints(TrainConfig)
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    values = {}
    for key, value in saved.items():
        if key not in names:
            raise ConfigError(f"checkpoint {path} holds a config with the unknown key {key!r}"
                              f"{closest(str(key), names)}; evaluate it with the odenet version that wrote it")
        values[key] = coerce(f"{key} in the config of checkpoint {path}", hints[key], value)
    cfg = TrainConfig(**values)
    try:
        resolve_train_config(cfg, set())
    except ConfigError as exc:
        raise ConfigError(f"checkpoint {path} holds a config train.py refuses ({exc}); pass a checkpoint train.py "
                          f"wrote, or restore its config") from None
    return cfg
