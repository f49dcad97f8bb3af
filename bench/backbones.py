"""Backbones: the embedded tiny-sd15 / tiny-sd21 / tiny-sdxl and the real SD1.5 / SD2.1 / SDXL
loaders, on one interface.

A backbone turns a config into a diffusers pipeline plus the few facts the trainer and sampler
need (prediction type, resolution, guidance, steps). Everything downstream talks to
`Backbone.encode_prompts`, `Backbone.predict`, `Backbone.target` and `Backbone.noise_scheduler`,
so methods never branch on the backbone.

Each tiny backbone mirrors its real sibling's mechanics with the same classes and an autoencoder
with `AutoencoderKL`'s interface:
- tiny-sd15: `CLIPTextModel` (quick_gelu) + `UNet2DConditionModel`, epsilon prediction,
  `StableDiffusionPipeline`;
- tiny-sd21: v-prediction, a gelu text encoder whose depth is the feature layer (SD2's checkpoint
  keeps OpenCLIP-H's first 23 of 24 layers: its "penultimate" features are the saved encoder's
  last), linear attention projections, `StableDiffusionPipeline`;
- tiny-sdxl: `CLIPTextModel` + `CLIPTextModelWithProjection` with two tokenizers, penultimate
  hidden states of both concatenated, pooled embeddings and `add_time_ids` through
  `addition_embed_type="text_time"`, `StableDiffusionXLPipeline`.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from bench import world as W
from bench.lazy import torch  # imported on first use: the config path needs no torch
from bench.registry import BACKBONES, BenchError
from bench.files import atomic

log = logging.getLogger(__name__)
ASSETS = Path(__file__).parent / "assets"
PIPELINE_DIR = "pipeline"


# ----------------------------------------------------------------------------- tiny architecture

@dataclass
class TinyArch:
    """Architecture of a tiny backbone. Widths are chosen so pretraining fits on 2 CPU cores."""
    factor: int = 2                         # space-to-depth: 32x32x3 -> 16x16x12 latents
    block_out_channels: list[int] = field(default_factory=lambda: [32, 64, 64])
    layers_per_block: int = 1
    attention_head_dim: int = 4             # diffusers: in effect the number of heads
    norm_num_groups: int = 8
    text_hidden: int = 64
    text_layers: int = 2
    text_heads: int = 4
    max_length: int = 12                    # 7 words + begin/end tokens, padded
    prediction_type: str = "epsilon"        # SD1.5, SD2.1-base, SDXL: epsilon; SD2.1 (768): v
    text_act: str = "quick_gelu"            # CLIP ViT-L (SD1.5, SDXL); OpenCLIP-H (SD2.x): gelu
    use_linear_projection: bool = False     # SD2.x and SDXL UNets: True
    text_hidden_2: int | None = None        # SDXL's second encoder (CLIPTextModelWithProjection)
    addition_time_embed_dim: int | None = None   # SDXL: add_time_ids embedding width (256 real)

    @property
    def is_xl(self) -> bool:
        return self.text_hidden_2 is not None


def tiny_arch(name: str) -> TinyArch:
    """The default architecture of each tiny backbone."""
    if name == "tiny-sd15":
        return TinyArch()
    if name == "tiny-sd21":
        return TinyArch(prediction_type="v_prediction", text_act="gelu", use_linear_projection=True)
    if name == "tiny-sdxl":
        # two 32-wide encoders: the UNet's cross-attention width (their concatenation) stays 64
        return TinyArch(text_hidden=32, text_hidden_2=32, addition_time_embed_dim=8,
                        use_linear_projection=True)
    raise BenchError(f"unknown tiny backbone {name!r}; valid: tiny-sd15, tiny-sd21, tiny-sdxl")


# The shipped base weights' recipe has three phases, each continuing from the one before
# (`init_from` nests the previous phase's config, so its hash covers the whole chain).
# Phase 1: plain epsilon-MSE from random initialisation.
PHASE1 = {"steps": 4000, "batch_size": 64, "lr": 1.5e-3, "warmup": 200, "weight_decay": 0.0,
          "ema_decay": 0.999, "grad_clip": 1.0, "empty_prompt_prob": 0.1, "corpus_size": 30000,
          "seed": 0, "eval_seeds": 4, "snr_gamma": None, "v_weight_cap": None, "init_from": None,
          "warm_start": None}
# Phase 2: 2000 Min-SNR steps on a fresh corpus. After phases 1-2 the base sampled at chance on
# colour and background: a shuffled prompt raised the denoising error at t=900 by only ~11%.
PHASE2 = {**PHASE1, "steps": 2000, "lr": 5e-4, "warmup": 50, "seed": 1, "snr_gamma": 5.0,
          "init_from": PHASE1}


@dataclass
class PretrainConfig:
    """Pretraining on the defective shapes corpus. The defaults are phase 3 of the shipped base
    weights' recipe: epsilon loss weighted toward high noise (`v_weight_cap`), continuing from
    PHASE2 on a fresh corpus (seed 2).

    Why phase 3: an epsilon model's error at high noise hardly depends on the prompt (the x0 error
    enters the epsilon error scaled by sqrt(SNR), 0.15 at t=900), so plain or Min-SNR epsilon
    training learns the prompt slowly. 600 steps of the phase-3 weighting from PHASE2 raised colour
    accuracy of samples from 31% to 60% and background from 16% to 48% (54 eval prompts x 2 seeds,
    measured while building the recipe; see README).
    """
    steps: int = 2000
    batch_size: int = 64
    lr: float = 5e-4
    warmup: int = 50
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    empty_prompt_prob: float = 0.1          # caption dropout, for classifier-free guidance
    corpus_size: int = 30000
    seed: int = 2
    eval_seeds: int = 4                     # samples per held-out eval prompt for the report
    # Min-SNR-gamma loss weighting (Hang et al. 2023, arXiv 2303.09556; diffusers
    # train_text_to_image.py --snr_gamma, 5.0 recommended): per-sample weight min(SNR, g)/SNR for
    # epsilon targets. It down-weights the low-noise steps. None: off.
    snr_gamma: float | None = None
    # Per-sample weight min(1/abar_t, cap) on the epsilon loss. Uncapped this is the v-prediction
    # loss written in epsilon units (|v - v_hat|^2 = |eps - eps_hat|^2 / abar_t; v from Salimans &
    # Ho 2022, arXiv 2202.00512, whose "SNR+1" weighting 1 + SNR^-1 = 1/abar is the same): weight
    # 1 at low noise, growing where the prompt decides colour and layout. The cap (our choice; the
    # cosine schedule has abar_999 ~ 2e-9) keeps the last steps from dominating. None: off.
    v_weight_cap: float | None = 100.0
    # Continue from the pipeline of another recipe (nested in this one's hash). None: from scratch.
    init_from: dict | None = field(default_factory=lambda: dict(PHASE2))
    # With init_from None: start from the weights in bench/assets/<warm_start> (every tensor whose
    # size fits; their checksums enter the recipe), e.g. the shipped "tiny-sd15", whatever world and
    # recipe made them (docs/world.md fine-tunes them on candidate worlds). None: random init.
    warm_start: str | None = None


def loss_weight(pre: "PretrainConfig", alphas_cumprod: torch.Tensor, t: torch.Tensor,
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


SPECIAL = ["<pad>", "<bos>", "<eos>", "<unk>"]


def make_tokenizer(max_length: int):
    """Word-level tokenizer over the grammar, built offline, saved with the pipeline.

    Begin/end tokens make an empty prompt (caption dropout) two real tokens, never all padding
    under CLIP's causal mask (feasibility note).
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIAL + W.vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", vocab["<bos>"]), ("<eos>", vocab["<eos>"])])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
        unk_token="<unk>", model_max_length=max_length, padding_side="right")


