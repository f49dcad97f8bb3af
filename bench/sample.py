"""Sampling with paired initial noise.

The initial latent of (prompt, seed) comes from a generator seeded by a hash of both, so the base
and every aligned model start from identical noise for the same (prompt, seed), whatever the batch
composition. With DDIM (eta=0) the rest of sampling is deterministic.
"""
from __future__ import annotations

import contextlib
import weakref

import torch
from tqdm.auto import tqdm

from bench.files import digest


def noise_seed(prompt: str, seed: int) -> int:
    return int(digest(f"{prompt}|{seed}", 15), 16)


def initial_latents(backbone, prompts: list[str], seeds: list[int]) -> torch.Tensor:
    pipe = backbone.pipe
    c = pipe.unet.config.in_channels
    hw = backbone.resolution // pipe.vae_scale_factor
    return torch.stack([
        torch.randn((c, hw, hw), generator=torch.Generator().manual_seed(noise_seed(p, s)))
        for p, s in zip(prompts, seeds)])


_COMPILED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def compiled(unet):
    """torch.compile(unet) (inductor), made once per module. Inductor keeps its compiled kernels
    on disk (TORCHINDUCTOR_CACHE_DIR; the runner points it into the cache directory), so a later
    process compiles the same UNet in seconds instead of a minute or more."""
    if unet not in _COMPILED:
        _COMPILED[unet] = torch.compile(unet)
    return _COMPILED[unet]


@torch.no_grad()
def generate(backbone, prompts: list[str], seeds: list[int], unet=None, batch_size: int = 64,
             progress: bool = True, desc: str = "sample", compile: bool = False,
             guidance_scale: float | None = None, num_inference_steps: int | None = None,
             autocast=contextlib.nullcontext) -> torch.Tensor:
    """uint8 images (N, 3, H, W); `unet` replaces the backbone's UNet (the aligned policy).
    compile: run the UNet through torch.compile (launch.compile; docs/performance.md).
    guidance_scale / num_inference_steps: None = the backbone's (other generators of a pair pool).
    autocast: a context factory the pipeline runs under (train.mixed_precision: bench/devices.py).
    The initial noise is drawn on the CPU and moved to the UNet's device: same noise on any device."""
    guidance = backbone.guidance_scale if guidance_scale is None else guidance_scale
    steps = backbone.num_inference_steps if num_inference_steps is None else num_inference_steps
    pipe = backbone.pipe
    base_unet = pipe.unet
    model = unet if unet is not None else base_unet
    was_training = model.training
    model.eval()
    pipe.unet = compiled(model) if compile else model
    out = []
    try:
        for i in tqdm(range(0, len(prompts), batch_size), desc=desc, disable=not progress, leave=False):
            p, s = prompts[i:i + batch_size], seeds[i:i + batch_size]
            with autocast():
                img = pipe(p, latents=initial_latents(backbone, p, s).to(model.device), height=backbone.resolution,
                           width=backbone.resolution, num_inference_steps=steps,
                           guidance_scale=guidance, output_type="pt").images
            img = img.float().cpu()
            out.append((img.clamp(0, 1) * 255).round().to(torch.uint8))
    finally:
        model.train(was_training)
        pipe.unet = base_unet
    return torch.cat(out)
