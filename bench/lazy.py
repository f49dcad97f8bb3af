"""A module imported on its first use instead of at import time.

Commands that only read the config (`bench --help`, `bench list`, `bench run --help`, argument
and config errors) must answer in a fraction of a second, without the seconds that importing
torch and diffusers costs (issue 20). Modules that these commands import but that use torch only
inside functions (bench.data, bench.backbones, the scorers) write

    from bench.lazy import torch

instead of `import torch`: `torch` is then this stand-in until an attribute of it is first read
(in a function body, when real work starts), which imports the real module. Module-level uses
(a default argument `dtype=torch.float32`, a decorator `@torch.no_grad()`, a base class
`torch.nn.Module`) would import it at once, so those modules have none. tests/test_cli.py checks
that the light commands leave torch out of sys.modules.

Modules whose import needs torch at once (methods/*.py, bench.train) are not imported by those
commands: the method registry declares each method's name, summary and config dataclass without
importing its module (methods/__init__.py, bench.registry.Registry.declare).
"""
from __future__ import annotations

import importlib


class LazyModule:
    """Stands in for the module `name`; reading an attribute imports it (once; Python caches
    modules in sys.modules) and returns the module's attribute."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str):
        return getattr(importlib.import_module(self._name), attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"


torch = LazyModule("torch")
