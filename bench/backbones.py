"""Backbones: the embedded tiny-sd15 and the real SD1.5 loader, on one interface.

A backbone turns a config into a diffusers pipeline plus the few facts the trainer and sampler
need (prediction type, resolution, guidance, steps). Everything downstream talks to
`Backbone.encode_prompts` and `Backbone.predict`, so methods never branch on the backbone.

tiny-sd15 mirrors SD1.5's mechanics with the same classes: `UNet2DConditionModel`, `CLIPTextModel`,
a tokenizer saved with the pipeline, a DDIM scheduler with epsilon prediction, and an autoencoder
with `AutoencoderKL`'s interface, assembled as a `StableDiffusionPipeline`.
"""
from __future__ import annotations

import dataclasses
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
import torch
from tqdm.auto import tqdm

from bench import world as W
from bench.autoencoder import SpaceToDepthAutoencoder
from bench.registry import BACKBONES, BenchError

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


# Phase 1 of the shipped base weights' recipe: plain epsilon-MSE from random initialisation.
PHASE1 = {"steps": 4000, "batch_size": 64, "lr": 1.5e-3, "warmup": 200, "weight_decay": 0.0,
          "ema_decay": 0.999, "grad_clip": 1.0, "empty_prompt_prob": 0.1, "corpus_size": 30000,
          "seed": 0, "eval_seeds": 4, "snr_gamma": None, "init_from": None}


@dataclass
class PretrainConfig:
    """Pretraining on the defective shapes corpus. The defaults are phase 2 of the shipped base
    weights' recipe: 2000 min-SNR steps on a fresh corpus (seed 1), continuing from PHASE1.

    Phase 1 alone learned little conditioning: after 4000 steps a shuffled prompt raised the
    denoising error by only ~5% at t=900 and samples were at chance on colour and background.
    800 min-SNR steps doubled that gap (11%) (measured while building the recipe; see README).
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
    seed: int = 1
    eval_seeds: int = 4                     # samples per held-out eval prompt for the report
    # Min-SNR-gamma loss weighting (Hang et al. 2023, arXiv 2303.09556; diffusers
    # train_text_to_image.py --snr_gamma, 5.0 recommended): per-sample weight min(SNR, g)/SNR for
    # epsilon targets. It moves the loss from low-noise detail toward the high-noise steps where
    # the prompt decides layout and colour. None: plain MSE.
    snr_gamma: float | None = 5.0
    # Continue from the pipeline of another recipe (nested in this one's hash). None: from scratch.
    init_from: dict | None = field(default_factory=lambda: dict(PHASE1))


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


def build_tiny_sd15(arch: TinyArch, image_size: int, seed: int = 0):
    """A randomly initialised tiny-sd15 `StableDiffusionPipeline`."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = make_tokenizer(arch.max_length)
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=arch.text_hidden,
        intermediate_size=2 * arch.text_hidden, num_hidden_layers=arch.text_layers,
        num_attention_heads=arch.text_heads, max_position_embeddings=arch.max_length,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, projection_dim=arch.text_hidden))
    vae = SpaceToDepthAutoencoder(factor=arch.factor)
    lat_c, lat_hw = 3 * arch.factor ** 2, image_size // arch.factor
    n = len(arch.block_out_channels)
    torch.manual_seed(seed + 1)
    unet = UNet2DConditionModel(
        sample_size=lat_hw, in_channels=lat_c, out_channels=lat_c,
        block_out_channels=tuple(arch.block_out_channels), layers_per_block=arch.layers_per_block,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",),
        cross_attention_dim=arch.text_hidden, attention_head_dim=arch.attention_head_dim,
        norm_num_groups=arch.norm_num_groups)
    # Cosine schedule (Nichol & Dhariwal) as in the feasibility prototype; SD1.5 itself uses
    # scaled_linear, which at 1000 steps leaves too much signal at t=T for 32x32 images.
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                              prediction_type="epsilon", clip_sample=False, set_alpha_to_one=False,
                              steps_offset=1)
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                   unet=unet, scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)


