"""ImageReward (Xu et al. 2023): BLIP ViT-L/16 image encoder, BERT-base text encoder
cross-attending to the image tokens, an MLP on the [CLS] feature, standardised.

Source: THUDM/ImageReward (now zai-org/ImageReward) ImageReward/ImageReward.py and utils.py:
weights `THUDM/ImageReward` `ImageReward.pt` + `med_config.json`, tokenizer `bert-base-uncased`
(BLIP init_tokenizer); image `Resize(224, BICUBIC)` on the PIL image, `CenterCrop(224)`, OpenAI
mean/std; text padded to and **truncated at 35 tokens** (longer prompts lose their tail, [CLS]
and [SEP] included); score = (MLP(text_encoder(...)[:, 0]) - 0.16717362830052426) /
1.0333394966054072. Scale: roughly N(0, 1) over SD 1.4 generations (62% in [-1, 1],
zai-org/ImageReward #40).

How it runs here, and why: ported onto transformers' `BlipVisionModel` and `BlipTextModel`
(themselves ports of BLIP's vit.py and med.py: pre-norm ViT with packed qkv, LayerNorm eps 1e-6;
BERT layers with self-attention, cross-attention and feed-forward, no token-type embeddings),
loading the original checkpoint through an explicit key map (`VISION_KEYS`). The image-reward 1.5
package does not import on transformers >= 4.56 (it imports helpers no longer re-exported from
`transformers.modeling_utils`), and the stack it runs on (transformers < 4.56, timm, fairscale,
clip, diffusers <= 0.35) conflicts with this suite's pins, so isolating it would mean a second
environment. The port scores whole batches (the package loops over images one at a time) in fp32
under inference mode (the package never disables gradients itself).

The original `load` uses `load_state_dict(strict=False)`; here a tensor the model needs and the
checkpoint lacks is an error, and tensors the scorer never uses (the ITC projection heads) are
named in a warning. BLIP's tokenizer adds `[DEC]` and `[ENC]` tokens that ImageReward's score
never uses; they are not added here (only a prompt containing those literal strings would
tokenise differently).
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from bench.lazy import torch  # imported on first use: validating a config needs no torch

from bench.registry import SCORERS, BenchError
from scorers.real import (OPENAI_MEAN, OPENAI_STD, Asset, RealScorer, count_blocks, load_exact, load_tokenizer,
                          mlp_head, pil_preprocess, read_checkpoint, take, warn_unused)

# ImageReward/ImageReward.py: rewards = (rewards - self.mean) / self.std
REWARD_MEAN = 0.16717362830052426
REWARD_STD = 1.0333394966054072

# transformers BlipVisionModel key fragment -> BLIP vit.py key fragment, applied in order
VISION_KEYS = (("embeddings.class_embedding", "cls_token"), ("embeddings.position_embedding", "pos_embed"),
               ("embeddings.patch_embedding.", "patch_embed.proj."), ("encoder.layers.", "blocks."),
               ("layer_norm1", "norm1"), ("layer_norm2", "norm2"), ("self_attn.qkv", "attn.qkv"),
               ("self_attn.projection", "attn.proj"), ("post_layernorm", "norm"))
# med_config.json keys the text encoder needs (a BertConfig)
MED_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
            "hidden_act", "max_position_embeddings", "layer_norm_eps")


@dataclass
class ImageRewardConfig:
    checkpoint: str | None = None        # ImageReward.pt (or .safetensors); None: HF cache of repo_id
    med_config: str | None = None        # med_config.json; None: HF cache of repo_id
    repo_id: str = "THUDM/ImageReward"   # ImageReward/utils.py
    tokenizer: str | None = None         # bert-base-uncased tokenizer dir; None: HF cache of tokenizer_id
    tokenizer_id: str = "bert-base-uncased"   # BLIP blip.py init_tokenizer
    vision_heads: int = 16               # BLIP blip.py create_vit('large'): ViT-L/16, 16 heads
    max_length: int = 35                 # ImageReward.py score(): truncation at 35 tokens
    tie_tolerance: float | None = None   # None: 1e-5 (standardised units)
    cache_dir: str | None = None
    device: str = "auto"


def _vision_source(key: str) -> str:
    for a, b in VISION_KEYS:
        key = key.replace(a, b)
    return key


def _load_renamed(module: torch.nn.Module, state: dict, prefix: str, rename, scorer: str, path) -> None:
    """Fill every tensor of `module` from state[prefix + rename(key)]; consumed keys are removed."""
    sd = {k: take(state, prefix + rename(k), scorer, path) for k in module.state_dict()}
    load_exact(module, sd, scorer, path)


def _read_med_config(path, scorer: str) -> dict:
    try:
        med = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise BenchError(f"{scorer}: cannot read {path} ({type(e).__name__}); "
                         "pass ImageReward's med_config.json") from None
    missing = [k for k in MED_KEYS if k not in med]
    if missing:
        raise BenchError(f"{scorer}: {path} lacks {', '.join(missing)}; pass ImageReward's med_config.json")
    return {k: med[k] for k in MED_KEYS}


def build_imagereward(state: dict, med: dict, vision_heads: int, scorer: str, path):
    """BLIP vision + text encoders and the MLP head from an ImageReward state dict (consumed)."""
    from transformers import BlipTextConfig, BlipTextModel, BlipVisionConfig, BlipVisionModel
    v = "blip.visual_encoder."
    cls, pos, patch = state[v + "cls_token"], state[v + "pos_embed"], state[v + "patch_embed.proj.weight"]
    width, p = cls.shape[-1], patch.shape[-1]
    grid = int(round((pos.shape[1] - 1) ** 0.5))
    # BLIP vit.py: LayerNorm eps 1e-6, nn.GELU, qkv_bias=True
    vision = BlipVisionModel(BlipVisionConfig(
        hidden_size=width, intermediate_size=state[v + "blocks.0.mlp.fc1.weight"].shape[0],
        num_hidden_layers=count_blocks(state, r"blip\.visual_encoder\.blocks\.(\d+)\."),
        num_attention_heads=vision_heads, image_size=grid * p, patch_size=p, hidden_act="gelu",
        layer_norm_eps=1e-6))
    _load_renamed(vision, state, v, _vision_source, scorer, path)
    # blip_pretrain.py: encoder_config.encoder_width = vision_width; is_decoder builds the
    # cross-attention layers (med.py: add_cross_attention), the forward stays bidirectional
    text = BlipTextModel(BlipTextConfig(**med, encoder_hidden_size=width, is_decoder=True), add_pooling_layer=False)
    _load_renamed(text, state, "blip.text_encoder.", lambda k: k, scorer, path)
    head = mlp_head(state, "mlp.layers.", scorer, path)
    warn_unused(state, scorer, path)
    return vision.eval(), text.eval(), head


@SCORERS.register("imagereward")
class ImageReward(RealScorer):
    """ImageReward v1.0 (BLIP + MLP), standardised reward (~N(0, 1)); prompts cut at 35 tokens."""
    name = "imagereward"
    Config = ImageRewardConfig

    def assets(self) -> list[Asset]:
        return [Asset("checkpoint", "the ImageReward checkpoint", self.cfg.repo_id, "ImageReward.pt"),
                Asset("med_config", "ImageReward's text-encoder config", self.cfg.repo_id, "med_config.json"),
                Asset("tokenizer", "the bert-base-uncased tokenizer directory", self.cfg.tokenizer_id)]

    @property
    def convention(self) -> str:
        return (f"(MLP(BLIP [CLS]) - {REWARD_MEAN}) / {REWARD_STD}, prompts truncated at "
                f"{self.cfg.max_length} tokens, fp32 (ImageReward.py)")

    def load(self):
        path = self.paths["checkpoint"]
        med = _read_med_config(self.paths["med_config"], self.name)
        vision, text, head = build_imagereward(dict(read_checkpoint(path, self.name)), med,
                                               self.cfg.vision_heads, self.name, path)
        tok = load_tokenizer(self.name, self.paths["tokenizer"])
        return vision.to(self.device), text.to(self.device), head.to(self.device), tok

    def forward(self, model, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        vision, text, head, tok = model
        size = vision.config.image_size
        px = pil_preprocess(images, size, size, OPENAI_MEAN, OPENAI_STD)
        image_embeds = vision(pixel_values=px).last_hidden_state
        enc = tok(prompts, padding="max_length", truncation=True, max_length=self.cfg.max_length,
                  return_tensors="pt")
        # every image token is attended (ImageReward passes an all-ones encoder_attention_mask)
        out = text(input_ids=enc.input_ids.to(self.device), attention_mask=enc.attention_mask.to(self.device),
                   encoder_hidden_states=image_embeds)
        reward = head(out.last_hidden_state[:, 0]).squeeze(-1)
        return (reward - REWARD_MEAN) / REWARD_STD
