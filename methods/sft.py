"""Supervised fine-tuning on preferred images (the Diffusion-DPO paper's SFT baseline)."""
from bench.registry import METHODS
from bench.method import Method


@METHODS.register("sft")
class SFT(Method):
    """Supervised fine-tuning on the preferred image of each non-tie pair (denoising loss)."""
    feedback = "images"

    def loss(self, err, ref_err):
        return err.mean(), {}