def _text_encoder(cls, arch: TinyArch, hidden: int, tokenizer):
    from transformers import CLIPTextConfig
    return cls(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=arch.text_layers, num_attention_heads=arch.text_heads,
        max_position_embeddings=arch.max_length, hidden_act=arch.text_act,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, projection_dim=hidden))


def build_tiny(arch: TinyArch, image_size: int, seed: int = 0):
    """A randomly initialised tiny pipeline: `StableDiffusionPipeline`, or
    `StableDiffusionXLPipeline` when the architecture has a second text encoder."""
    from diffusers import (DDIMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextModel, CLIPTextModelWithProjection
    from bench.autoencoder import SpaceToDepthAutoencoder

    tokenizer = make_tokenizer(arch.max_length)
    torch.manual_seed(seed)
    text_encoder = _text_encoder(CLIPTextModel, arch, arch.text_hidden, tokenizer)
    xl = {}
    if arch.is_xl:
        if not arch.addition_time_embed_dim:
            raise BenchError("a tiny SDXL architecture needs arch.addition_time_embed_dim")
        xl = dict(text_encoder_2=_text_encoder(CLIPTextModelWithProjection, arch, arch.text_hidden_2, tokenizer),
                  tokenizer_2=make_tokenizer(arch.max_length))
    vae = SpaceToDepthAutoencoder(factor=arch.factor)
    lat_c, lat_hw = 3 * arch.factor ** 2, image_size // arch.factor
    n = len(arch.block_out_channels)
    added = {}
    if arch.is_xl:
        # SDXL: pooled text embedding (text_encoder_2's projection) + 6 micro-conditions
        # (original size, crop top-left, target size), each embedded in addition_time_embed_dim
        added = dict(addition_embed_type="text_time", addition_time_embed_dim=arch.addition_time_embed_dim,
                     projection_class_embeddings_input_dim=arch.text_hidden_2 + 6 * arch.addition_time_embed_dim)
    torch.manual_seed(seed + 1)
    unet = UNet2DConditionModel(
        sample_size=lat_hw, in_channels=lat_c, out_channels=lat_c,
        block_out_channels=tuple(arch.block_out_channels), layers_per_block=arch.layers_per_block,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",),
        cross_attention_dim=arch.text_hidden + (arch.text_hidden_2 or 0),
        attention_head_dim=arch.attention_head_dim, norm_num_groups=arch.norm_num_groups,
        use_linear_projection=arch.use_linear_projection, **added)
    # Cosine schedule (Nichol & Dhariwal) as in the feasibility prototype; SD1.5 itself uses
    # scaled_linear, which at 1000 steps leaves too much signal at t=T for 32x32 images. One
    # sampler (DDIM, 20 steps) for every tiny backbone keeps their comparisons like for like.
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                              prediction_type=arch.prediction_type, clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    if arch.is_xl:
        # force_zeros_for_empty_prompt=False: the unconditional branch is the encoded empty
        # prompt, as caption dropout trains it (real SDXL zeroes it; our choice for the tiny one)
        return StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                         unet=unet, scheduler=scheduler, force_zeros_for_empty_prompt=False,
                                         add_watermarker=False, **xl)
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                   unet=unet, scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)


