"""Shapes-world scorers: the hidden gold utility and three partly conflicting proxies.

Each is a function of the judges' reading of the pixels (bench.world.judge), so it scores
generated and rendered images alike.

Tie tolerance (a choice of this suite, not from a paper): each utility is a weighted count of
attributes plus small continuous terms (colour error, sharpness, contrast). Differences below the
tolerance are changes no rater would notice, so a pair within it counts as a tie (0.5) instead of
a coin flip on invisible noise. The smallest attribute weight in every utility is above its
tolerance, so any attribute change is a win or a loss.
"""
from __future__ import annotations

import numpy as np
from bench.lazy import torch  # imported on first use: validating a config needs no torch

from bench import world as W
from bench.registry import SCORERS, BenchError


class WorldScorer:
    utility: str = ""
    higher_is_better = True
    tie_tolerance = 0.1
    version = "1"                 # bump when a utility's definition changes the numbers

    @property
    def convention(self) -> str:
        return f"shapes-world utility {self.utility!r} of the pixel judges (bench.world.UTILITIES)"

    def check_prompts(self, prompts: list[str]) -> None:
        """The judges read the prompt's grammar; any other prompt is rejected before any work."""
        for p in prompts:
            try:
                W.parse_prompt(p)
            except ValueError:
                raise BenchError(f"scorer {self.utility!r} reads shapes-world prompts only and {p!r} is "
                                 "not one; score a real prompt set with real scorers") from None

    def score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """images (B, 3, H, W) in [0, 1]; returns (B,) float32."""
        fn = W.UTILITIES[self.utility]
        arr = images.detach().float().cpu().permute(0, 2, 3, 1).numpy()
        vals = [fn(W.judged(np.clip(a, 0, 1), W.parse_prompt(p))) for a, p in zip(arr, prompts)]
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
    tie_tolerance = 0.05      # purely continuous terms; 0.3 per extra object


@SCORERS.register("preference")
class Preference(WorldScorer):
    """Proxy: learned-preference-like, over-weights colour and contrast, ignores count."""
    utility = "preference"
