"""Pretraining a tiny backbone on the shapes world's defective corpus (`python -m bench pretrain`),
cached by the hash of its recipe (bench/backbones/tiny.py `recipe`) and deterministic.
"""
from __future__ import annotations

import json
import logging
import math
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
    """Pretrain a tiny backbone on the defective corpus; cached by recipe hash. Deterministic."""
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
    opt = torch.optim.AdamW(params, lr=pre.lr, weight_decay=pre.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / pre.warmup) * 0.5 * (
        1 + math.cos(math.pi * min(s / pre.steps, 1.0))))
    gen = torch.Generator().manual_seed(pre.seed)
    noise_sched = bb.noise_scheduler
    for m in modules:
        m.train()
    t0, losses = time.time(), []
    bar = tqdm(range(pre.steps), desc=f"pretrain {name}", disable=not progress, mininterval=5)
    for step in bar:
        idx = torch.randint(0, len(images), (pre.batch_size,), generator=gen)
        x = images[idx].float() / 255.0
        drop = (torch.rand(pre.batch_size, generator=gen) < pre.empty_prompt_prob).tolist()
        cond = bb.encode_prompts(["" if d else texts[i] for i, d in zip(idx.tolist(), drop)], grad=True)
        latents = bb.encode_images(x)
        noise = torch.randn(latents.shape, generator=gen)
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (pre.batch_size,), generator=gen)
        pred = bb.predict(pipe.unet, noise_sched.add_noise(latents, noise, t), t, cond)
        per = (pred - bb.target(latents, noise, t)).pow(2).mean(dim=(1, 2, 3))
        loss = (per * loss_weight(pre, noise_sched.alphas_cumprod, t, bb.prediction_type)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, pre.grad_clip)
        opt.step(); sched.step()
        with torch.no_grad():
            d = min(pre.ema_decay, (1 + step) / (10 + step))
            for e, p in zip(ema, params):
                e.lerp_(p.detach(), 1 - d)
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
