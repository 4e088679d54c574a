"""A tiny name -> builder registry with helpful errors, shared by every registry in contrastkit."""

from __future__ import annotations

import difflib
from typing import Callable, Generic, TypeVar

from contrastkit.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to builders; ``get`` of an unknown name suggests the close match."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(item: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = item
            return item
        return decorator

    def get(self, name: str) -> T:
        if name not in self._items:
            raise ConfigError(unknown_name_message(self.kind, name, self._items))
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def values(self) -> list[T]:
        """The registered items in the order they were registered."""
        return list(self._items.values())

    def __contains__(self, name: object) -> bool:
        return name in self._items


def unknown_name_message(kind: str, name: str, known: "dict[str, object] | list[str]") -> str:
    """'unknown backbone 'resnt18'; did you mean 'resnet18'? Known: ...'."""
    names = sorted(known)
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else "."
    return f"unknown {kind} {name!r}{hint} Known {kind}s: {', '.join(names)}."
