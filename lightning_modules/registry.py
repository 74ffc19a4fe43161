"""Registries of named things (networks, sources, claim kinds) and the "did you mean" hint.

This module sits at the bottom of the package graph: it imports nothing of twoworlds but its errors, and nothing
heavy, so every package (lightning_modules, datamodules, results, launch) may use it.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

from twoworlds.errors import ConfigError

T = TypeVar("T")


def did_you_mean(name: str, known: Iterable[str], n: int = 3) -> str:
    """' Did you mean: a, b?' for the known names closest to `name`, '' when none is close."""
    near = difflib.get_close_matches(str(name), list(known), n=n, cutoff=0.5)
    return f" Did you mean: {', '.join(near)}?" if near else ""


class Registry(Generic[T]):
    """Names of one kind mapped to their factories (or any item).

    `register(name)` is a decorator that refuses a name registered twice; `registry[name]` raises a
    ConfigError listing the known names and the closest one. `load`, when given, is called once
    before the first lookup, so that modules registering items are imported only when needed.
    """

    def __init__(self, kind: str, load: Callable[[], None] | None = None):
        self.kind, self._load = kind, load
        self._items: dict[str, T] = {}

    def _all(self) -> dict[str, T]:
        if self._load is not None:
            load, self._load = self._load, None
            load()
        return self._items

    def add(self, name: str, item: T) -> T:
        if name in self._items:
            raise ValueError(f"{self.kind} '{name}' is already registered")
        self._items[name] = item
        return item

    def register(self, name: str) -> Callable[[T], T]:
        return lambda item: self.add(name, item)

    def __getitem__(self, name: str) -> T:
        items = self._all()
        if name not in items:
            raise ConfigError(f"unknown {self.kind} '{name}'; known: {', '.join(sorted(items))}."
                             + did_you_mean(name, items))
        return items[name]

    def __contains__(self, name: object) -> bool:
        return name in self._all()

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._all()))

    def __len__(self) -> int:
        return len(self._all())
