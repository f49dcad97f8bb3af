"""One small registry class for methods, scorers and backbones."""
from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from typing import Callable, ClassVar, Generic, TypeVar

T = TypeVar("T")


class BenchError(Exception):
    """Bad input: the message is one line naming the problem and the fix. The CLI prints it and
    exits with status 2."""


@dataclass
class MethodConfig:
    """Base of every method's config dataclass (methods/config.py): it lives here, beside the
    registry that declares methods, so that methods/ never imports bench.config, which imports
    methods/ to declare them."""
    name: str = ""
    # The method's training budget in optimizer steps: what `train.steps` is when left unset
    # (null), so that each method's default job is its measured setting (bench.config.validate).
    # A class attribute, not a config key: the resolved `train.steps` names the job.
    default_steps: ClassVar[int] = 300


class Registry(Generic[T]):
    """Entries by name. An entry is either registered (`@REG.register(name)` when its module is
    imported) or declared (`REG.declare(...)`: its name, one-line summary, config dataclass and
    module, known without importing the module, which `get` imports on first use)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._declared: dict[str, tuple[str, str, type | None]] = {}   # name -> (module, summary, config)

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj
        return deco

    def declare(self, name: str, module: str, summary: str, config: type | None = None) -> None:
        """`name` lives in `module` (which registers it when imported); `summary` and `config`
        (its Config dataclass) answer `describe` and `config` without importing the module.
        tests/test_cli.py checks each declaration against the registered entry."""
        self._declared[name] = (module, summary, config)

    def get(self, name: str) -> T:
        if name not in self._entries and name in self._declared:
            importlib.import_module(self._declared[name][0])
            if name not in self._entries:
                raise RuntimeError(f"{self._declared[name][0]} does not register {self.kind} {name!r}")
        if name not in self._entries:
            close = difflib.get_close_matches(name, self.names(), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise BenchError(f"unknown {self.kind} {name!r}{hint}; valid: {', '.join(self.names())}")
        return self._entries[name]

    def config(self, name: str) -> type | None:
        """The entry's Config dataclass (None: it takes none), from its declaration if it has one."""
        if name in self._declared:
            return self._declared[name][2]
        return getattr(self.get(name), "Config", None)

    def names(self) -> list[str]:
        return sorted(set(self._entries) | set(self._declared))

    def describe(self) -> list[tuple[str, str]]:
        """(name, first line of the entry's docstring, or its declared summary) for every entry."""
        out = []
        for name in self.names():
            if name in self._declared:
                out.append((name, self._declared[name][1]))
                continue
            doc = (getattr(self._entries[name], "__doc__", None) or "").strip().splitlines()
            out.append((name, doc[0] if doc else ""))
        return out

    def __contains__(self, name: str) -> bool:
        return name in self._entries or name in self._declared


METHODS: Registry = Registry("method")
SCORERS: Registry = Registry("scorer")
BACKBONES: Registry = Registry("backbone")
