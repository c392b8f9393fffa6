"""How a run is named: its label in tables and legends, and its part of run-directory names.

One place for the solver's part of both, from a resolved config as a plain dict (torch-free,
so reports, training and the dynamics experiments all use it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def solver_setting(config: Mapping[str, Any], sep: str = " ") -> str:
    """"tol 0.001" / "6 steps" (``sep=""``: "tol0.001" / "steps6"), or "" without a solver."""
    if config.get("solver") is None:
        return ""
    if config.get("rtol") is not None:
        return f"tol{sep}{config['rtol']:g}"
    return f"{config['steps']}{sep}steps" if sep else f"steps{config['steps']}"


def backprop(config: Mapping[str, Any]) -> str:
    return "adjoint" if config.get("adjoint") else "direct"


def solver_label(config: Mapping[str, Any]) -> str:
    """"dopri5 tol 0.001 (adjoint)", or "" without a solver."""
    if config.get("solver") is None:
        return ""
    return f"{config['solver']} {solver_setting(config)} ({backprop(config)})"


# The study's levers as a reader names them: (config key, label, run-name part).
METHODS = (("kinetic_reg", "kinetic", "kin"), ("jacobian_reg", "jacobian", "jac"), ("error_reg", "error", "err"),
           ("steer", "steer", "steer"), ("augment_dim", "anode", "aug"))


def method_parts(config: Mapping[str, Any], sep: str = " ") -> list[str]:
    """The dynamics levers a run used: ["kinetic 0.01", "jacobian 0.01"], ["reuse first step"]; [] for none."""
    parts = [f"{label}{sep}{config[key]:g}" for key, label, short in METHODS if config.get(key)]
    if sep == "":
        parts = [f"{short}{config[key]:g}" for key, _, short in METHODS if config.get(key)]
    if config.get("first_step") == "reuse":
        parts.append("reuse first step" if sep else "reuse")
    return parts


def method_label(config: Mapping[str, Any]) -> str:
    """"plain" or the levers: "kinetic 0.01 + jacobian 0.01"."""
    return " + ".join(method_parts(config)) or "plain"


def run_label(config: Mapping[str, Any]) -> str:
    """A run as a reader names it: "resnet", "odenet dopri5 tol 0.001 adjoint", "rknet rk4 6 steps direct",
    "odenet dopri5 tol 0.001 direct + kinetic 0.01"."""
    if config.get("solver") is None:
        return config["backbone"]
    label = f"{config['backbone']} {config['solver']} {solver_setting(config)} {backprop(config)}"
    return " + ".join([label, *method_parts(config)])


def solver_name_parts(config: Mapping[str, Any]) -> list[str]:
    """The solver's part of a run-directory name: ["dopri5-tol0.001", "adjoint"], or [] without a solver."""
    if config.get("solver") is None:
        return []
    return [f"{config['solver']}-{solver_setting(config, sep='')}", backprop(config), *method_parts(config, sep="")]


# How a reader names each backbone in a table or legend.
BACKBONE_NAMES = {"stem-only": "stem only", "resnet": "ResNet", "rknet": "RK-Net", "odenet": "ODE-Net",
                  "mlp": "MLP", "odenet-mlp": "MLP ODE-Net", "resnet18": "ResNet-18", "odenet18": "ODE-Net-18"}


def method_name(config: Mapping[str, Any]) -> str:
    """A method as a reader names it across seeds: "ResNet", "ODE-Net (adjoint)", "RK-Net (rk4, 6 steps)",
    "ODE-Net + kinetic 0.01 + jacobian 0.01"."""
    name = BACKBONE_NAMES.get(config["backbone"], config["backbone"])
    if config.get("solver") is None:
        return name
    if config.get("rtol") is None:  # a fixed-step solver
        name += f" ({config['solver']}, {solver_setting(config)})"
    elif config.get("adjoint"):
        name += " (adjoint)"
    return " + ".join([name, *method_parts(config)])


# The classes of each dataset, by label index (the datasets' own orders: torchvision's and the archives').
_CIFAR100 = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can "
    "castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin "
    "elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster "
    "man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck "
    "pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk "
    "skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger "
    "tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm").split()
CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "mnist": tuple("0123456789"), "mnist-5k": tuple("0123456789"),
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"),
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    "cifar100": tuple(_CIFAR100),
}


def class_name(dataset: str | None, label: int) -> str:
    """The name of class ``label`` of ``dataset`` (the index itself for an unknown dataset or label)."""
    names = CLASS_NAMES.get(dataset or "", ())
    return names[label] if 0 <= label < len(names) else str(label)
