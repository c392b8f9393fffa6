"""A name → object registry, one per kind of thing (backbones, datasets).

Follows timm's ``@register_model``: a decorator fills a dict, a duplicate name is an
error, and an unknown name raises ``ValueError`` listing the valid ones.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


def closest(name: str, choices: list[str]) -> str:
    """Return ' (did you mean X?)' for the closest choice, or '' when none is close."""
    match = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


class Registry(Generic[T]):
    """Maps names to objects of one kind."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator adding the decorated object under ``name``."""

        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
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
