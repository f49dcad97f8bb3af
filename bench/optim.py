"""The optimisation pieces that the alignment trainer (bench/train.py) and the tiny backbones'
pretraining (bench/backbones/pretraining.py) share: the optimizer, the learning-rate schedule,
one clipped optimizer step, and an exponential moving average of weights.

Each is, op for op, the code that the trainer and pretraining each ran before they shared it, so
both give the same weights to the bit as before.
"""
from __future__ import annotations

import math

import torch


def make_optimizer(params: list, name: str, lr: float, weight_decay: float,
                   betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
    """The optimizer `name` (adamw | adamw8bit | adafactor; bench.config.check_config checks the
    name and bitsandbytes for train.optimizer). The default betas and eps are torch's AdamW's."""
    if name == "adafactor":
        # DiffusionDPO train.py (SDXL): Adafactor(lr, weight_decay, clip_threshold=1.0,
        # scale_parameter=False, relative_step=False)
        from transformers.optimization import Adafactor
        return Adafactor(params, lr=lr, weight_decay=weight_decay, clip_threshold=1.0,
                         scale_parameter=False, relative_step=False, warmup_init=False)
    if name == "adamw8bit":
        import bitsandbytes as bnb
        return bnb.optim.AdamW8bit(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


def lr_schedule(opt, warmup: int, cosine_steps: int | None = None):
    """Linear warmup over the first `warmup` steps (factor (s + 1) / warmup at step s), then
    constant (diffusers' constant_with_warmup, the official DPO schedule) or, with
    `cosine_steps`, times a half cosine from 1 at step 0 to 0 at step `cosine_steps`."""
    def factor(s: int) -> float:
        w = min(1.0, (s + 1) / max(warmup, 1))
        if cosine_steps is None:
            return w
        return w * 0.5 * (1 + math.cos(math.pi * min(s / cosine_steps, 1.0)))
    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def clip_and_step(opt, sched, params: list, max_norm: float, scaler=None) -> None:
    """Clip the gradients' global norm to `max_norm`, step the optimizer, then the schedule. A
    `torch.amp.GradScaler` (fp16 loss scaling) unscales the gradients first and steps through
    itself; a disabled one passes straight through."""
    if scaler is not None:
        scaler.unscale_(opt)                  # true gradients before clipping
    torch.nn.utils.clip_grad_norm_(params, max_norm)
    if scaler is None:
        opt.step()
    else:
        scaler.step(opt)
        scaler.update()
    sched.step()


def ema_decay_at(decay: float, n: int) -> float:
    """diffusers EMAModel's warmup of the decay (`get_decay`, use_ema_warmup=False):
    (1 + n) / (10 + n), capped at `decay`, for the n-th update counted from 0."""
    return min(decay, (1 + n) / (10 + n))


@torch.no_grad()
def ema_update(shadow: list, params: list, decay: float) -> None:
    """Move each shadow tensor toward its parameter: s <- s + (1 - decay) (p - s), in place."""
    for s, p in zip(shadow, params):
        s.lerp_(p.detach(), 1.0 - decay)
