"""PickScore (Kirstain et al. 2023, "Pick-a-Pic"): CLIP-H fine-tuned on Pick-a-Pic preferences.

Source: yuvalkirstain/PickScore README ("Inference with PickScore"): model
`yuvalkirstain/PickScore_v1`, processor `laion/CLIP-ViT-H-14-laion2B-s32B-b79K`, text and images
through the processor with padding=True, truncation=True, max_length=77, L2-normalised
embeddings, score = `model.logit_scale.exp() * cos` (about 20-23 on typical generations).

Scale convention (`scale` option):
* `logit_scale` (default): the README's score, logit_scale.exp() x cosine.
* `cosine`: the raw cosine, as SalesforceAIResearch/DiffusionDPO utils/pickscore_utils.py returns
  unless softmax=True. The two are not comparable; result.json records which one ran.

Each (image, prompt) pair is scored on its own (the diagonal of text @ image.T, as imscore does);
the README's softmax over images of one prompt is a choice probability, not a per-image score.
"""
from __future__ import annotations

from dataclasses import dataclass

from bench.lazy import torch  # imported on first use: validating a config needs no torch

from bench.registry import SCORERS, BenchError
from scorers.real import Asset, RealScorer, clip_image_embeds, clip_text_embeds, load_hf_clip

SCALES = ("logit_scale", "cosine")


@dataclass
class PickScoreConfig:
    model: str | None = None                     # save_pretrained dir; None: HF cache of model_id
    model_id: str = "yuvalkirstain/PickScore_v1"                      # PickScore README
    processor: str | None = None                 # dir with the processor; None: HF cache of processor_id
    processor_id: str = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"       # PickScore README
    scale: str = "logit_scale"                   # logit_scale | cosine (see module docstring)
    tie_tolerance: float | None = None           # None: 1e-5 in cosine units (x logit_scale if scaled)
    cache_dir: str | None = None                 # HF cache; None: the default
    device: str = "auto"


@SCORERS.register("pickscore")
class PickScore(RealScorer):
    """PickScore_v1 (CLIP-H on Pick-a-Pic): logit_scale x cosine, README convention (~20-23)."""
    name = "pickscore"
    Config = PickScoreConfig
    _logit_scale = 100.0   # CLIP's logit_scale.exp() is clamped at 100; only sets the default tie tolerance

    def __init__(self, cfg: PickScoreConfig):
        if cfg.scale not in SCALES:
            raise BenchError(f"pickscore: unknown scale {cfg.scale!r}; valid: {', '.join(SCALES)}")
        super().__init__(cfg)

    def assets(self) -> list[Asset]:
        return [Asset("model", "the PickScore CLIPModel directory", self.cfg.model_id),
                Asset("processor", "the CLIP-H processor directory (tokenizer + image settings)",
                      self.cfg.processor_id)]

    @property
    def scale(self) -> float:
        return self._logit_scale if self.cfg.scale == "logit_scale" else 1.0

    @property
    def convention(self) -> str:
        if self.cfg.scale == "logit_scale":
            return "logit_scale.exp() * cos(image, text), fp32 (PickScore README)"
        return "cos(image, text), fp32 (DiffusionDPO utils/pickscore_utils.py)"

    def load(self):
        return load_hf_clip(self.name, self.paths["model"], self.paths["processor"], self.device)

    def forward(self, clip, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        cos = (clip_image_embeds(clip, images) * clip_text_embeds(clip, prompts)).sum(-1)
        return cos * clip.model.logit_scale.exp() if self.cfg.scale == "logit_scale" else cos
