"""One small registry class for methods, scorers and backbones."""
from __future__ import annotations

import difflib
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class BenchError(Exception):
    """Bad input: the message is one line naming the problem and the fix. The CLI prints it and
    exits with status 2."""


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj
        return deco

    def get(self, name: str) -> T:
        if name not in self._entries:
            close = difflib.get_close_matches(name, self._entries, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise BenchError(f"unknown {self.kind} {name!r}{hint}; valid: {', '.join(self.names())}")
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def describe(self) -> list[tuple[str, str]]:
        """(name, first line of the entry's docstring) for every entry."""
        out = []
        for name in self.names():
            doc = (getattr(self._entries[name], "__doc__", None) or "").strip().splitlines()
            out.append((name, doc[0] if doc else ""))
        return out

    def __contains__(self, name: str) -> bool:
        return name in self._entries


METHODS: Registry = Registry("method")
SCORERS: Registry = Registry("scorer")
BACKBONES: Registry = Registry("backbone")
