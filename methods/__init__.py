"""Alignment methods, one module each, registered by name (bench.registry.METHODS).

Two ways a method module makes itself known, both without importing torch, so that listing the
methods and validating a config stay light (tests/test_cli.py checks that `bench list` imports no
torch):

- declared in the table below with its module, one-line summary and config dataclass
  (methods/config.py); the module itself (which imports torch at once) is imported when a job first
  asks for the method, and registers its class under the declared name;
- self-registering (every module of this package that the table does not name, except `config`
  and names starting with "_"): imported here, it defines its config dataclass and its class,
  and registers the class (`@METHODS.register(name)`, summary = the class docstring's first line,
  config = its `Config`). Such a module must import torch lazily (`from bench.lazy import torch`),
  so a new method is one file and no other file changes (docs/adding_a_method.md).

tests/test_cli.py checks every method's summary and config against its class.
"""
import importlib
import pkgutil

from bench.registry import MethodConfig
from bench.registry import METHODS
from methods.config import BalancedDPOConfig, CPOConfig, DPOConfig, KTOConfig

_DECLARED = [
    ("base", MethodConfig, "No training: the pretrained backbone itself (every win rate is against this row)."),
    ("sft", MethodConfig, "Supervised fine-tuning on the preferred image of each non-tie pair (denoising loss)."),
    ("dpo", DPOConfig, "Diffusion-DPO: pairwise preference loss against a frozen reference; suite beta 2500, paper beta 5000."),
    ("kto", KTOConfig, "Diffusion-KTO: per-image likes/dislikes, utility 1 - sigmoid(beta*s*(g - z)), beta = 1000."),
    ("balanced_dpo", BalancedDPOConfig,
     "BalancedDPO-style: majority vote of proxy scorers per pair, DPO loss, refreshed reference."),
    ("cpo", CPOConfig, "CPO (suite formulation): attribute-tree DPO anchored on an attribute-conditioned SFT model."),
]
_MODULES = {"base": "untrained"}    # the untrained baseline, named "base" in configs and results
for _name, _config, _summary in _DECLARED:
    METHODS.declare(_name, f"methods.{_MODULES.get(_name, _name)}", _summary, _config)

NOT_METHODS = {"config"}          # modules of this package that hold no method


def self_registering_modules() -> list[str]:
    """The package's modules that register their method at import (not in the table above)."""
    declared = {_MODULES.get(name, name) for name, _, _ in _DECLARED}
    return sorted(m.name for m in pkgutil.iter_modules(__path__)
                  if m.name not in declared and m.name not in NOT_METHODS and not m.name.startswith("_"))


def import_self_registering() -> None:
    for module in self_registering_modules():
        importlib.import_module(f"methods.{module}")


import_self_registering()
