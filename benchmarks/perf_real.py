"""Throughput and memory of real-size SD1.5 / SDXL UNets (issue 19, item 7).

    python benchmarks/perf.py --model sd15|sdxl [--device auto|cpu|cuda] [--precision fp32|bf16|fp16]
        [--latent N] [--pairs B] [--steps S] [--warmup W] [--optimizer adamw|adamw8bit|adafactor]
        [--grad-checkpointing] [--ref-dtype fp32|bf16|fp16] [--ema] [--sample-steps N] [--guidance G]
        [--parts train,sample] [--out FILE]
    python benchmarks/perf.py --model sdxl --estimate [--act-latents 16,24]

Builds a UNet2DConditionModel from the published config written below (random weights, nothing is
downloaded) and measures on the device present:
  train   one Diffusion-DPO step on B pairs: shared noise and timestep per pair, policy forward and
          backward on winners and losers, a no-grad reference forward on the same noised latents,
          the sigmoid loss (beta 5000), the optimizer step -> steps/s. UNet only: the latents and
          the text embeddings are random tensors of the real shapes (no VAE, no text encoder).
  sample  one sampling batch of B images: N DDIM steps with classifier-free guidance (2B UNet
          forwards per step, unconditional and conditional in one batch) -> images/s, UNet only
          (no VAE decode, no text encoding).
For each: peak memory (CUDA: torch.cuda.max_memory_allocated after a reset, i.e. including the
weights; CPU: the peak resident set size sampled every 5 ms by a thread, minus the resident set
before the part started, i.e. what the step added on top of the weights), FLOPs per step counted
by torch.utils.flop_counter.FlopCounterMode on one extra untimed step (matmuls, convolutions and
attention; elementwise work and the optimizer are not counted; with gradient checkpointing the
recomputed forward is counted), and achieved TFLOP/s = FLOPs / (seconds per step).

--estimate prints the memory of one DPO step with each saver switched on in turn, without
allocating the model: parameter counts from the real configs instantiated on the `meta` device,
bytes per component (estimate_components), plus activations measured on the CPU (see
measure_activations).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import json
import math
import os
import platform
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

# ----------------------------------------------------------------------------- real configs

# huggingface.co/runwayml/stable-diffusion-v1-5, unet/config.json (the published diffusers config;
# the same as stable-diffusion-v1-4's). 859,520,964 parameters.
SD15_UNET = {
    "act_fn": "silu", "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False, "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2,
    "mid_block_scale_factor": 1, "norm_eps": 1e-5, "norm_num_groups": 32, "out_channels": 4, "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}

# huggingface.co/stabilityai/stable-diffusion-xl-base-1.0, unet/config.json; the same network as
# Stability-AI/generative-models configs/inference/sd_xl_base.yaml (model_channels 320, channel_mult
# [1, 2, 4], transformer_depth [1, 2, 10] with no attention at the first level, num_head_channels
# 64, context_dim 2048, adm_in_channels 2816 = 1280 pooled text + 6 x 256 size/crop embeddings,
# linear projections in the transformers). 2,567,463,684 parameters.
SDXL_UNET = {
    "act_fn": "silu", "addition_embed_type": "text_time", "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": 256, "attention_head_dim": [5, 10, 20], "block_out_channels": [320, 640, 1280],
    "center_input_sample": False, "cross_attention_dim": 2048,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2,
    "mid_block_scale_factor": 1, "mid_block_type": "UNetMidBlock2DCrossAttn", "norm_eps": 1e-5,
    "norm_num_groups": 32, "out_channels": 4, "projection_class_embeddings_input_dim": 2816, "sample_size": 128,
    "transformer_layers_per_block": [1, 2, 10],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"], "use_linear_projection": True,
}

# The frozen parts, for the memory estimate only. VAE: the AutoencoderKL of both models' vae/config.json
# (SDXL's fp16-fix VAE, madebyollin/sdxl-vae-fp16-fix, has the same shapes).
VAE = {"act_fn": "silu", "block_out_channels": [128, 256, 512, 512], "in_channels": 3, "latent_channels": 4,
       "layers_per_block": 2, "norm_num_groups": 32, "out_channels": 3,
       "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4}
# text_encoder/config.json (CLIP ViT-L/14 text tower, both models) and SDXL's text_encoder_2/config.json
# (OpenCLIP ViT-bigG/14 text tower with its projection, CLIPTextModelWithProjection).
CLIP_L = {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12,
          "projection_dim": 768, "hidden_act": "quick_gelu", "vocab_size": 49408, "max_position_embeddings": 77}
CLIP_BIGG = {"hidden_size": 1280, "intermediate_size": 5120, "num_attention_heads": 20, "num_hidden_layers": 32,
             "projection_dim": 1280, "hidden_act": "gelu", "vocab_size": 49408, "max_position_embeddings": 77}


@dataclass
class ModelSpec:
    unet: dict
    latent: int                     # default latent side (SD1.5 at 512 px, SDXL at 1024 px)
    text_dim: int                   # width of encoder_hidden_states
    text_len: int = 77
    pooled_dim: int = 0             # SDXL: pooled text embedding (text_embeds)
    time_ids: int = 0               # SDXL: add_time_ids (original size, crop, target size)
    frozen: dict = field(default_factory=dict)   # name -> (kind, config), for the estimate


MODELS = {
    "sd15": ModelSpec(SD15_UNET, 64, 768, frozen={"vae": ("vae", VAE), "text_encoder": ("clip", CLIP_L)}),
    "sdxl": ModelSpec(SDXL_UNET, 128, 2048, pooled_dim=1280, time_ids=6,
                      frozen={"vae": ("vae", VAE), "text_encoder": ("clip", CLIP_L),
                              "text_encoder_2": ("clip_proj", CLIP_BIGG)}),
}

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
DPO_BETA = 5000.0      # Diffusion-DPO beta (SalesforceAIResearch/DiffusionDPO launchers: --beta_dpo 5000)


class Skip(Exception):
    """A configuration that cannot run here (e.g. bitsandbytes absent)."""


# ----------------------------------------------------------------------------- building blocks

def build_unet(spec: ModelSpec, device="cpu", dtype=torch.float32):
    from diffusers import UNet2DConditionModel
    with torch.device(device):
        unet = UNet2DConditionModel.from_config(spec.unet)
    return unet.to(dtype=dtype) if dtype != torch.float32 else unet


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def conditioning(spec: ModelSpec, n: int, device, dtype=torch.float32, gen=None) -> dict:
    """Random text conditioning of the real shapes for n images."""
    kw = {"encoder_hidden_states": torch.randn(n, spec.text_len, spec.text_dim, generator=gen).to(device, dtype)}
    if spec.pooled_dim:
        side = spec.latent * 8
        kw["added_cond_kwargs"] = {
            "text_embeds": torch.randn(n, spec.pooled_dim, generator=gen).to(device, dtype),
            # original size, crop top-left, target size (the SDXL pipeline's _get_add_time_ids)
            "time_ids": torch.tensor([[side, side, 0, 0, side, side]] * n, dtype=dtype, device=device)}
    return kw


def make_optimizer(name: str, params, lr: float = 1e-8):
    """adamw: torch AdamW; adamw8bit: bitsandbytes AdamW8bit (Skip when absent); adafactor: as
    Diffusion-DPO's SDXL training (train.py: transformers.Adafactor(lr, weight_decay, clip_threshold=1.0,
    scale_parameter=False, relative_step=False))."""
    params = list(params)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
    if name == "adamw8bit":
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise Skip("adamw8bit needs bitsandbytes (pip install -e '.[paper]'); not installed here") from None
        return bnb.optim.AdamW8bit(params, lr=lr, weight_decay=1e-2)
    if name == "adafactor":
        from transformers.optimization import Adafactor
        return Adafactor(params, lr=lr, weight_decay=1e-2, clip_threshold=1.0, scale_parameter=False,
                         relative_step=False, warmup_init=False)
    raise ValueError(f"unknown optimizer {name!r}; valid: adamw, adamw8bit, adafactor")


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision])


def per_sample_mse(pred, target):
    return (pred.float() - target.float()).pow(2).mean(dim=(1, 2, 3))


def dpo_loss(model_err, ref_err, beta: float = DPO_BETA):
    """Diffusion-DPO: errors ordered [winners; losers]; -log sigma(-beta/2 ((e_w - e_l) - (r_w - r_l)))."""
    mw, ml = model_err.chunk(2)
    rw, rl = ref_err.chunk(2)
    return -torch.nn.functional.logsigmoid(-0.5 * beta * ((mw - ml) - (rw - rl))).mean()


class DPOStep:
    """Policy, frozen reference, optimizer (and optional EMA) of one Diffusion-DPO step on `pairs` pairs."""

    def __init__(self, spec: ModelSpec, device, pairs=1, latent=None, precision="fp32", optimizer="adamw",
                 grad_checkpointing=False, ref_dtype="fp32", ema=False, seed=0):
        self.spec, self.device, self.precision = spec, torch.device(device), precision
        self.latent = latent or spec.latent
        torch.manual_seed(seed)
        self.policy = build_unet(spec, self.device).train()
        if grad_checkpointing:
            self.policy.enable_gradient_checkpointing()
        self.reference = copy.deepcopy(self.policy).requires_grad_(False).eval()
        if ref_dtype != "fp32":
            self.reference.to(DTYPES[ref_dtype])
        if grad_checkpointing:
            self.reference.disable_gradient_checkpointing()
        self.ref_dtype = DTYPES[ref_dtype]
        self.opt = make_optimizer(optimizer, self.policy.parameters())
        self.ema = [p.detach().clone() for p in self.policy.parameters()] if ema else None
        self.scaler = torch.amp.GradScaler(self.device.type) if precision == "fp16" else None
        g = torch.Generator().manual_seed(seed)
        c = spec.unet["in_channels"]
        # winners then losers; a pair shares its text
        self.latents = torch.randn(2 * pairs, c, self.latent, self.latent, generator=g).to(self.device)
        cond = conditioning(spec, pairs, self.device, gen=g)
        self.cond = _repeat2(cond)
        self.pairs, self.gen, self.last_loss = pairs, g, float("nan")

    def __call__(self) -> float:
        n = self.pairs
        noise = torch.randn((n,) + self.latents.shape[1:], generator=self.gen).to(self.device).repeat(2, 1, 1, 1)
        t = torch.randint(0, 1000, (n,), generator=self.gen).to(self.device).repeat(2)
        # DDPM forward process with SD's scaled-linear betas (0.00085 .. 0.012, 1000 steps)
        abar = _alphas_cumprod(self.device)[t].view(-1, 1, 1, 1)
        noisy = abar.sqrt() * self.latents + (1 - abar).sqrt() * noise
        with _autocast(self.device, self.precision):
            pred = self.policy(noisy, t, **self.cond).sample
            with torch.no_grad():
                rpred = self.reference(noisy.to(self.ref_dtype), t, **_cast(self.cond, self.ref_dtype)).sample
        loss = dpo_loss(per_sample_mse(pred, noise), per_sample_mse(rpred, noise))
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), 1.0)
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), 1.0)
            self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        if self.ema is not None:
            with torch.no_grad():
                torch._foreach_lerp_(self.ema, [p.detach() for p in self.policy.parameters()], 1 - 0.999)
        self.last_loss = float(loss.detach())
        return self.last_loss


def _repeat2(cond: dict) -> dict:
    out = {"encoder_hidden_states": cond["encoder_hidden_states"].repeat(2, 1, 1)}
    if "added_cond_kwargs" in cond:
        out["added_cond_kwargs"] = {k: v.repeat(2, 1) for k, v in cond["added_cond_kwargs"].items()}
    return out


def _cast(cond: dict, dtype) -> dict:
    out = {"encoder_hidden_states": cond["encoder_hidden_states"].to(dtype)}
    if "added_cond_kwargs" in cond:
        out["added_cond_kwargs"] = {k: v.to(dtype) for k, v in cond["added_cond_kwargs"].items()}
    return out


def _alphas_cumprod(device):
    # scaled_linear schedule of SD1.5 / SDXL scheduler_config.json: beta_start 0.00085, beta_end 0.012
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).float().to(device)


class Sampler:
    """One sampling batch: `images` latents, N DDIM steps, classifier-free guidance (the unconditional
    and conditional halves in one UNet batch of 2 x images), UNet only."""

    def __init__(self, spec: ModelSpec, device, images=1, latent=None, precision="fp32", steps=20, guidance=7.5,
                 unet=None, seed=0):
        from diffusers import DDIMScheduler
        self.device, self.precision, self.steps, self.guidance = torch.device(device), precision, steps, guidance
        weights = DTYPES[precision] if self.device.type == "cuda" else torch.float32
        torch.manual_seed(seed)
        self.unet = (unet or build_unet(spec, self.device, weights)).eval()
        # SD's scheduler_config.json values (both models): scaled_linear 0.00085..0.012, steps_offset 1
        self.sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                   clip_sample=False, set_alpha_to_one=False, steps_offset=1)
        g = torch.Generator().manual_seed(seed)
        lat = latent or spec.latent
        self.x0 = torch.randn(images, spec.unet["in_channels"], lat, lat, generator=g).to(self.device)
        uncond, cond = conditioning(spec, images, self.device, gen=g), conditioning(spec, images, self.device, gen=g)
        self.cond = {"encoder_hidden_states": torch.cat([uncond["encoder_hidden_states"], cond["encoder_hidden_states"]])}
        if "added_cond_kwargs" in cond:
            self.cond["added_cond_kwargs"] = {k: torch.cat([uncond["added_cond_kwargs"][k], cond["added_cond_kwargs"][k]])
                                              for k in cond["added_cond_kwargs"]}
        p = next(self.unet.parameters())
        self.cond = _cast(self.cond, p.dtype)
        self.images = images

    @torch.no_grad()
    def __call__(self):
        self.sched.set_timesteps(self.steps, device=self.device)
        x = self.x0 * self.sched.init_noise_sigma
        dtype = next(self.unet.parameters()).dtype
        for t in self.sched.timesteps:
            inp = self.sched.scale_model_input(torch.cat([x, x]), t)
            with _autocast(self.device, self.precision):
                eps = self.unet(inp.to(dtype), t, **self.cond).sample.float()
            u, c = eps.chunk(2)
            x = self.sched.step(u + self.guidance * (c - u), t, x).prev_sample
        return x


# ----------------------------------------------------------------------------- measurement

def count_flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as fc:
        fn()
    return int(fc.get_total_flops())


def _rss() -> int:
    try:
        import psutil
        return psutil.Process().memory_info().rss
    except ImportError:                                   # Linux without psutil
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Peak memory of a block. CUDA: max_memory_allocated after reset_peak_memory_stats (all live
    tensors, weights included). CPU: peak resident set size sampled every 5 ms minus the resident
    set at entry (what the block added)."""

    def __init__(self, device):
        self.device = torch.device(device)
        self.peak = self.start = 0
        self.method = ("torch.cuda.max_memory_allocated (all tensors, weights included)" if self.device.type == "cuda"
                       else "peak RSS (sampled every 5 ms) minus RSS at the start of the part (the part builds its "
                            "models, so their weights are included)")

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
        else:
            self.start = self.peak = _rss()
            self._stop = threading.Event()
            self._t = threading.Thread(target=self._poll, daemon=True)
            self._t.start()
        return self

    def _poll(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._t.join()
            self.peak = max(self.peak, _rss())

    @property
    def reported(self) -> int:
        return self.peak if self.device.type == "cuda" else self.peak - self.start


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, steps: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(steps):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        out.append(time.perf_counter() - t)
    return out


def bench_train(spec: ModelSpec, device, args) -> dict:
    mem = PeakMemory(device)
    if mem.device.type == "cuda":
        torch.cuda.empty_cache()
    with mem:
        step = DPOStep(spec, device, pairs=args.pairs, latent=args.latent, precision=args.precision,
                       optimizer=args.optimizer, grad_checkpointing=args.grad_checkpointing,
                       ref_dtype=args.ref_dtype, ema=args.ema)
        times = timed(step, device, args.steps, args.warmup)
    flops = count_flops(step) if args.flops else None     # one more step, untimed
    sec = statistics.median(times)
    out = {"steps_per_s": 1 / sec, "s_per_step": sec, "step_times_s": times, "flops_per_step": flops,
           "tflops_per_s": flops / sec / 1e12 if flops else None, "peak_memory_bytes": mem.reported, "peak_memory_method": mem.method,
           "params": n_params(step.policy), "last_loss": step.last_loss}
    del step
    return out


def bench_sample(spec: ModelSpec, device, args) -> dict:
    mem = PeakMemory(device)
    with mem:
        s = Sampler(spec, device, images=args.pairs, latent=args.latent, precision=args.precision,
                    steps=args.sample_steps, guidance=args.guidance)
        times = timed(s, device, max(1, args.steps // 2), min(1, args.warmup))
    # FLOPs of one guided UNet call, times the steps (FlopCounterMode over the whole batch is the same
    # count, N times slower on a CPU)
    s.steps, n = 1, args.sample_steps
    flops = count_flops(s) * n if args.flops else None
    s.steps = n
    sec = statistics.median(times)
    return {"images_per_s": args.pairs / sec, "s_per_batch": sec, "batch_times_s": times, "images": args.pairs,
            "denoising_steps": n, "unet_forwards_per_step": 2 * args.pairs, "flops_per_batch": flops,
            "tflops_per_s": flops / sec / 1e12 if flops else None, "peak_memory_bytes": mem.reported, "peak_memory_method": mem.method,
            "note": "UNet only: no text encoding, no VAE decode"}


# ----------------------------------------------------------------------------- memory estimate

@functools.lru_cache(maxsize=None)
def _meta_counts_cached(unet_json: str, frozen_json: str) -> dict:
    return _meta_counts(ModelSpec(json.loads(unet_json), 0, 0, frozen={k: tuple(v) for k, v in json.loads(frozen_json).items()}),
                        cached=False)


def _meta_counts(spec: ModelSpec, cached: bool = True) -> dict:
    """Parameter shapes of the UNet and the frozen parts, instantiated on the meta device (no memory)."""
    if cached:
        return _meta_counts_cached(json.dumps(spec.unet, sort_keys=True), json.dumps(spec.frozen, sort_keys=True))
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(spec.unet)
        frozen = {}
        for name, (kind, cfg) in spec.frozen.items():
            if kind == "vae":
                frozen[name] = n_params(AutoencoderKL.from_config(cfg))
            else:
                cls = CLIPTextModel if kind == "clip" else CLIPTextModelWithProjection
                frozen[name] = n_params(cls(CLIPTextConfig(**cfg)))
    return {"unet_shapes": [tuple(p.shape) for p in unet.parameters()], "frozen": frozen}


def optimizer_state_bytes(name: str, shapes: list[tuple], state_bytes: int = 4) -> int:
    """Bytes of optimizer state for parameters of these shapes.
    adamw: exp_avg + exp_avg_sq, each the parameter's size (torch.optim.AdamW; fp32 for fp32 params).
    adamw8bit: bitsandbytes Optimizer2State: two uint8 states plus two fp32 absmax per block of 256
      for tensors of >= 4096 elements (min_8bit_size), two fp32 states below that.
    adafactor: transformers Adafactor with beta1=None (no first moment): a tensor of >= 2 dims keeps
      exp_avg_sq_row (shape[:-1]) and exp_avg_sq_col (shape[:-2] + shape[-1:]); a vector keeps
      exp_avg_sq of its own size. Scalars (step, RMS) are not counted."""
    total = 0
    for s in shapes:
        n = math.prod(s)
        if name == "adamw":
            total += 2 * n * state_bytes
        elif name == "adamw8bit":
            total += 2 * n + 2 * 4 * math.ceil(n / 256) if n >= 4096 else 2 * n * 4
        elif name == "adafactor":
            total += (math.prod(s[:-1]) + math.prod(s[:-2] + s[-1:])) * state_bytes if len(s) >= 2 else n * state_bytes
        else:
            raise ValueError(f"unknown optimizer {name!r}")
    return total


@dataclass
class Savers:
    label: str
    mixed: bool = False            # autocast; the frozen reference, VAE and text encoders in half
    checkpointing: bool = False
    optimizer: str = "adamw"
    ema: bool = True


SAVER_STEPS = [
    Savers("fp32 baseline (fp32 policy, reference, EMA, VAE, text encoders; AdamW)"),
    Savers("+ mixed precision, frozen reference/VAE/encoders in half", mixed=True),
    Savers("+ gradient checkpointing", mixed=True, checkpointing=True),
    Savers("+ 8-bit AdamW", mixed=True, checkpointing=True, optimizer="adamw8bit"),
    Savers("+ Adafactor instead of 8-bit AdamW", mixed=True, checkpointing=True, optimizer="adafactor"),
    Savers("+ EMA off", mixed=True, checkpointing=True, optimizer="adafactor", ema=False),
]


def estimate_components(shapes: list[tuple], frozen_params: int, savers: Savers, activation_bytes: int = 0) -> dict:
    """Bytes of each component of one DPO step. The trainable policy keeps fp32 master weights and
    fp32 gradients in every row (autocast casts on the fly; its half copies are in the activations);
    the reference, VAE and text encoders are fp32, or 2 bytes per parameter with `mixed`."""
    p = sum(math.prod(s) for s in shapes)
    half = 2 if savers.mixed else 4
    comp = {"policy_weights": 4 * p, "gradients": 4 * p,
            "optimizer_state": optimizer_state_bytes(savers.optimizer, shapes),
            "reference": half * p, "ema": 4 * p if savers.ema else 0,
            "vae_and_text_encoders": half * frozen_params,
            # autocast's half copies of the fp32 policy weights, cached for the forward and saved for the backward
            "autocast_weight_copies": 2 * p if savers.mixed else 0, "activations": int(activation_bytes)}
    comp["total"] = sum(comp.values())
    return comp


def saved_activation_bytes(unet, x, t, cond, precision="fp32", checkpointing=False) -> int:
    """Bytes of the distinct tensors autograd keeps for the backward of one training forward, parameters
    excluded (counted by storage, so views and repeated saves of one tensor count once). These are
    the activations a training step holds at the start of its backward, the peak of the step's
    activation memory.

    With gradient checkpointing (diffusers checkpoints each resnet and transformer block with
    torch.utils.checkpoint, non-reentrant) the count is the sum of
      - what autograd keeps outside the checkpointed blocks (the hook sees only those tensors:
        inside a block torch's own checkpoint hooks take over),
      - the blocks' inputs, which each checkpoint holds to recompute its block, and
      - the largest block's own saved tensors, live while that block is recomputed in the backward
        (measured by running each block once more, uncheckpointed, under the same counting hook)."""
    params = {p.untyped_storage().data_ptr() for p in unet.parameters()}

    def counter(seen):
        def pack(tensor):
            st = tensor.untyped_storage()
            ptr = st.data_ptr()
            if ptr not in params and ptr not in seen:
                seen[ptr] = st.nbytes()
            return tensor
        return pack

    seen: dict[int, int] = {}
    held: dict[int, int] = {}
    largest = [0]

    def ckpt(module, *args):
        for a in args:
            if isinstance(a, torch.Tensor) and a.untyped_storage().data_ptr() not in params:
                held[a.untyped_storage().data_ptr()] = a.untyped_storage().nbytes()
        inner: dict[int, int] = {}
        with torch.autograd.graph.saved_tensors_hooks(counter(inner), lambda t: t):
            module(*args)                                  # measurement only: the block once more
        largest[0] = max(largest[0], sum(inner.values()))
        return torch.utils.checkpoint.checkpoint(module.__call__, *args, use_reentrant=False)

    unet.train()
    if checkpointing:
        unet.enable_gradient_checkpointing(gradient_checkpointing_func=ckpt)
    try:
        with torch.autograd.graph.saved_tensors_hooks(counter(seen), lambda t: t), _autocast(x.device, precision):
            out = unet(x, t, **cond).sample
    finally:
        if checkpointing:
            unet.disable_gradient_checkpointing()
    del out
    extra = sum(v for k, v in held.items() if k not in seen) + largest[0]
    return sum(seen.values()) + extra


def measure_activations(spec: ModelSpec, latents: list[int], images: int = 2) -> dict:
    """Activation bytes of one policy forward on `images` images at small latent sides, fp32 and
    bf16, with and without gradient checkpointing (saved_activation_bytes); extrapolated to the
    model's latent by a least-squares line in latent area through the measured sizes (attention runs
    through SDPA, whose CPU and GPU kernels keep no L x L matrix for the backward, so the saved
    tensors grow in proportion to the area; the line's intercept is the part that does not grow,
    e.g. the text conditioning's keys and values).
    The bf16 modes run the model with bf16 weights and inputs (no autocast): autocast would hold
    bf16 copies of the fp32 weights as well, which the estimate counts apart (autocast_weight_copies),
    and on a CPU it would need fp32 and bf16 weights at once (15 GB for SDXL). Under autocast a few
    ops (normalisations) run in fp32, so the bf16 figures are a slight underestimate."""
    torch.manual_seed(0)
    unet = build_unet(spec, "cpu")
    out = {"latents": latents, "images": images, "target_latent": spec.latent, "measured": {}, "extrapolated": {},
           "intercept": {}, "bytes_per_latent_pixel": {}}
    for mode in ("fp32", "fp32+ckpt", "bf16", "bf16+ckpt"):
        prec, ck = mode.split("+")[0], mode.endswith("ckpt")
        dtype = DTYPES[prec]
        if next(unet.parameters()).dtype != dtype:
            unet.to(dtype)
        vals = []
        for lat in latents:
            g = torch.Generator().manual_seed(lat)
            x = torch.randn(images, spec.unet["in_channels"], lat, lat, generator=g).to(dtype)
            t = torch.full((images,), 500)
            cond = _cast(conditioning(spec, images, "cpu", gen=g), dtype)
            vals.append(saved_activation_bytes(unet, x, t, cond, "fp32", ck))
        areas = [lat * lat for lat in latents]
        if len(latents) > 1:
            ma, mv = statistics.mean(areas), statistics.mean(vals)
            slope = sum((a - ma) * (v - mv) for a, v in zip(areas, vals)) / sum((a - ma) ** 2 for a in areas)
            icpt = mv - slope * ma
        else:
            slope, icpt = vals[0] / areas[0], 0.0
        out["measured"][mode] = vals
        out["intercept"][mode] = icpt
        out["bytes_per_latent_pixel"][mode] = slope
        out["extrapolated"][mode] = int(icpt + slope * spec.latent ** 2)
        print(f"activations {mode}: measured {vals} at latents {latents} -> {out['extrapolated'][mode] / 1e9:.2f} GB "
              f"at {spec.latent}", flush=True)
    return out


def estimate(model: str, act_latents: list[int] | None, pairs: int = 1) -> dict:
    spec = MODELS[model]
    counts = _meta_counts(spec)
    shapes, frozen = counts["unet_shapes"], sum(counts["frozen"].values())
    acts = measure_activations(spec, act_latents, 2 * pairs) if act_latents else None
    rows = []
    for s in SAVER_STEPS:
        mode = ("bf16" if s.mixed else "fp32") + ("+ckpt" if s.checkpointing else "")
        a = acts["extrapolated"][mode] if acts else 0
        rows.append({"savers": s.label, **asdict(s), **estimate_components(shapes, frozen, s, a)})
    return {"model": model, "unet_params": sum(math.prod(s) for s in shapes), "frozen_params": counts["frozen"],
            "latent": spec.latent, "pairs": pairs, "activations": acts, "rows": rows}


# ----------------------------------------------------------------------------- CLI

def _gb(b) -> str:
    return f"{b / 1e9:.2f}"


def _g(f) -> str:
    return "-" if f is None else f"{f / 1e9:.1f}"


def _t(f) -> str:
    return "-" if f is None else f"{f:.4f}"


def print_estimate(res: dict) -> None:
    print(f"{res['model']}: UNet {res['unet_params']:,} parameters; frozen {res['frozen_params']}; "
          f"latent {res['latent']}x{res['latent']}, {res['pairs']} pair(s); GB = 1e9 bytes")
    cols = ["policy_weights", "gradients", "optimizer_state", "reference", "ema", "vae_and_text_encoders",
            "autocast_weight_copies", "activations", "total"]
    print("| savers | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for r in res["rows"]:
        print(f"| {r['savers']} | " + " | ".join(_gb(r[c]) for c in cols) + " |")


def run(args) -> dict:
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("perf: --device cuda but no CUDA device is available")
    spec = MODELS[args.model]
    if args.latent is None:
        args.latent = spec.latent
    res = {"model": args.model, "device": device, "device_name": torch.cuda.get_device_name(device) if device == "cuda"
           else platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
           "torch": torch.__version__, "config": {k: v for k, v in vars(args).items() if k not in ("out",)}}
    for part in args.parts.split(","):
        try:
            res[part] = (bench_train if part == "train" else bench_sample)(spec, device, args)
        except Skip as e:
            print(f"skipped {part}: {e}")
            res[part] = {"skipped": str(e)}
    return res


def print_run(res: dict) -> None:
    c = res["config"]
    print(f"{res['model']} on {res['device']} ({res['device_name']}, {res['threads']} threads), precision "
          f"{c['precision']}, latent {c['latent']}, {c['pairs']} pair(s)/image(s), optimizer {c['optimizer']}, "
          f"grad checkpointing {c['grad_checkpointing']}, reference {c['ref_dtype']}, EMA {c['ema']}")
    print("| part | rate | s | GFLOP | TFLOP/s | peak memory GB |")
    print("|---|---|---|---|---|---|")
    if "train" in res and "skipped" not in res["train"]:
        r = res["train"]
        print(f"| DPO step | {r['steps_per_s']:.4f} steps/s | {r['s_per_step']:.2f} | {_g(r['flops_per_step'])} | "
              f"{_t(r['tflops_per_s'])} | {_gb(r['peak_memory_bytes'])} |")
    if "sample" in res and "skipped" not in res["sample"]:
        r = res["sample"]
        print(f"| sampling ({r['denoising_steps']} steps, CFG) | {r['images_per_s']:.4f} images/s | {r['s_per_batch']:.2f} | "
              f"{_g(r['flops_per_batch'])} | {_t(r['tflops_per_s'])} | {_gb(r['peak_memory_bytes'])} |")
    print(f"peak memory: {res.get('train', res.get('sample', {})).get('peak_memory_method', '')}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Real-size UNet throughput and memory (issue 19)")
    p.add_argument("--model", choices=sorted(MODELS), required=True)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--precision", default="fp32", choices=sorted(DTYPES))
    p.add_argument("--latent", type=int, default=None, help="latent side (default: 64 for sd15, 128 for sdxl)")
    p.add_argument("--pairs", type=int, default=1, help="pairs per DPO step; images per sampling batch")
    p.add_argument("--steps", type=int, default=3, help="timed DPO steps (sampling: half as many batches)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--optimizer", default="adamw", choices=["adamw", "adamw8bit", "adafactor"])
    p.add_argument("--grad-checkpointing", action="store_true")
    p.add_argument("--ref-dtype", default="fp32", choices=sorted(DTYPES), help="frozen reference weights")
    p.add_argument("--ema", action="store_true", help="keep an fp32 EMA copy of the policy, updated every step")
    p.add_argument("--sample-steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=7.5)
    p.add_argument("--parts", default="train,sample")
    p.add_argument("--estimate", action="store_true", help="memory estimate with each saver on; no benchmark")
    p.add_argument("--act-latents", default="16,24",
                   help="latent sides at which --estimate measures activations on the CPU ('' to skip)")
    p.add_argument("--no-flops", dest="flops", action="store_false",
                   help="skip the FLOP count (one more untimed step); the count is the same for every precision")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None, help="JSON output (default benchmarks/measured/<date>-perf-<model>-...json)")
    return p


def main(argv=None) -> dict:
    args = parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.estimate:
        lats = [int(x) for x in args.act_latents.split(",") if x.strip()]
        res = estimate(args.model, lats or None, args.pairs)
        print_estimate(res)
        name = f"{time.strftime('%Y-%m-%d')}-estimate-{args.model}.json"
    else:
        res = run(args)
        print_run(res)
        name = (f"{time.strftime('%Y-%m-%d')}-perf-{args.model}-{res['device']}-{args.precision}-lat{args.latent}"
                f"-{args.optimizer}{'-ckpt' if args.grad_checkpointing else ''}.json")
    out = Path(args.out) if args.out else Path(__file__).resolve().parent / "measured" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1, default=str))
    print(f"wrote {out}")
    return res


if __name__ == "__main__":
    main()
