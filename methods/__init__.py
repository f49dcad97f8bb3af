"""Alignment methods, one module each, registered by name at import (bench.registry.METHODS)."""
from methods import base, dpo, sft  # noqa: F401