def load_pipeline_dir(path: Path, dtype=torch.float32, key: str = "backbone.path"):
    """Load a pipeline saved with `save_pretrained` (local files only); `key` is the config key
    that names the directory, for the error line."""
    from diffusers import DiffusionPipeline
    index = Path(path) / "model_index.json"
    if not index.is_file():
        raise BenchError(f"no pipeline at {path} (model_index.json missing); "
                         f"pass {key}=<dir saved with save_pretrained>")
    kwargs = {}
    if json.loads(index.read_text()).get("vae", [None, None])[1] == "SpaceToDepthAutoencoder":
        # parameter-free: nothing to load but its config
        kwargs["vae"] = SpaceToDepthAutoencoder.from_config(
            SpaceToDepthAutoencoder.load_config(Path(path) / "vae"))
    pipe = DiffusionPipeline.from_pretrained(path, local_files_only=True, dtype=dtype, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ----------------------------------------------------------------------------- the interface

@dataclass
class Backbone:
    """What the trainer and sampler need from a loaded backbone."""
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

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        ids = self.pipe.tokenizer(prompts, padding="max_length", truncation=True,
                                  max_length=self.pipe.tokenizer.model_max_length,
                                  return_tensors="pt").input_ids
        return {"encoder_hidden_states": self.pipe.text_encoder(ids)[0]}

    def predict(self, unet, noisy: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
        return unet(noisy, t, **cond).sample

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] -> scaled latents."""
        vae = self.pipe.vae
        return vae.encode(images * 2 - 1).latent_dist.sample() * vae.config.scaling_factor

    def target(self, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The regression target the scheduler's prediction type asks for."""
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "v_prediction":
            return self.pipe.scheduler.get_velocity(latents, noise, t)
        raise BenchError(f"unsupported prediction_type {self.prediction_type!r}; "
                         "use a scheduler with epsilon or v_prediction")


@dataclass
class TinyBackboneConfig:
    name: str = "tiny-sd15"
    weights: str = "shipped"               # shipped | pretrain | <path to a saved pipeline>
    arch: TinyArch = field(default_factory=TinyArch)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    # Tiny-model choices (no paper covers a 1.7M-parameter UNet): guidance 3.0 as in the
    # feasibility prototype; 20 DDIM steps (the prototype used 25) to keep sampling cheap.
    guidance_scale: float = 3.0
    num_inference_steps: int = 20


@dataclass
class RealBackboneConfig:
    name: str = "sd15"
    model_id: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    path: str | None = None                # a local dir saved with save_pretrained (HF layout)
    resolution: int = 512
    guidance_scale: float = 7.5            # Diffusion-DPO quick_samples.ipynb, SD1.5
    num_inference_steps: int = 50          # diffusers' StableDiffusionPipeline default


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


@BACKBONES.register("tiny-sd15")
def load_tiny_sd15(cfg: TinyBackboneConfig, world_cfg: W.WorldConfig, cache_dir: Path) -> Backbone:
    """Embedded SD1.5 mirror: CLIPTextModel + UNet2DConditionModel, epsilon, 32x32 shapes world."""
    if cfg.weights == "shipped":
        path = shipped_weights(cfg.name, cfg.arch, cfg.pretrain, world_cfg)
    elif cfg.weights == "pretrain":
        path = pretrain(cfg.name, cfg.arch, cfg.pretrain, world_cfg, cache_dir)
    else:
        path = Path(cfg.weights)
    return Backbone(cfg.name, load_pipeline_dir(path, key="backbone.weights"), world_cfg.image_size, cfg.guidance_scale,
                    cfg.num_inference_steps)


load_tiny_sd15.Config = TinyBackboneConfig


@BACKBONES.register("sd15")
def load_sd15(cfg: RealBackboneConfig, world_cfg, cache_dir: Path) -> Backbone:
    """Stable Diffusion 1.5 from backbone.path or the HF cache (local files only)."""
    return Backbone(cfg.name, load_real(cfg.model_id, cfg.path), cfg.resolution,
                    cfg.guidance_scale, cfg.num_inference_steps)


load_sd15.Config = RealBackboneConfig


def load_real(model_id: str, path: str | None):
    from diffusers import DiffusionPipeline
    if path:
        return load_pipeline_dir(Path(path))
    try:
        pipe = DiffusionPipeline.from_pretrained(model_id, local_files_only=True, safety_checker=None)
    except (OSError, ValueError, EnvironmentError):
        hub = os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or "~/.cache/huggingface"
        raise BenchError(f"weights for {model_id} not found in the HF cache ({hub}); download them "
                         f"on a machine with access (huggingface-cli download {model_id}) or pass "
                         "backbone.path=<local dir>") from None
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ----------------------------------------------------------------------------- pretraining

def recipe(name: str, arch: TinyArch, pre: PretrainConfig, world_cfg: W.WorldConfig) -> dict:
    """Everything that determines the pretrained weights; its hash names the cache entry."""
    return {"backbone": name, "arch": dataclasses.asdict(arch), "pretrain": dataclasses.asdict(pre),
            "world": dataclasses.asdict(world_cfg), "format": 1}


def render_corpus(world_cfg: W.WorldConfig, n: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    """The defective training corpus: n uint8 images (n, 3, H, W) and their prompts."""
    prompts = W.split_prompts(world_cfg)["train"]
    rng = np.random.default_rng(seed)
    imgs = np.empty((n, world_cfg.image_size, world_cfg.image_size, 3), np.uint8)
    texts = []
    for i in tqdm(range(n), desc="render corpus", leave=False, mininterval=2):
        p = prompts[int(rng.integers(len(prompts)))]
        defects = W.sample_defects(world_cfg.defects, rng)
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
        pipe.unet.train(); pipe.text_encoder.train()
    else:
        pipe = build_tiny_sd15(arch, world_cfg.image_size, pre.seed)
    bb = Backbone(name, pipe, world_cfg.image_size, 3.0, 20)
    images, texts = render_corpus(world_cfg, pre.corpus_size, pre.seed)
    tok = pipe.tokenizer
    ids = tok(texts + [""], padding="max_length", max_length=tok.model_max_length,
              return_tensors="pt").input_ids
    empty_ids, ids = ids[-1], ids[:-1]
    unet, te = pipe.unet, pipe.text_encoder
    params = list(unet.parameters()) + list(te.parameters())
    ema = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=pre.lr, weight_decay=pre.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / pre.warmup) * 0.5 * (
        1 + math.cos(math.pi * min(s / pre.steps, 1.0))))
    gen = torch.Generator().manual_seed(pre.seed)
    noise_sched = pipe.scheduler
    unet.train(); te.train()
    t0, losses = time.time(), []
    bar = tqdm(range(pre.steps), desc=f"pretrain {name}", disable=not progress, mininterval=5)
    for step in bar:
        idx = torch.randint(0, len(images), (pre.batch_size,), generator=gen)
        x = images[idx].float() / 255.0
        batch_ids = ids[idx].clone()
        drop = torch.rand(pre.batch_size, generator=gen) < pre.empty_prompt_prob
        batch_ids[drop] = empty_ids
        latents = bb.encode_images(x)
        noise = torch.randn(latents.shape, generator=gen)
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (pre.batch_size,), generator=gen)
        noisy = noise_sched.add_noise(latents, noise, t)
        pred = unet(noisy, t, encoder_hidden_states=te(batch_ids)[0]).sample
        per = (pred - bb.target(latents, noise, t)).pow(2).mean(dim=(1, 2, 3))
        if pre.snr_gamma is not None:
            per = per * min_snr_weight(noise_sched.alphas_cumprod, t, pre.snr_gamma)
        loss = per.mean()
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
    unet.eval(); te.eval()
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp / PIPELINE_DIR, safe_serialization=True)
    (tmp / "recipe.json").write_text(json.dumps(rec, indent=2))
    (tmp / "train_log.json").write_text(json.dumps(
        {"loss_every_100": [float(np.mean(losses[i:i + 100])) for i in range(0, len(losses), 100)],
         "wall_s": time.time() - t0}))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
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
