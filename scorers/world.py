"""Shapes-world scorers: the hidden gold utility and three partly conflicting proxies.

Each is a function of the judges' reading of the pixels (bench.world.judge), so it scores
generated and rendered images alike. Scores are exact; ties are real (equal attribute sets), so
the tie tolerance is a small absolute margin.
"""
from __future__ import annotations

import numpy as np
import torch

from bench import world as W
from bench.registry import SCORERS


class WorldScorer:
    utility: str = ""
    higher_is_better = True
    tie_tolerance = 1e-6

    def score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """images (B, 3, H, W) in [0, 1]; returns (B,) float32."""
        fn = W.UTILITIES[self.utility]
        arr = images.detach().float().cpu().permute(0, 2, 3, 1).numpy()
        vals = [fn(W.judge(np.clip(a, 0, 1), W.parse_prompt(p))) for a, p in zip(arr, prompts)]
        return torch.tensor(vals, dtype=torch.float32)


@SCORERS.register("gold")
class Gold(WorldScorer):
    """Hidden gold utility (stands for human judgement); for evaluation and annotators only."""
    utility = "gold"


@SCORERS.register("fidelity")
class Fidelity(WorldScorer):
    """Proxy: prompt fidelity (colour, shape, count, background), blind to craft; CLIP-score-like."""
    utility = "fidelity"


@SCORERS.register("aesthetic")
class Aesthetic(WorldScorer):
    """Proxy: craft (sharp, clean, contrasty, few objects), blind to the prompt."""
    utility = "aesthetic"


@SCORERS.register("preference")
class Preference(WorldScorer):
    """Proxy: learned-preference-like, over-weights colour and contrast, ignores count."""
    utility = "preference"
