"""The denoising objective of one training step, shared by the alignment trainer (bench/train.py)
and the tiny backbones' pretraining (bench/backbones/pretraining.py): which examples, caption
dropout, noise and timesteps (each drawn from the run's CPU generator, in that order), and the
per-sample error

    e(x) = mean over C, H, W of (pred - target)^2    (Diffusion-DPO's train.py)

with the target from the scheduler's prediction type (`Backbone.target`).
"""
from __future__ import annotations

import torch


def draw_examples(n: int, batch_size: int, gen: torch.Generator, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Indices of `batch_size` examples out of n, drawn with replacement: uniformly, or
    proportionally to `weights` (torch WeightedRandomSampler semantics: independent draws)."""
    if weights is None:
        return torch.randint(0, n, (batch_size,), generator=gen)
    return torch.multinomial(weights.double(), batch_size, replacement=True, generator=gen)


def drop_captions(n: int, prob: float, gen: torch.Generator) -> list[bool]:
    """Caption dropout (for classifier-free guidance): True where the n-th caption is replaced
    by the empty one, each with probability `prob`."""
    return (torch.rand(n, generator=gen) < prob).tolist()


def draw_noise(latents: torch.Tensor, paired: bool, n_timesteps: int, gen: torch.Generator):
    """Noise and timesteps; inside a pair the winner and loser share both (DiffusionDPO train.py:
    `noise.chunk(2)[0].repeat(2, 1, 1, 1)`, `timesteps.chunk(2)[0].repeat(2)`)."""
    n = len(latents) // 2 if paired else len(latents)
    noise = torch.randn((n,) + latents.shape[1:], generator=gen)
    t = torch.randint(0, n_timesteps, (n,), generator=gen)
    if paired:
        noise, t = noise.repeat(2, 1, 1, 1), t.repeat(2)
    return noise, t


def per_sample_error(backbone, unet, latents, noise, t, cond, weights=None) -> torch.Tensor:
    """e(x) of each sample for `unet` on the noised latents, times `weights` (per sample) when given."""
    pred = backbone.predict(unet, backbone.noise_scheduler.add_noise(latents, noise, t), t, cond)
    target = backbone.target(latents, noise, t)
    err = (pred.float() - target.float()).pow(2).mean(dim=(1, 2, 3))
    return err if weights is None else err * weights
