"""Registries: components chosen by name in a config (backends, evaluators, ...).

A registry maps a name to an object, or to a "module:attribute" string that is imported on
first use, so optional components (vLLM, the OpenAI client) cost nothing until a config names
them. An unknown name is a one-line error that lists the known ones.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Generic, TypeVar

from traitlab.core.errors import TraitlabError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names -> components, for one kind of component (`kind` names it in errors)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T | str] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: `@BACKENDS.register("hf") class HFBackend: ...`."""

        def add(obj: T) -> T:
            self._items[name] = obj
            return obj

        return add

    def lazy(self, name: str, target: str) -> None:
        """Register `name` as "package.module:attribute", imported when first asked for."""
        self._items[name] = target

    def get(self, name: str) -> T:
        if name not in self._items:
            known = ", ".join(sorted(self._items))
            raise TraitlabError(f"unknown {self.kind} '{name}'; known: {known}")
        item = self._items[name]
        if isinstance(item, str):
            module, _, attr = item.partition(":")
            item = getattr(importlib.import_module(module), attr)
            self._items[name] = item
        return item  # type: ignore[return-value]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items
