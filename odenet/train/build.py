"""What a run is built from: the device, the seeds, the model and its opt-in speed settings.

Shared by training, the test-time sweep and the benchmarks, so all three build a model the same way.
"""

from __future__ import annotations

import contextlib
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from odenet.config import ConfigError
from odenet.data import DataBundle, build_loaders
from odenet.models import backbone_entry, create_backbone
from odenet.models.ode import ode_blocks, set_regularization
from odenet.train import distributed
from odenet.train.config import TrainConfig


def setup_process(cfg: TrainConfig) -> tuple[distributed.Context, torch.device]:
    """Join the torchrun process group (if any) and pick this process's device."""
    dist = distributed.init("cuda" if pick_device(cfg.device).type == "cuda" else "cpu")
    if dist.active and cfg.on_solver_failure != "stop":
        raise ConfigError("--on-solver-failure skip-batch cannot keep DDP ranks in step (one rank would skip the "
                          "gradient all-reduce); use stop under torchrun")
    device = pick_device(cfg.device, dist.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return dist, device


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA device is visible; use --device cpu or auto")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_data(cfg: TrainConfig, device: torch.device, rank: int = 0, world_size: int = 1) -> DataBundle:
    """The run's loaders (this process's shard under torchrun); refuses a batch larger than the data."""
    data = build_loaders(cfg.dataset, batch_size=cfg.batch_size, test_batch_size=cfg.test_batch_size,
                         workers=cfg.workers, seed=cfg.seed, data_dir=Path(cfg.data_dir) if cfg.data_dir else None,
                         download=cfg.download, pin_memory=device.type == "cuda",
                         on_device=device if cfg.data_on_device else None, rank=rank, world_size=world_size)
    if len(data.train) == 0:
        per = " this process's share of the" if world_size > 1 else " the"
        raise ConfigError(f"--batch-size {cfg.batch_size} is larger than{per} {data.train_size} training images, "
                          f"so no full batch is left to train on; use a smaller --batch-size")
    return data


def build_model(cfg: TrainConfig, data: DataBundle) -> nn.Module:
    kwargs: dict[str, Any] = {"image_size": data.spec.image_size}
    ode = backbone_entry(cfg.backbone).ode
    if ode:
        kwargs["solver"] = cfg.solver_settings()
    if cfg.augment_dim:
        kwargs["augment_dim"] = cfg.augment_dim
    if cfg.width is not None:
        kwargs["width"] = cfg.width
    try:
        model = create_backbone(cfg.backbone, in_channels=data.spec.channels, num_classes=data.spec.num_classes,
                                **kwargs)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if ode:
        set_regularization(model, cfg.regularization())
    return model


def configure_backends(cfg: TrainConfig) -> None:
    if cfg.tf32 is not None:
        torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
        torch.backends.cudnn.allow_tf32 = cfg.tf32


def speed_up(model: nn.Module, *, channels_last: bool = False, amp: str = "none", compile: bool = False) -> None:
    """Apply the opt-in speed settings: channels-last, bf16 fields, torch.compile.

    Compilation is in place (``Module.compile``) and applies to the ODE fields — the solver's
    Python control flow stays eager — or, for backbones without ODE blocks, to the feature
    blocks, so both sides of a comparison get the same treatment. Run the compiled model inside
    :func:`compile_settings`.
    """
    if channels_last:
        model.to(memory_format=torch.channels_last)
    blocks = ode_blocks(model)
    if amp == "bf16":
        for block in blocks.values():
            block.set_autocast(torch.bfloat16)
    if compile:
        for module in [b.func for b in blocks.values()] or list(model.features.children()) or [model.features]:
            module.compile()


def compile_settings(model: nn.Module, compile: bool) -> contextlib.AbstractContextManager:
    """The compiler settings a run of ``model`` needs while it runs (restored afterwards).

    The adjoint differentiates the field with ``retain_graph=True``, which compiled backward
    graphs with donated buffers refuse (seen with torch 2.11 on an H200), so donated buffers
    are switched off for compiled adjoint runs — for the run's duration, not the process's.
    """
    if not (compile and any(b.solver.adjoint for b in ode_blocks(model).values())):
        return contextlib.nullcontext()
    import torch._functorch.config as functorch_config  # private: only where it is needed

    return functorch_config.patch(donated_buffer=False)
