"""A name → object registry, one per kind of thing (backbones, datasets), and the catalogue of their names.

Follows timm's ``@register_model``: a decorator fills a dict, a duplicate name is an
error, and an unknown name raises ``ValueError`` listing the valid ones.

:data:`NAMES` lists what each registry holds without importing torch, so that the command-line
parsers (and ``--help``) can name the valid backbones and datasets in well under a second (the
solvers' one table is :data:`odenet.solve.SOLVERS`); a registry refuses a name the catalogue lacks, and a test checks that every catalogued
name is registered, so the catalogue and the registries cannot drift apart.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

# The one list of each kind's names (the registries hold exactly these; tests/test_hardening.py checks).
NAMES: dict[str, tuple[str, ...]] = {
    "backbone": ("mlp", "resnet", "odenet", "rknet", "resnet18", "odenet18", "stem-only", "odenet-mlp"),
    "dataset": ("mnist", "fashion-mnist", "mnist-5k", "cifar10", "cifar100"),
}


def catalogue(kind: str) -> list[str]:
    """The valid names of one kind ("backbone", "dataset"), sorted; torch-free."""
    return sorted(NAMES[kind])


def _core(text: str) -> str:
    """A name as compared: no leading dashes, lower case, '_' and '-' alike."""
    return text.lstrip("-").lower().replace("_", "-")


def _initials(text: str) -> str:
    return "".join(word[0] for word in re.split(r"[-_]+", text) if word)


def best_match(name: str, choices: list[str]) -> str | None:
    """The choice ``name`` most likely meant, by the first rule that finds one:

    1. the same name but for case, ``_`` / ``-`` and punctuation (``--batch_size``, ``mnist5k``);
    2. ``name`` is the start of choices: the shortest of them (``dopri`` → ``dopri5``, ``--check`` →
       ``--checkpoint-every``);
    3. a choice is the start of ``name``'s first word: the longest such (``--tolerance`` → ``--tol``;
       but ``--lr-decay`` adds a word to ``--lr``, and is left to the later rules);
    4. ``name``'s words abbreviate a choice, or the reverse (``--lerning-rate`` → ``--lr``);
    5. :func:`difflib.get_close_matches` (a typo: ``--epoch`` → ``--epochs``).
    """
    core = _core(name)
    if not core:
        return None
    cores = {c: _core(c) for c in choices}
    squash = lambda s: re.sub(r"[^a-z0-9]", "", s)  # noqa: E731
    rules = [
        [c for c, k in cores.items() if squash(k) == squash(core)],
        sorted((c for c, k in cores.items() if k.startswith(core)), key=lambda c: (len(cores[c]), c)),
        sorted((c for c, k in cores.items() if len(k) >= 2 and core.startswith(k) and core[len(k):len(k) + 1] != "-"),
               key=lambda c: -len(cores[c])),
        [c for c, k in cores.items() if "-" in core and _initials(core) == k or "-" in k and _initials(k) == core],
    ]
    for found in rules:
        if found:
            return found[0]
    match = difflib.get_close_matches(core, list(cores.values()), n=1, cutoff=0.6)
    return next(c for c, k in cores.items() if k == match[0]) if match else None


def closest(name: str, choices: list[str]) -> str:
    """Return ' (did you mean X?)' for the choice ``name`` most likely meant (:func:`best_match`), or ''."""
    match = best_match(str(name), list(choices))
    return f" (did you mean {match!r}?)" if match else ""


class Registry(Generic[T]):
    """Maps names to objects of one kind; a kind listed in :data:`NAMES` takes only names listed there."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator adding the decorated object under ``name``."""

        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            if self.kind in NAMES and name not in NAMES[self.kind]:
                raise ValueError(f"{self.kind} {name!r} is not in odenet.registry.NAMES; add it there too (the "
                                 f"command-line parsers list the names from it without importing torch)")
            self._items[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        if name not in self._items:
            raise ValueError(self.unknown_message(name))
        return self._items[name]

    def unknown_message(self, name: str) -> str:
        return (f"unknown {self.kind} {name!r}{closest(str(name), self.names())}; "
                f"valid {self.kind}s: {', '.join(self.names())}")

    def names(self) -> list[str]:
        return sorted(self._items)

    def in_order(self) -> list[str]:
        """Names in the order they were registered (the order their module lists them in)."""
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
