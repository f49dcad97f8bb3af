"""LAION aesthetic predictor v2 ("improved-aesthetic-predictor"), registered as `laion_aesthetic`
(`aesthetic` is the shapes world's craft proxy).

Source: christophschuhmann/improved-aesthetic-predictor simple_inference.py: CLIP ViT-L/14
`encode_image` -> L2-normalise (a zero norm is left as 1) -> MLP 768-1024-128-64-16-1 with no
nonlinearity; weights `sac+logos+ava1-l14-linearMSE.pth` from that repository. Output on the AVA
rating scale (1-10; ~5-6 on typical generations). Prompts are ignored.

The CLIP backbone is transformers' `openai/clip-vit-large-patch14` (`get_image_features`), as
SalesforceAIResearch/DiffusionDPO utils/aes_utils.py does, instead of OpenAI's `clip` package;
the weights are the same release converted, so expect only small numerical differences.
Not LAION aesthetic v1 (HELM/HEIM "aesthetics": a single Linear(768, 1) on unnormalised
embeddings), a different model.
"""
from __future__ import annotations

from dataclasses import dataclass

from bench.lazy import torch  # imported on first use: validating a config needs no torch

from bench.registry import SCORERS
from scorers.real import Asset, RealScorer, clip_image_embeds, load_hf_clip, mlp_head, read_checkpoint, warn_unused


@dataclass
class AestheticConfig:
    mlp: str | None = None              # sac+logos+ava1-l14-linearMSE.pth (or .safetensors); needed unless mlp_repo_id
    mlp_repo_id: str | None = None      # an HF repo holding the MLP file (none is official); None: mlp must be set
    mlp_filename: str = "sac+logos+ava1-l14-linearMSE.pth"
    clip: str | None = None             # CLIP ViT-L/14 save_pretrained dir (model + processor); None: HF cache
    clip_id: str = "openai/clip-vit-large-patch14"   # DiffusionDPO utils/aes_utils.py
    tie_tolerance: float | None = None  # None: 1e-5 rating points
    cache_dir: str | None = None
    device: str = "auto"


@SCORERS.register("laion_aesthetic")
class LaionAesthetic(RealScorer):
    """LAION aesthetic v2: MLP on L2-normalised CLIP ViT-L/14 image embeddings, AVA 1-10 scale."""
    name = "laion_aesthetic"
    Config = AestheticConfig

    def assets(self) -> list[Asset]:
        return [Asset("mlp", "the aesthetic MLP weights (sac+logos+ava1-l14-linearMSE.pth from "
                      "github.com/christophschuhmann/improved-aesthetic-predictor)",
                      self.cfg.mlp_repo_id, self.cfg.mlp_filename),
                Asset("clip", "a CLIP ViT-L/14 directory with its processor", self.cfg.clip_id)]

    @property
    def convention(self) -> str:
        return "MLP(normalise(CLIP ViT-L/14 image embedding)), AVA 1-10 rating, fp32 (improved-aesthetic-predictor v2)"

    def load(self):
        state = dict(read_checkpoint(self.paths["mlp"], self.name))
        head = mlp_head(state, "layers.", self.name, self.paths["mlp"]).to(self.device)
        warn_unused(state, self.name, self.paths["mlp"])
        return load_hf_clip(self.name, self.paths["clip"], self.paths["clip"], self.device), head

    def forward(self, model, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        clip, head = model
        return head(clip_image_embeds(clip, images)).squeeze(-1)
