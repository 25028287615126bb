"""A tiny name -> object registry; readers, towers, methods and losses are picked by name."""
from __future__ import annotations

import importlib
import pkgutil
from typing import Callable, Generic, TypeVar

from domainclip.core.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects; an unknown name raises an error that lists the known ones."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name``."""

        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        """Return the object registered as ``name``."""
        if name not in self._items:
            raise ConfigError(
                f"unknown {self.kind} '{name}'; allowed values: {', '.join(self.names())}"
            )
        return self._items[name]

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items


def import_submodules(package: str, path) -> None:
    """Import every module of ``package`` (its ``__path__``), so that each registers itself:
    adding a reader, tower or method is adding its file."""
    for info in sorted(pkgutil.iter_modules(path), key=lambda i: i.name):
        importlib.import_module(f"{package}.{info.name}")
