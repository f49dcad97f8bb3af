"""One method-agnostic trainer.

The trainer owns data batching, noise and timestep sampling (shared inside a pair), the
prediction target (from the scheduler's prediction_type), LoRA or full fine-tuning, the reference
model (a frozen copy, or the policy with its adapters disabled), caption dropout, the optimizer,
logging and checkpoints. A method only turns per-sample denoising errors into a loss.

Per-sample error, as in Diffusion-DPO's train.py: e(x) = mean over C, H, W of (pred - target)^2.
"""
from __future__ import annotations

import copy
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from bench.registry import BenchError

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    steps: int = 300
    batch_size: int = 16               # pairs per step for pair methods, images for image methods
    lr: float = 1e-4
    # AdamW betas/eps/weight decay as DiffusionDPO's SD1.5 launcher (argparse defaults in train.py)
    weight_decay: float = 1e-2
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    warmup: int = 20                   # constant_with_warmup, the official DPO schedule
    grad_clip: float = 1.0             # DiffusionDPO train.py max_grad_norm
    finetune: str = "full"             # full | lora
    lora_rank: int = 8                 # diffusers DPO LoRA example: r=8, alpha=r, to_q/k/v/out
    reference: str = "auto"            # auto | frozen_copy | adapters_disabled (auto: by finetune)
    # 20% empty captions: DiffusionDPO train.py --proportion_empty_prompts default 0.2 (also
    # diffusion-kto); the diffusers port uses 0. Applied to every method alike.
    empty_prompt_prob: float = 0.2
    log_every: int = 25


@dataclass
class MethodConfig:
    name: str = ""


class Method:
    """Base class of alignment methods (methods/<name>.py registers subclasses by name)."""
    feedback: str = "pairs"            # none | images | pairs
    needs_reference: bool = False
    Config = MethodConfig

    def __init__(self, cfg):
        self.cfg = cfg

    def loss(self, err: torch.Tensor, ref_err: torch.Tensor | None) -> tuple[torch.Tensor, dict]:
        """err: per-sample policy errors; for pairs (2B,), winners first. Returns (loss, metrics)."""
        raise NotImplementedError


@dataclass
class Batch:
    images: torch.Tensor               # uint8 (N, 3, H, W); pairs: [winners; losers]
    captions: list[str]
    paired: bool


def _batches(method: Method, data, cfg: TrainConfig, gen: torch.Generator):
    """Endless stream of batches in the shape the method's feedback asks for."""
    if method.feedback == "pairs":
        keep = torch.nonzero(~data.ties).flatten()
        if len(keep) == 0:
            raise BenchError("no non-tie pairs to train on; set data.keep_ties=false or add data")
        while True:
            i = keep[torch.randint(0, len(keep), (cfg.batch_size,), generator=gen)]
            caps = [data.captions[k] for k in i.tolist()]
            yield Batch(torch.cat([data.winners[i], data.losers[i]]), caps + caps, True)
    elif method.feedback == "images":
        # The preferred image of every non-tie pair (the Diffusion-DPO paper's SFT baseline).
        keep = torch.nonzero(~data.ties).flatten()
        while True:
            i = keep[torch.randint(0, len(keep), (cfg.batch_size,), generator=gen)]
            yield Batch(data.winners[i], [data.captions[k] for k in i.tolist()], False)
    else:
        raise BenchError(f"method feedback {method.feedback!r} cannot be trained on")


