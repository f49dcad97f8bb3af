"""benchmarks/pair_contrast.py: what a pair file teaches about each attribute."""
import importlib.util

import numpy as np
import pandas as pd
import torch

from bench import world as W
from bench.data.pairs import encode_png

spec = importlib.util.spec_from_file_location("pair_contrast", W.__file__.replace("bench/world.py", "benchmarks/pair_contrast.py"))
PC = importlib.util.module_from_spec(spec)
spec.loader.exec_module(PC)


def png(img):
    return encode_png(torch.from_numpy(np.round(img * 255).astype(np.uint8)).permute(2, 0, 1))


def test_framed_losers_and_one_tie_are_counted():
    rng = np.random.default_rng(0)
    prompts = W.split_prompts(W.WorldConfig())["train"][:6]
    rows = []
    for k, p in enumerate(prompts):                       # the clean image wins; the framed one loses
        framed, clean = W.render(p, rng, 32, ("frame",)), W.render(p, rng, 32, ())
        first_wins = k % 2 == 0                            # the winner's side alternates
        a, b = (clean, framed) if first_wins else (framed, clean)
        rows.append({"caption": p.text, "jpg_0": png(a), "jpg_1": png(b),
                     "label_0": 1.0 if first_wins else 0.0, "label_1": 0.0 if first_wins else 1.0})
    rows[-1].update(label_0=0.5, label_1=0.5)              # a tie is not a decided pair
    res = PC.contrast(pd.DataFrame(rows), given="framed")
    fr = res["attributes"]["framed"]
    assert res["ties"] == 1 and fr["pairs_differing"] == 5 and fr["winner_has_it"] == 0.0
    assert fr["rate"] == 0.5
    assert res["given"]["framed"] == {"with": 1.0, "without": 0.0}
