"""CLIP score: prompt-image cosine of a CLIP backbone, scaled and clipped at 0.

There is no single definition; this one is torchmetrics' `CLIPScore` (functional/multimodal/
clip_score.py): backbone `openai/clip-vit-large-patch14`, score = 100 x cos(E_I, E_C), text
truncated to the model's 77 positions, clipped at 0. Differences from other papers:
* torchmetrics clips the *mean over images* at 0; this scorer clips each image (`clip_at_zero`),
  as the per-image CLIP-S of Hessel et al. 2021 does (they scale by 2.5, not 100).
* ImageReward's and DiffusionDPO's CLIP scores are the raw cosine (`scale=1`,
  `clip_at_zero=false`), the latter on OpenCLIP ViT-H-14 (`model` pointing at a transformers
  conversion such as laion/CLIP-ViT-H-14-laion2B-s32B-b79K).
Images go through the backbone's own processor settings (PIL bicubic resize, centre crop).
"""
from __future__ import annotations

from dataclasses import dataclass

from bench.lazy import torch  # imported on first use: validating a config needs no torch

from bench.registry import SCORERS
from scorers.real import Asset, RealScorer, clip_image_embeds, clip_text_embeds, load_hf_clip


@dataclass
class ClipScoreConfig:
    model: str | None = None                       # save_pretrained dir (model + processor); None: HF cache
    model_id: str = "openai/clip-vit-large-patch14"   # torchmetrics CLIPScore default
    scale: float = 100.0                           # torchmetrics: 100 x cos
    clip_at_zero: bool = True                      # per image max(score, 0) (Hessel et al. 2021)
    tie_tolerance: float | None = None             # None: 1e-5 in cosine units x scale
    cache_dir: str | None = None
    device: str = "auto"


@SCORERS.register("clip_score")
class ClipScore(RealScorer):
    """CLIP score: max(100 x cos(image, prompt), 0) on CLIP ViT-L/14 (torchmetrics convention)."""
    name = "clip_score"
    Config = ClipScoreConfig

    def assets(self) -> list[Asset]:
        return [Asset("model", "a CLIPModel directory with its processor", self.cfg.model_id)]

    @property
    def scale(self) -> float:
        return abs(self.cfg.scale)

    @property
    def convention(self) -> str:
        clip = "max(., 0) per image" if self.cfg.clip_at_zero else "not clipped"
        return f"{self.cfg.scale:g} x cos(image, text), {clip}, fp32 (torchmetrics CLIPScore)"

    def load(self):
        return load_hf_clip(self.name, self.paths["model"], self.paths["model"], self.device)

    def forward(self, clip, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        s = self.cfg.scale * (clip_image_embeds(clip, images) * clip_text_embeds(clip, prompts)).sum(-1)
        return s.clamp(min=0) if self.cfg.clip_at_zero else s
