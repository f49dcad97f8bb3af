"""Pretraining a tiny backbone on the shapes world's defective corpus (`python -m bench pretrain`),
cached by the hash of its recipe (bench/backbones/tiny.py `recipe`) and deterministic.

The loop is built from the alignment trainer's pieces: examples, caption dropout, noise and
timesteps drawn in the trainer's order from one CPU generator, and the per-sample error
(bench/objective.py); AdamW, the warmup schedule, clipping and stepping, and the EMA update with
diffusers' decay warmup that the trainer's reference refresh uses (bench/optim.py). It differs
from the trainer where pretraining differs from fine-tuning: the text encoders train with the
UNet (prompts are encoded every step, with gradients), the loss is weighted by the recipe
(`loss_weight`), the learning rate decays along a half cosine after the warmup, the EMA of the
weights (the result) warms its decay up where the trainer's keeps it fixed from the first step,
and the run keeps no resumable state. It runs on the CPU whatever accelerator is present: the cache key names no
device, so the weights of an entry must not depend on the machine's accelerator.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from bench import world as W
from bench.backbones.interface import load_pipeline_dir, make_backbone
from bench.backbones.shipped import checked_asset
from bench.backbones.tiny import (PIPELINE_DIR, PretrainConfig, TinyArch, build_tiny, recipe, short_hash,
                                  transfer_weights)
from bench.files import atomic
from bench.objective import draw_examples, draw_noise, drop_captions, per_sample_error
from bench.optim import clip_and_step, ema_decay_at, ema_update, lr_schedule, make_optimizer

log = logging.getLogger(__name__)


def loss_weight(pre: PretrainConfig, alphas_cumprod: torch.Tensor, t: torch.Tensor,
                prediction_type: str = "epsilon") -> torch.Tensor:
    """Per-sample loss weight from the recipe's weighting options, which are defined in epsilon
    units. A v target's squared error is the epsilon one divided by abar_t, so for v the weight
    is multiplied by abar_t (e.g. Min-SNR becomes min(SNR, g)/(SNR + 1), as in Hang et al.)."""
    w = torch.ones(len(t))
    if pre.snr_gamma is not None:
        w = w * min_snr_weight(alphas_cumprod, t, pre.snr_gamma)
    if pre.v_weight_cap is not None:
        w = w * torch.clamp(1 / alphas_cumprod[t], max=pre.v_weight_cap)
    if prediction_type == "v_prediction":
        w = w * alphas_cumprod[t]
    return w


def min_snr_weight(alphas_cumprod: torch.Tensor, t: torch.Tensor, gamma: float) -> torch.Tensor:
    """min(SNR_t, gamma) / SNR_t with SNR_t = abar_t / (1 - abar_t) (epsilon targets)."""
    snr = alphas_cumprod[t] / (1 - alphas_cumprod[t])
    return torch.clamp(snr, max=gamma) / snr


def render_corpus(world_cfg: W.WorldConfig, n: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    """The defective training corpus: n uint8 images (n, 3, H, W) and their prompts."""
    prompts = W.split_prompts(world_cfg)["train"]
    rng = np.random.default_rng(seed)
    imgs = np.empty((n, world_cfg.image_size, world_cfg.image_size, 3), np.uint8)
    texts = []
    for i in tqdm(range(n), desc="render corpus", leave=False, mininterval=2):
        p = prompts[int(rng.integers(len(prompts)))]
        defects = W.sample_defects(world_cfg.defects, rng, p, world_cfg.modes)
        imgs[i] = np.round(W.render(p, rng, world_cfg.image_size, defects) * 255)
        texts.append(p.text)
    return torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous(), texts


def pretrain(name: str, arch: TinyArch, pre: PretrainConfig, world_cfg: W.WorldConfig,
             cache_dir: Path, progress: bool = True) -> Path:
    """Pretrain a tiny backbone on the defective corpus; cached by recipe hash. Deterministic.
    Returns the saved pipeline's directory."""
    rec = recipe(name, arch, pre, world_cfg)
    out = Path(cache_dir) / "pretrain" / f"{name}-{short_hash(rec)}"
    if (out / PIPELINE_DIR / "model_index.json").is_file():
        return out / PIPELINE_DIR
    torch.manual_seed(pre.seed)
    if pre.init_from is not None:
        first = PretrainConfig(**pre.init_from)
        pipe = load_pipeline_dir(pretrain(name, arch, first, world_cfg, cache_dir, progress))
    else:
        pipe = build_tiny(arch, world_cfg.image_size, pre.seed)
        if pre.warm_start is not None:
            transfer_weights(load_pipeline_dir(checked_asset(pre.warm_start)), pipe)
    bb = make_backbone(name, pipe, world_cfg.image_size, 3.0, 20)
    images, texts = render_corpus(world_cfg, pre.corpus_size, pre.seed)
    modules = [pipe.unet] + bb.text_encoders
    params = [p for m in modules for p in m.parameters()]
    ema = [p.detach().clone() for p in params]
    # AdamW with torch's default betas and eps
    opt = make_optimizer(params, "adamw", pre.lr, pre.weight_decay)
    sched = lr_schedule(opt, pre.warmup, cosine_steps=pre.steps)
    gen = torch.Generator().manual_seed(pre.seed)
    n_t = bb.noise_scheduler.config.num_train_timesteps
    alphas_cumprod = bb.noise_scheduler.alphas_cumprod
    for m in modules:
        m.train()
    t0, losses = time.time(), []
    bar = tqdm(range(pre.steps), desc=f"pretrain {name}", disable=not progress, mininterval=5)
    for step in bar:
        idx = draw_examples(len(images), pre.batch_size, gen)
        drop = drop_captions(pre.batch_size, pre.empty_prompt_prob, gen)
        cond = bb.encode_prompts(["" if d else texts[i] for i, d in zip(idx.tolist(), drop)], grad=True)
        latents = bb.encode_images(images[idx].float() / 255.0)
        noise, t = draw_noise(latents, paired=False, n_timesteps=n_t, gen=gen)
        weights = loss_weight(pre, alphas_cumprod, t, bb.prediction_type)
        loss = per_sample_error(bb, pipe.unet, latents, noise, t, cond, weights).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        clip_and_step(opt, sched, params, pre.grad_clip)
        ema_update(ema, params, ema_decay_at(pre.ema_decay, step))
        losses.append(loss.item())
        if step % 100 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-100:]):.4f}")
            log.info("pretrain step %d loss %.4f (%.0fs)", step, np.mean(losses[-100:]), time.time() - t0)
    with torch.no_grad():
        for e, p in zip(ema, params):
            p.copy_(e)
    for m in modules:
        m.eval()
    with atomic(out) as tmp:
        pipe.save_pretrained(tmp / PIPELINE_DIR, safe_serialization=True)
        (tmp / "recipe.json").write_text(json.dumps(rec, indent=2))
        (tmp / "train_log.json").write_text(json.dumps(
            {"loss_every_100": [float(np.mean(losses[i:i + 100])) for i in range(0, len(losses), 100)],
             "wall_s": time.time() - t0}))
    return out / PIPELINE_DIR
