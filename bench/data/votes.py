"""Per-scorer votes on pairs (BalancedDPO): each proxy scorer scores both images of a pair; its
vote is 1 / 0 for image 0 / 1 and 0.5 within the scorer's tie tolerance. Scores are stored
oriented so that higher is better.

File: a Pick-a-Pic parquet plus, per scorer, `vote_<s>` (label_0 convention) and `score_0_<s>`,
`score_1_<s>`; a file without the votes is scored once and cached (`score_votes`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.data.pairs import decode_image, load_pickapic, read_frame, write_parquet_atomic
from bench.data.source import FeedbackSource, derive_once, source_key
from bench.lazy import torch  # imported on first use
from bench.registry import BenchError

log = logging.getLogger(__name__)


@dataclass
class VoteData:
    """Pairs in file order with the annotator's label_0 (1, 0 or 0.5) and each voter's vote on
    the same scale; scores (N, K) oriented higher-is-better, None when the file has none."""
    images_0: torch.Tensor
    images_1: torch.Tensor
    captions: list[str]
    labels_0: torch.Tensor
    voters: list[str]
    votes: torch.Tensor
    scores_0: torch.Tensor | None = None
    scores_1: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.captions)


def score_votes(pickapic_path: Path, out_path: Path, scorers: list[str], batch_size: int = 64,
                scorer_options: dict | None = None) -> Path:
    """The Pick-a-Pic file plus, for each scorer, both images' scores (oriented higher-is-better)
    and its vote in label_0 convention: 1 (image 0), 0 (image 1), 0.5 within its tie tolerance.
    Each scorer is built with its `eval.scorer_options` entry (weights path, device, ...), as the
    evaluation builds it. Images are scored at their own size: Pick-a-Pic mixes sizes (512, 768,
    1024, non-square), so each batch is split into groups of equal size before stacking (no resize
    here; each scorer's own preprocessing resizes as it does for any image)."""
    from bench.evaluate import get_scorer
    df = read_frame(pickapic_path).copy()
    caps = [str(c) for c in df["caption"]]
    opts = dict(scorer_options or {})
    for name in scorers:
        sc = get_scorer(name, opts.get(name))
        sign = 1.0 if sc.higher_is_better else -1.0
        cols = []
        for side in (0, 1):
            vals = np.zeros(len(df))
            for i in range(0, len(df), batch_size):
                imgs = [decode_image(b) for b in df[f"jpg_{side}"].iloc[i:i + batch_size]]
                groups: dict[tuple, list[int]] = {}
                for j, im in enumerate(imgs):
                    groups.setdefault(tuple(im.shape), []).append(j)
                for idx in groups.values():
                    x = torch.stack([imgs[j] for j in idx]).float() / 255.0
                    out = sc.score(x, [caps[i + j] for j in idx]).detach().float().cpu().numpy()
                    vals[[i + j for j in idx]] = out
            cols.append(sign * vals)
        d = cols[0] - cols[1]
        df[f"score_0_{name}"], df[f"score_1_{name}"] = cols
        df[f"vote_{name}"] = np.where(np.abs(d) <= sc.tie_tolerance, 0.5, (d > 0).astype(float))
    write_parquet_atomic(df, Path(out_path))
    return Path(out_path)


def has_votes(path: Path, voters: list[str]) -> bool:
    import pyarrow.parquet as pq
    names = set(pq.read_schema(path).names)
    return all(f"vote_{v}" in names for v in voters)


def load_votes(path: Path, voters: list[str], size: int | None = None) -> VoteData:
    """Read a Pick-a-Pic parquet with per-scorer votes (and scores when present), in file order,
    ties included. Images are decoded and validated by bench.data.pairs.load_pickapic."""
    path = Path(path)
    pairs = load_pickapic(path, keep_ties=True, size=size)
    df = read_frame(path)                 # the same rows as load_pickapic (has_label)
    missing = [f"vote_{v}" for v in voters if f"vote_{v}" not in df.columns]
    if missing:
        raise BenchError(f"{path}: missing vote column(s) {missing}; score the file with "
                         "bench.data.votes.score_votes or choose voters it has")
    votes = torch.tensor(np.stack([df[f"vote_{v}"].to_numpy(float) for v in voters], 1), dtype=torch.float32)
    bad = ~((votes == 0) | (votes == 1) | (votes == 0.5))
    if bad.any():
        raise BenchError(f"{path}: row {int(bad.any(1).nonzero()[0])} has a vote not in (1, 0, 0.5)")
    labels_0 = torch.tensor(df["label_0"].to_numpy(float), dtype=torch.float32)
    swapped = (labels_0 == 0).view(-1, 1, 1, 1)         # load_pickapic put the winner first
    img0 = torch.where(swapped, pairs.losers, pairs.winners)
    img1 = torch.where(swapped, pairs.winners, pairs.losers)
    s0 = s1 = None
    if all(f"score_{s}_{v}" in df.columns for v in voters for s in (0, 1)):
        s0 = torch.tensor(np.stack([df[f"score_0_{v}"].to_numpy(float) for v in voters], 1), dtype=torch.float32)
        s1 = torch.tensor(np.stack([df[f"score_1_{v}"].to_numpy(float) for v in voters], 1), dtype=torch.float32)
    return VoteData(img0, img1, pairs.captions, labels_0, list(voters), votes, s0, s1)




def load_feedback(src: FeedbackSource):
    """The pairs of `src.path` with each voter's vote (options["voters"]); a file without those
    votes is scored once by the voters, built with their eval.scorer_options entries."""
    voters = list(src.options["voters"])
    path = Path(src.path)
    if not path.is_file():
        raise BenchError(f"{path}: votes come from a Pick-a-Pic-format parquet file; set data.path to one")
    scored = path
    if not has_votes(path, voters):
        opts = {v: dict((src.scorer_options or {}).get(v) or {}) for v in voters}
        scored = src.derived / f"votes-{source_key(path, voters, opts)}.parquet"
        derive_once(scored, scored, lambda: score_votes(path, scored, voters, scorer_options=opts))
    data = load_votes(scored, voters, size=src.size)
    return data, {"path": str(scored), "pairs": len(data), "voters": voters}
