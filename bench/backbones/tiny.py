"""The tiny backbones of the embedded shapes world: tiny-sd15, tiny-sd21 and tiny-sdxl.

Each mirrors its real sibling's mechanics with the same classes and an autoencoder with
`AutoencoderKL`'s interface:
- tiny-sd15: `CLIPTextModel` (quick_gelu) + `UNet2DConditionModel`, epsilon prediction,
  `StableDiffusionPipeline`;
- tiny-sd21: v-prediction, a gelu text encoder whose depth is the feature layer (SD2's checkpoint
  keeps OpenCLIP-H's first 23 of 24 layers: its "penultimate" features are the saved encoder's
  last), linear attention projections, `StableDiffusionPipeline`;
- tiny-sdxl: `CLIPTextModel` + `CLIPTextModelWithProjection` with two tokenizers, penultimate
  hidden states of both concatenated, pooled embeddings and `add_time_ids` through
  `addition_embed_type="text_time"`, `StableDiffusionXLPipeline`.

Here: their architecture (`TinyArch`) and how a pipeline is built from it, their configs, and the
recipe of their weights (`PretrainConfig`; `recipe` collects everything that determines the
weights, and its hash names the pretraining cache entry). Pretraining is in pretraining.py, the
shipped weights in bench/assets/ and their checks in shipped.py.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from bench import world as W
from bench.lazy import torch  # imported on first use: the config path needs no torch
from bench.registry import BenchError

ASSETS = Path(__file__).parent.parent / "assets"   # bench/assets/<name>: the shipped weights
PIPELINE_DIR = "pipeline"                          # the pipeline inside a cache entry or an asset


# ----------------------------------------------------------------------------- architecture

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


# ----------------------------------------------------------------------------- recipe and configs

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


def world_v2_finetune(v1: dict, name: str) -> dict:
    """World v2's recipe for a tiny backbone: its world-v1 base (bench/assets/<name>, checksummed)
    fine-tuned on the v2 corpus for 2000 steps at lr 5e-4 with its v1 loss weighting (the length
    and rate of v1's last phase; docs/world.md, candidate G: 400 steps cost the base much of its
    quality, 2000 learned the modes whole and recovered it)."""
    return {**v1, "steps": 2000, "lr": 5e-4, "warmup": 20, "seed": 7, "init_from": None, "warm_start": name}


@dataclass
class TinyBackboneConfig:
    name: str = "tiny-sd15"
    weights: str = "shipped"               # shipped | pretrain | <path to a saved pipeline>
    arch: TinyArch = field(default_factory=TinyArch)
    # world v1's tiny-sd15 recipe is PretrainConfig() on world v1 (phases 1-3 above)
    pretrain: PretrainConfig = field(default_factory=lambda: PretrainConfig(**world_v2_finetune({}, "tiny-sd15")))
    # 7.5 as SD1.5 (Diffusion-DPO quick_samples.ipynb). Measured on the shipped tiny-sd15 base
    # (54 eval prompts x 2 seeds): fully correct 6.5% at guidance 3, 19% at 5, 24% at 7.5.
    guidance_scale: float = 7.5
    # 20 DDIM steps (the feasibility prototype used 25) keep sampling cheap (no paper covers a
    # 1.7M-parameter UNet)
    num_inference_steps: int = 20


# World v1: tiny-sd21 and tiny-sdxl start from the shipped tiny-sd15 weights (every tensor whose size fits;
# the rest, e.g. SDXL's text encoders and add_embedding, from random init) and are trained with
# tiny-sd15's phase-3 weighting. Our choice: pretraining each from scratch costs ~1.5 h on 2 cores.
SIBLING_PRETRAIN = {**PHASE2, "steps": 2000, "seed": 3, "snr_gamma": None, "v_weight_cap": 100.0,
                    "init_from": None, "warm_start": "tiny-sd15"}


@dataclass
class TinySD21Config(TinyBackboneConfig):
    name: str = "tiny-sd21"
    arch: TinyArch = field(default_factory=lambda: tiny_arch("tiny-sd21"))
    pretrain: PretrainConfig = field(default_factory=lambda: PretrainConfig(**world_v2_finetune(SIBLING_PRETRAIN, "tiny-sd21")))


@dataclass
class TinySDXLConfig(TinyBackboneConfig):
    name: str = "tiny-sdxl"
    arch: TinyArch = field(default_factory=lambda: tiny_arch("tiny-sdxl"))
    pretrain: PretrainConfig = field(default_factory=lambda: PretrainConfig(**world_v2_finetune(SIBLING_PRETRAIN, "tiny-sdxl")))


def short_hash(obj) -> str:
    """The first 12 hex digits of the SHA-256 of obj as sorted JSON (names cache entries)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def recipe(name: str, arch: TinyArch, pre: PretrainConfig, world_cfg: W.WorldConfig) -> dict:
    """Everything that determines the pretrained weights; its hash names the cache entry."""
    rec = {"backbone": name, "arch": dataclasses.asdict(arch), "pretrain": dataclasses.asdict(pre),
           "world": W.world_identity(world_cfg), "format": 1}
    if pre.init_from is None and pre.warm_start is not None:
        rec["warm_start_sha256"] = short_hash(json.loads((ASSETS / pre.warm_start / "SHA256SUMS.json").read_text()))
    return rec