def load_pipeline_dir(path: Path, dtype=None, key: str = "backbone.path", vae=None):
    """Load a pipeline saved with `save_pretrained` (local files only); `key` is the config key
    that names the directory, for the error line; `vae` replaces the saved one; dtype None: float32."""
    from diffusers import DiffusionPipeline
    from bench.autoencoder import SpaceToDepthAutoencoder
    dtype = torch.float32 if dtype is None else dtype
    index = Path(path) / "model_index.json"
    if not index.is_file():
        raise BenchError(f"no pipeline at {path} (model_index.json missing); "
                         f"pass {key}=<dir saved with save_pretrained>")
    kwargs = {} if vae is None else {"vae": vae}
    if "safety_checker" in json.loads(index.read_text()):
        # the safety checker is off on every loading path (load_real's cache path too): it blacks
        # out images it flags, which would enter the scores; it is neither loaded nor run
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    if vae is None and json.loads(index.read_text()).get("vae", [None, None])[1] == "SpaceToDepthAutoencoder":
        # parameter-free: nothing to load but its config
        kwargs["vae"] = SpaceToDepthAutoencoder.from_config(
            SpaceToDepthAutoencoder.load_config(Path(path) / "vae"))
    pipe = DiffusionPipeline.from_pretrained(path, local_files_only=True, dtype=dtype, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ----------------------------------------------------------------------------- the interface

@dataclass
class Backbone:
    """What the trainer and sampler need from a loaded SD1.5/SD2.1-style backbone."""
    name: str
    pipe: object
    resolution: int
    guidance_scale: float
    num_inference_steps: int

    @property
    def prediction_type(self) -> str:
        return self.pipe.scheduler.config.prediction_type

    @property
    def unet(self):
        return self.pipe.unet

    @functools.cached_property
    def noise_scheduler(self):
        """The forward process for training: a DDPMScheduler from the pipeline's scheduler config,
        whatever the sampler (DiffusionDPO train.py and the diffusers ports do the same)."""
        from diffusers import DDPMScheduler
        return DDPMScheduler.from_config(self.pipe.scheduler.config)

    @property
    def text_encoders(self) -> list:
        return [self.pipe.text_encoder]

    def _ids(self, tokenizer, prompts: list[str], encoder) -> torch.Tensor:
        """Token ids on the encoder's device."""
        return tokenizer(prompts, padding="max_length", truncation=True, max_length=tokenizer.model_max_length,
                         return_tensors="pt").input_ids.to(encoder.device)

    def encode_prompts(self, prompts: list[str], grad: bool = False) -> dict[str, torch.Tensor]:
        """Conditioning of each prompt as a flat dict of batch-first tensors, computed as the
        pipeline computes it for sampling (tested against `pipe.encode_prompt`)."""
        with torch.set_grad_enabled(grad):
            enc = self.pipe.text_encoder
            return {"encoder_hidden_states": enc(self._ids(self.pipe.tokenizer, prompts, enc))[0]}

    def predict(self, unet, noisy: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
        return unet(noisy, t, encoder_hidden_states=cond["encoder_hidden_states"]).sample

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] -> scaled latents, float32 on the VAE's device (the VAE
        itself may be held in half precision: bench/devices.py)."""
        vae = self.pipe.vae
        with torch.no_grad():
            x = (images * 2 - 1).to(device=vae.device, dtype=vae.dtype)
            return vae.encode(x).latent_dist.sample().float() * vae.config.scaling_factor

    def target(self, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The regression target the scheduler's prediction type asks for: epsilon, or
        v = sqrt(abar_t) * eps - sqrt(1 - abar_t) * x0 (Salimans & Ho 2022, arXiv 2202.00512)."""
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "v_prediction":
            return self.noise_scheduler.get_velocity(latents, noise, t)
        raise BenchError(f"unsupported prediction_type {self.prediction_type!r}; "
                         "use a scheduler with epsilon or v_prediction")


