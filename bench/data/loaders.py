"""Feedback for a method: its kind's loader, from a registry.

    kind        methods            format (module)                                           loader
    pairs       dpo, ipo, mapo,    Pick-a-Pic v2 parquet (bench.data.pairs; world pairs:     load_pickapic
                sdpo, sft          bench.data.world_pairs)
    images      sft                the same file: the winners                                load_pickapic
    binary      kto                Diffusion-KTO's processed Pick-a-Pic: <root>/train_processed_v3.csv
                                   (file_name, caption, split) + images (bench.data.likes)    load_kto
    votes       balanced_dpo       Pick-a-Pic parquet + per scorer `vote_<s>`, `score_0_<s>`,
                                   `score_1_<s>` (bench.data.votes)                           load_votes
    attributes  cpo                imagefolder: metadata.jsonl + attribute_tree.json
                                   (bench.data.attributes)                                    load_attributes

Every kind is read from one preference source (the world's annotated pairs or data.path) and, when
the source is a pairs file, derived from it (bench.data.source), so in the shapes world every
method trains on the same images. A method states the options its loader reads in
`Method.feedback_options()` (bench.method). `data.source=pickapic_v2|hpdv2` streams a dataset
directory instead (bench.data.stream).
"""
from __future__ import annotations

from pathlib import Path

from bench.data import attributes, likes, votes
from bench.data.pairs import load_pickapic
from bench.data.source import FeedbackSource
from bench.registry import BenchError


def _pairs(src: FeedbackSource):
    data = load_pickapic(src.path, keep_ties=src.data.keep_ties, size=src.size)
    return data, {"path": str(src.path), "pairs": len(data), "ties_kept": int(data.ties.sum())}


# kind -> loader(FeedbackSource) -> (training data, info for result.json)
LOADERS = {"pairs": _pairs, "images": _pairs, "binary": likes.load_feedback, "votes": votes.load_feedback,
           "attributes": attributes.load_feedback}
STREAMED = ("pickapic_v2", "hpdv2")


def load_for_method(method, path: Path, data_cfg, cache_dir: Path, size: int, world: bool,
                    scorer_options: dict | None = None):
    """The training data of `method`'s feedback kind from the preference source `path`. Returns
    (data, info for result.json). `scorer_options` (eval.scorer_options) builds scorers that vote
    as the evaluation builds them."""
    if getattr(data_cfg, "source", None) in STREAMED:       # a directory, streamed
        from bench.data.stream import open_stream
        return open_stream(method, data_cfg, cache_dir, size)
    loader = LOADERS.get(method.feedback)
    if loader is None:
        raise BenchError(f"no feedback loader for kind {method.feedback!r}; valid: {', '.join(LOADERS)}")
    path = Path(path)
    if method.feedback not in ("pairs", "images") and not path.exists():
        raise BenchError(f"feedback source not found: {path}; set data.path")
    return loader(FeedbackSource(path, dict(method.feedback_options()), data_cfg, Path(cache_dir), size, world,
                                 dict(scorer_options or {})))
