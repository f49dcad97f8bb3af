"""The untrained base model: the reference row every method is compared against."""
from bench.registry import METHODS
from bench.method import Method


@METHODS.register("base")
class Untrained(Method):
    """No training: the pretrained backbone itself (every win rate is against this row)."""
    feedback = "none"