def setup_policy(unet, cfg: TrainConfig):
    """Returns (policy, reference_fn) where reference_fn(fn) runs fn under the reference weights."""
    mode = cfg.reference if cfg.reference != "auto" else (
        "adapters_disabled" if cfg.finetune == "lora" else "frozen_copy")
    if cfg.finetune == "lora":
        from peft import LoraConfig
        unet.requires_grad_(False)
        unet.add_adapter(LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_rank, init_lora_weights="gaussian",
                                    target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    elif cfg.finetune == "full":
        unet.requires_grad_(True)
    else:
        raise BenchError(f"unknown train.finetune {cfg.finetune!r}; valid: full, lora")
    if mode == "frozen_copy":
        ref = copy.deepcopy(unet).requires_grad_(False).eval()
        return unet, lambda fn: fn(ref)
    if mode == "adapters_disabled":
        if cfg.finetune != "lora":
            raise BenchError("train.reference=adapters_disabled needs train.finetune=lora")

        def with_adapters_off(fn):
            unet.disable_adapters()
            try:
                return fn(unet)
            finally:
                unet.enable_adapters()
        return unet, with_adapters_off
    raise BenchError(f"unknown train.reference {cfg.reference!r}; valid: auto, frozen_copy, adapters_disabled")


def per_sample_error(backbone, unet, latents, noise, t, cond) -> torch.Tensor:
    pred = backbone.predict(unet, backbone.pipe.scheduler.add_noise(latents, noise, t), t, cond)
    target = backbone.target(latents, noise, t)
    return (pred.float() - target.float()).pow(2).mean(dim=(1, 2, 3))


def draw_noise(latents: torch.Tensor, paired: bool, n_timesteps: int, gen: torch.Generator):
    """Noise and timesteps; inside a pair the winner and loser share both (DiffusionDPO train.py:
    `noise.chunk(2)[0].repeat(2, 1, 1, 1)`, `timesteps.chunk(2)[0].repeat(2)`)."""
    n = len(latents) // 2 if paired else len(latents)
    noise = torch.randn((n,) + latents.shape[1:], generator=gen)
    t = torch.randint(0, n_timesteps, (n,), generator=gen)
    if paired:
        noise, t = noise.repeat(2, 1, 1, 1), t.repeat(2)
    return noise, t


def train(backbone, method: Method, data, cfg: TrainConfig, seed: int, ckpt_dir: Path | None = None,
          progress: bool = True):
    """Fine-tune backbone.unet with the method; returns (policy unet, history of logged metrics)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    unet, reference = setup_policy(backbone.unet, cfg)
    unet.train()
    params = [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2),
                            eps=cfg.adam_eps, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(cfg.warmup, 1)))
    captions = sorted(set(data.captions) | {""})
    emb = dict(zip(captions, backbone.encode_prompts(captions)["encoder_hidden_states"]))
    n_t = backbone.pipe.scheduler.config.num_train_timesteps
    batches = _batches(method, data, cfg, gen)
    history, window, t0 = [], [], time.time()
    bar = tqdm(range(cfg.steps), desc=f"train {type(method).__name__}", disable=not progress, mininterval=2)
    for step in bar:
        b = next(batches)
        caps = list(b.captions)
        n_groups = len(caps) // 2 if b.paired else len(caps)
        drop = (torch.rand(n_groups, generator=gen) < cfg.empty_prompt_prob).tolist()
        if b.paired:
            drop = drop + drop                    # a pair keeps or drops its caption together
        cond = {"encoder_hidden_states": torch.stack([emb["" if d else c] for c, d in zip(caps, drop)])}
        latents = backbone.encode_images(b.images.float() / 255.0)
        noise, t = draw_noise(latents, b.paired, n_t, gen)
        err = per_sample_error(backbone, unet, latents, noise, t, cond)
        ref_err = None
        if method.needs_reference:
            with torch.no_grad():
                ref_err = reference(lambda m: per_sample_error(backbone, m, latents, noise, t, cond))
        loss, metrics = method.loss(err, ref_err)
        if not torch.isfinite(loss):
            raise BenchError(f"loss became {loss.item()} at step {step}; lower train.lr or the method's beta")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step(); sched.step()
        window.append({"loss": loss.item(), **{k: float(v) for k, v in metrics.items()}})
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            row = {"step": step + 1, **{k: float(np.mean([w[k] for w in window])) for k in window[0]},
                   "wall_s": time.time() - t0}
            history.append(row)
            window = []
            bar.set_postfix(loss=f"{row['loss']:.4f}")
            log.info("step %d %s", step + 1, {k: round(v, 4) for k, v in row.items() if k != "step"})
    unet.eval()
    if ckpt_dir is not None:
        save_checkpoint(unet, Path(ckpt_dir) / "unet.safetensors", lora=cfg.finetune == "lora")
    return unet, history


def save_checkpoint(unet, path: Path, lora: bool) -> None:
    state = {k: v.detach().contiguous().cpu() for k, v in unet.state_dict().items()
             if not lora or "lora_" in k}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    save_file(state, str(tmp))
    os.replace(tmp, path)