class XLBackbone(Backbone):
    """SDXL: two text encoders, pooled embeddings and micro-conditioning (`add_time_ids`)."""

    @property
    def text_encoders(self) -> list:
        return [self.pipe.text_encoder, self.pipe.text_encoder_2]

    def time_ids(self, n: int) -> torch.Tensor:
        """(original_size, crops_coords_top_left, target_size) = (res, res, 0, 0, res, res), the
        fixed value of the official DiffusionDPO SDXL training (methods.md) and of the pipeline's
        defaults at sampling (`_get_add_time_ids` with original = target = (height, width))."""
        r = float(self.resolution)
        return torch.tensor([[r, r, 0.0, 0.0, r, r]]).repeat(n, 1)

    def encode_prompts(self, prompts: list[str], grad: bool = False) -> dict[str, torch.Tensor]:
        """As `StableDiffusionXLPipeline.encode_prompt` (clip_skip None): the penultimate hidden
        states of both encoders, concatenated; the pooled output of the second."""
        pipe = self.pipe
        with torch.set_grad_enabled(grad):
            one = pipe.text_encoder(self._ids(pipe.tokenizer, prompts, pipe.text_encoder), output_hidden_states=True)
            two = pipe.text_encoder_2(self._ids(pipe.tokenizer_2, prompts, pipe.text_encoder_2),
                                      output_hidden_states=True)
            return {"encoder_hidden_states": torch.cat([one.hidden_states[-2], two.hidden_states[-2]], dim=-1),
                    "text_embeds": two[0], "time_ids": self.time_ids(len(prompts)).to(two[0].device)}

    def predict(self, unet, noisy: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
        return unet(noisy, t, encoder_hidden_states=cond["encoder_hidden_states"],
                    added_cond_kwargs={"text_embeds": cond["text_embeds"], "time_ids": cond["time_ids"]}).sample


def make_backbone(name: str, pipe, resolution: int, guidance_scale: float, num_inference_steps: int) -> Backbone:
    """The Backbone wrapper that fits the pipeline (SDXL pipelines have a second text encoder)."""
    cls = XLBackbone if getattr(pipe, "text_encoder_2", None) is not None else Backbone
    return cls(name, pipe, resolution, guidance_scale, num_inference_steps)


@dataclass
class TinyBackboneConfig:
    name: str = "tiny-sd15"
    weights: str = "shipped"               # shipped | pretrain | <path to a saved pipeline>
    arch: TinyArch = field(default_factory=TinyArch)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    # 7.5 as SD1.5 (Diffusion-DPO quick_samples.ipynb). Measured on the shipped tiny-sd15 base
    # (54 eval prompts x 2 seeds): fully correct 6.5% at guidance 3, 19% at 5, 24% at 7.5.
    guidance_scale: float = 7.5
    # 20 DDIM steps (the feasibility prototype used 25) keep sampling cheap (no paper covers a
    # 1.7M-parameter UNet)
    num_inference_steps: int = 20


# tiny-sd21 and tiny-sdxl start from the shipped tiny-sd15 weights (every tensor whose size fits;
# the rest, e.g. SDXL's text encoders and add_embedding, from random init) and are trained with
# tiny-sd15's phase-3 weighting. Our choice: pretraining each from scratch costs ~1.5 h on 2 cores.
SIBLING_PRETRAIN = {**PHASE2, "steps": 2000, "seed": 3, "snr_gamma": None, "v_weight_cap": 100.0,
                    "init_from": None, "warm_start": "tiny-sd15"}


@dataclass
class TinySD21Config(TinyBackboneConfig):
    name: str = "tiny-sd21"
    arch: TinyArch = field(default_factory=lambda: tiny_arch("tiny-sd21"))
    pretrain: PretrainConfig = field(default_factory=lambda: PretrainConfig(**SIBLING_PRETRAIN))


@dataclass
class TinySDXLConfig(TinyBackboneConfig):
    name: str = "tiny-sdxl"
    arch: TinyArch = field(default_factory=lambda: tiny_arch("tiny-sdxl"))
    pretrain: PretrainConfig = field(default_factory=lambda: PretrainConfig(**SIBLING_PRETRAIN))


@dataclass
class RealBackboneConfig:
    """A real backbone. The papers' training recipes on it are presets (sweeps/preset/, e.g.
    `+preset=diffusion_dpo_sd15`); selecting a real backbone turns the trainer's EMA off, as the
    papers train without one (bench.config.register_configs)."""
    name: str = "sd15"
    model_id: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    path: str | None = None                # a local dir saved with save_pretrained (HF layout)
    vae_path: str | None = None            # another VAE (dir or HF id, local files only)
    resolution: int = 512                  # SD1.5 model card: trained at 512x512
    guidance_scale: float = 7.5            # Diffusion-DPO quick_samples.ipynb, SD1.5
    num_inference_steps: int = 50          # diffusers' pipeline default, used by quick_samples.ipynb


@dataclass
class SD21Config(RealBackboneConfig):
    """SD2.1 (768, v-prediction; the scheduler config in the checkpoint says so)."""
    name: str = "sd21"
    model_id: str = "stabilityai/stable-diffusion-2-1"
    resolution: int = 768                  # stable-diffusion-2-1 model card: 768x768, v-objective
    guidance_scale: float = 7.5            # diffusers' StableDiffusionPipeline default


@dataclass
class SD21BaseConfig(RealBackboneConfig):
    """SD2.1-base (512, epsilon)."""
    name: str = "sd21-base"
    model_id: str = "stabilityai/stable-diffusion-2-1-base"
    resolution: int = 512                  # stable-diffusion-2-1-base model card: 512x512
    guidance_scale: float = 7.5            # diffusers' StableDiffusionPipeline default


@dataclass
class SDXLConfig(RealBackboneConfig):
    name: str = "sdxl"
    model_id: str = "stabilityai/stable-diffusion-xl-base-1.0"
    # fp16-safe VAE: the diffusers diffusion_dpo README's SDXL command passes
    # --pretrained_vae_model_name_or_path=madebyollin/sdxl-vae-fp16-fix (SDXL's own VAE overflows
    # in fp16); null keeps the checkpoint's VAE
    vae_path: str | None = "madebyollin/sdxl-vae-fp16-fix"
    resolution: int = 1024                 # SDXL base 1.0; DiffusionDPO SDXL trains at 1024
    guidance_scale: float = 5.0            # Diffusion-DPO quick_samples.ipynb, SDXL


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def load_tiny(cfg: TinyBackboneConfig, world_cfg: W.WorldConfig, cache_dir: Path) -> Backbone:
    if cfg.weights == "shipped":
        path = shipped_weights(cfg.name, cfg.arch, cfg.pretrain, world_cfg)
    elif cfg.weights == "pretrain":
        path = pretrain(cfg.name, cfg.arch, cfg.pretrain, world_cfg, cache_dir)
    else:
        path = Path(cfg.weights)
    return make_backbone(cfg.name, load_pipeline_dir(path, key="backbone.weights"), world_cfg.image_size,
                         cfg.guidance_scale, cfg.num_inference_steps)


def load_real_backbone(cfg: RealBackboneConfig, world_cfg, cache_dir: Path) -> Backbone:
    return make_backbone(cfg.name, load_real(cfg.model_id, cfg.path, cfg.vae_path), cfg.resolution,
                         cfg.guidance_scale, cfg.num_inference_steps)


def _register(name: str, loader, config_cls, doc: str) -> None:
    def load(cfg, world_cfg, cache_dir):
        return loader(cfg, world_cfg, cache_dir)
    load.__doc__, load.Config = doc, config_cls
    BACKBONES.register(name)(load)


_register("tiny-sd15", load_tiny, TinyBackboneConfig,
          "Embedded SD1.5 mirror: one CLIP text encoder, epsilon, 32x32 shapes world.")
_register("tiny-sd21", load_tiny, TinySD21Config,
          "Embedded SD2.1 mirror: v-prediction, gelu text encoder, linear attention projections.")
_register("tiny-sdxl", load_tiny, TinySDXLConfig,
          "Embedded SDXL mirror: two text encoders, pooled embeddings, add_time_ids.")
_register("sd15", load_real_backbone, RealBackboneConfig,
          "Stable Diffusion 1.5 (512, epsilon) from backbone.path or the HF cache.")
_register("sd21", load_real_backbone, SD21Config,
          "Stable Diffusion 2.1 (768, v-prediction) from backbone.path or the HF cache.")
_register("sd21-base", load_real_backbone, SD21BaseConfig,
          "Stable Diffusion 2.1-base (512, epsilon) from backbone.path or the HF cache.")
_register("sdxl", load_real_backbone, SDXLConfig,
          "Stable Diffusion XL base 1.0 (1024, two encoders) from backbone.path or the HF cache.")


def _missing(what: str, model_id: str, key: str) -> BenchError:
    hub = os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or "~/.cache/huggingface"
    return BenchError(f"{what} {model_id} not found in the HF cache ({hub}); download it on a machine "
                      f"with access (hf download {model_id}) or pass {key}=<local dir>")


def load_real(model_id: str, path: str | None, vae_path: str | None = None):
    """A real pipeline from a local dir (HF layout) or the HF cache, local files only; `vae_path`
    (a dir or an HF id) replaces its VAE. The safety checker is off on both paths (not loaded,
    `pipe.safety_checker is None`): it would black out the images it flags before scoring."""
    from diffusers import AutoencoderKL, DiffusionPipeline
    kwargs = {}
    if vae_path:
        try:
            kwargs["vae"] = AutoencoderKL.from_pretrained(vae_path, local_files_only=True)
        except (OSError, ValueError):
            raise _missing("VAE", vae_path, "backbone.vae_path") from None
    if path:
        pipe = load_pipeline_dir(Path(path), vae=kwargs.get("vae"))
    else:
        try:
            pipe = DiffusionPipeline.from_pretrained(model_id, local_files_only=True, safety_checker=None,
                                                     **kwargs)
        except (OSError, ValueError):
            raise _missing("weights for", model_id, "backbone.path") from None
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ----------------------------------------------------------------------------- pretraining

def recipe(name: str, arch: TinyArch, pre: PretrainConfig, world_cfg: W.WorldConfig) -> dict:
    """Everything that determines the pretrained weights; its hash names the cache entry."""
    rec = {"backbone": name, "arch": dataclasses.asdict(arch), "pretrain": dataclasses.asdict(pre),
           "world": W.world_identity(world_cfg), "format": 1}
    if pre.init_from is None and pre.warm_start is not None:
        rec["warm_start_sha256"] = _hash(json.loads((ASSETS / pre.warm_start / "SHA256SUMS.json").read_text()))
    return rec


def transfer_weights(src, dst) -> dict[str, int]:
    """Copy every tensor of src's UNet and text encoders into the same-named tensor of dst where the
    shapes agree up to unit dimensions (1x1 conv <-> linear projections). Returns counts."""
    counts = {"copied": 0, "kept": 0}
    for part in ("unet", "text_encoder", "text_encoder_2"):
        a, b = getattr(src, part, None), getattr(dst, part, None)
        if a is None or b is None:
            continue
        sa, sb = a.state_dict(), b.state_dict()
        for k, v in sb.items():
            if k in sa and sa[k].squeeze().shape == v.squeeze().shape:
                v.copy_(sa[k].reshape(v.shape))
                counts["copied"] += 1
            else:
                counts["kept"] += 1
    return counts


def shipped_weights_of(name: str, world_cfg: W.WorldConfig) -> Path:
    """The shipped weights of a tiny backbone under its default configuration."""
    cfg = BACKBONES.get(name).Config()
    return shipped_weights(name, cfg.arch, cfg.pretrain, world_cfg)


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
    out = Path(cache_dir) / "pretrain" / f"{name}-{_hash(rec)}"
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


# ----------------------------------------------------------------------------- shipped weights

def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def export_shipped(src: Path, name: str) -> Path:
    """Copy a pretrained pipeline into bench/assets/<name> in fp16 with its recipe and checksums."""
    dst = ASSETS / name
    pipe = load_pipeline_dir(src)
    shutil.rmtree(dst, ignore_errors=True)
    pipe.to(torch.float16).save_pretrained(dst / PIPELINE_DIR, safe_serialization=True)
    for f in ("recipe.json", "train_log.json"):
        if (src.parent / f).is_file():
            shutil.copy(src.parent / f, dst / f)
    (dst / "SHA256SUMS.json").write_text(json.dumps(_tree_digest(dst / PIPELINE_DIR), indent=1))
    return dst


def checked_asset(name: str) -> Path:
    """The pipeline of bench/assets/<name> after checking its checksums (a warm start). Its recipe
    is not compared with the configured world: a fine-tune on another world starts from it."""
    root = ASSETS / name
    sums = root / "SHA256SUMS.json"
    if not sums.is_file():
        raise BenchError(f"no weights to warm-start from in {root}; valid: "
                         f"{sorted(str(p.parent.relative_to(ASSETS)) for p in ASSETS.rglob('SHA256SUMS.json'))}")
    if _tree_digest(root / PIPELINE_DIR) != json.loads(sums.read_text()):
        raise BenchError(f"checksum mismatch in {root / PIPELINE_DIR}; restore it with git checkout")
    return root / PIPELINE_DIR


def shipped_weights(name: str, arch: TinyArch, pre: PretrainConfig, world_cfg: W.WorldConfig) -> Path:
    """Path of the shipped base weights after checking recipe and checksums."""
    root = ASSETS / name
    if not (root / "recipe.json").is_file():
        raise BenchError(f"no shipped weights for {name} in {root}; use backbone.weights=pretrain "
                         f"(python -m bench pretrain backbone={name})")
    want = recipe(name, arch, pre, world_cfg)
    if json.loads((root / "recipe.json").read_text()) != json.loads(json.dumps(want, default=str)):
        raise BenchError(f"the shipped {name} weights were made with another recipe than the one "
                         "configured (arch/pretrain/world); use backbone.weights=pretrain")
    sums = json.loads((root / "SHA256SUMS.json").read_text())
    if _tree_digest(root / PIPELINE_DIR) != sums:
        raise BenchError(f"checksum mismatch in {root / PIPELINE_DIR}; restore it with git checkout "
                         "or use backbone.weights=pretrain")
    return root / PIPELINE_DIR
