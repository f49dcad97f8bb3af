"""Scorers, one module each, registered by name at import (bench.registry.SCORERS).

Real-world scorers with heavy optional dependencies import them inside the scorer, never here.
"""
from scorers import world  # noqa: F401
