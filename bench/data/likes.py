"""Per-image binary labels (Diffusion-KTO): "desirable" or not, from pairwise comparisons.

File: Diffusion-KTO's processed Pick-a-Pic layout, <root>/<split>_processed_v3.csv (file_name,
caption, split) with the images under <root>/<split>/. `split` is exclusive_win | exclusive_lose |
intersections (jacklishufan/diffusion-kto train_kto_sd_v1.5.py @226bbd0); that these are the images
that "only won / only lost / both" is read from the names [inferred]. Ties count as neither.

From a pairs file each image is in one comparison; in the shapes world `rounds` > 1 adds rounds of
comparisons between images of the same prompt, labelled by the same simulated annotator, to give
images several comparisons as in Pick-a-Pic (`world_comparisons`).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from bench import world as W
from bench.data.pairs import (PICKAPIC_COLUMNS, ImageData, decode_image, image_array, image_ext, read_frame,
                              unique_images, with_uids, write_parquet_atomic)
from bench.data.source import FeedbackSource, derive_once, source_key, write_dir
from bench.lazy import torch  # imported on first use
from bench.registry import BenchError

log = logging.getLogger(__name__)

KTO_SPLITS = ("exclusive_win", "exclusive_lose", "intersections")
# Diffusion-KTO `--policy` (train_kto_sd_v1.5.py): which images are desirable.
#   gt_label_wi_l (default, exps/example.sh): exclusive_win + intersections desirable
#   gt_label_w_l: intersections dropped;  gt_label_w_il: intersections undesirable
KTO_POLICIES = ("gt_label_wi_l", "gt_label_w_l", "gt_label_w_il")
KTO_CSV = "{split}_processed_v3.csv"


def world_comparisons(pairs_path: Path, out_path: Path, rounds: int, annotator: W.AnnotatorConfig) -> Path:
    """The pairs file plus `rounds - 1` further rounds of comparisons: in each round the images of
    every caption are shuffled and paired off (pairs already compared are skipped) and labelled
    by the simulated annotator (Bradley-Terry on gold, with ties). Output: a Pick-a-Pic parquet
    with `image_0_uid`, `image_1_uid`."""
    if rounds < 1:
        raise BenchError(f"comparison rounds must be >= 1, got {rounds}")
    df = with_uids(read_frame(pairs_path))
    new = []
    if rounds > 1:
        imgs = unique_images(df)
        gold = {u: W.gold_utility(W.judge(image_array(b), W.parse_prompt(c)))
                for u, b, c in tqdm(zip(imgs.uid, imgs["bytes"], imgs.caption), total=len(imgs),
                                    desc="judge", leave=False, mininterval=2)}
        done = {frozenset(p) for p in zip(df.image_0_uid, df.image_1_uid)}
        rng = np.random.default_rng([annotator.seed, 1])   # a stream apart from the pairs' own
        for _ in range(rounds - 1):
            for caption, group in imgs.groupby("caption", sort=True):
                order = group.index.to_numpy()[rng.permutation(len(group))]
                for a, b in zip(order[0::2], order[1::2]):
                    ua, ub = imgs.uid[a], imgs.uid[b]
                    if frozenset((ua, ub)) in done:
                        continue
                    done.add(frozenset((ua, ub)))
                    l0, l1 = W.annotate_pair(gold[ua], gold[ub], annotator, rng)
                    new.append({"caption": caption, "jpg_0": imgs["bytes"][a], "jpg_1": imgs["bytes"][b],
                                "label_0": l0, "label_1": l1, "image_0_uid": ua, "image_1_uid": ub})
    out = pd.concat([df, pd.DataFrame(new, columns=list(PICKAPIC_COLUMNS) + ["image_0_uid", "image_1_uid"])],
                    ignore_index=True) if new else df
    write_parquet_atomic(out, Path(out_path))
    return Path(out_path)


def pickapic_to_kto(pickapic_path: Path, root: Path, split: str = "train") -> Path:
    """Per-image labels from pairwise comparisons, in Diffusion-KTO's processed-Pick-a-Pic layout:
    <root>/<split>_processed_v3.csv with file_name (relative to root), caption and split
    (exclusive_win: only ever won; exclusive_lose: only ever lost; intersections: both), and the
    images under <root>/<split>/. Images that took part only in ties are left out."""
    df = with_uids(read_frame(pickapic_path))
    won, lost = set(), set()
    for r in df.itertuples(index=False):
        l0 = float(r.label_0)
        if l0 == 0.5:
            continue
        w, l_ = (r.image_0_uid, r.image_1_uid) if l0 == 1.0 else (r.image_1_uid, r.image_0_uid)
        won.add(w); lost.add(l_)
    imgs = unique_images(df)
    imgs = imgs[imgs.uid.isin(won | lost)]

    def write(tmp: Path):
        (tmp / split).mkdir()
        rows = []
        for u, b, c in zip(imgs.uid, imgs["bytes"], imgs.caption):
            name = f"{split}/{u}{image_ext(b)}"
            (tmp / name).write_bytes(b)
            kind = "intersections" if u in won and u in lost else ("exclusive_win" if u in won else "exclusive_lose")
            rows.append({"file_name": name, "caption": c, "split": kind})
        pd.DataFrame(rows, columns=["file_name", "caption", "split"]).to_csv(tmp / KTO_CSV.format(split=split), index=False)
    return write_dir(Path(root), write)


def load_kto(root: Path, policy: str = "gt_label_wi_l", split: str = "train", size: int | None = None) -> ImageData:
    """Read a processed-Pick-a-Pic directory; labels by Diffusion-KTO's `--policy`. Columns as the
    official code reads them (file_name, caption, split); the README's variant (file_path, label)
    is accepted too. Missing captions become "" (the code's `caption.fillna("")`)."""
    root = Path(root)
    csv = root / KTO_CSV.format(split=split)
    if not csv.is_file():
        raise BenchError(f"no {csv.name} in {root}; a Diffusion-KTO data folder holds "
                         f"{KTO_CSV.format(split=split)} and the images it names")
    if policy not in KTO_POLICIES:
        raise BenchError(f"unknown KTO labelling policy {policy!r}; valid: {', '.join(KTO_POLICIES)}")
    df = pd.read_csv(csv).rename(columns={"file_path": "file_name", "label": "split"})
    missing = [c for c in ("file_name", "caption", "split") if c not in df.columns]
    if missing:
        raise BenchError(f"{csv}: missing column(s) {missing}; expected file_name, caption, split")
    df["caption"] = df["caption"].fillna("")
    bad = sorted(set(df["split"]) - set(KTO_SPLITS))
    if bad:
        raise BenchError(f"{csv}: unknown split value(s) {bad}; valid: {', '.join(KTO_SPLITS)}")
    counts = {k: int((df["split"] == k).sum()) for k in KTO_SPLITS}
    if policy == "gt_label_w_l":
        df = df[df["split"] != "intersections"]
        labels = df["split"] == "exclusive_win"
    elif policy == "gt_label_wi_l":
        labels = (df["split"] == "exclusive_win") | (df["split"] == "intersections")
    else:
        labels = df["split"] == "exclusive_win"
    if df.empty:
        raise BenchError(f"{csv}: no images left under policy {policy}")
    images = []
    for i, name in enumerate(df["file_name"]):
        try:
            images.append(decode_image((root / name).read_bytes(), size))
        except Exception as e:  # missing file or undecodable bytes
            raise BenchError(f"{csv}: row {i} names an unreadable image {name!r} ({type(e).__name__}); "
                             "fix or drop that row") from None
    return ImageData(torch.stack(images), [str(c) for c in df["caption"]],
                     labels=torch.tensor(labels.to_numpy(), dtype=torch.bool),
                     info={"splits": counts, "policy": policy})


def kto_sampling_weights(labels: torch.Tensor, positive_ratio: float) -> torch.Tensor:
    """Diffusion-KTO make_weights_for_balanced_classes: class weight N / (count + 1e-9), times
    positive_ratio for desirable and (1 - positive_ratio) for undesirable images, so a draw is
    desirable with probability positive_ratio."""
    labels = labels.bool()
    n = float(len(labels))
    pos, neg = float(labels.sum()), float((~labels).sum())
    w_pos = n / (pos + 1e-9) * positive_ratio
    w_neg = n / (neg + 1e-9) * (1 - positive_ratio)
    return torch.where(labels, torch.tensor(w_pos, dtype=torch.float64), torch.tensor(w_neg, dtype=torch.float64))




def load_feedback(src: FeedbackSource):
    """KTO's training images from `src.path`: a processed-Pick-a-Pic folder as it is, or a pairs
    file turned into one (with `options["rounds"] - 1` extra comparison rounds in the world).
    Options: rounds (Diffusion-KTO config comparison_rounds), policy (--policy)."""
    rounds = int(src.options.get("rounds", 1))
    policy = src.options.get("policy", "gt_label_wi_l")
    path = Path(src.path)
    if path.is_dir():
        root = path
    else:
        comp = path
        if rounds > 1 and not src.world:
            log.warning("method.comparison_rounds=%d needs the world's annotator; using the "
                        "comparisons in %s only", rounds, path)
        if src.world and rounds > 1:
            comp = src.derived / f"comparisons-{source_key(path, rounds, repr(src.data.annotator))}.parquet"
            derive_once(comp, comp, lambda: world_comparisons(path, comp, rounds, src.data.annotator))
        root = src.derived / f"kto-{source_key(comp)}"
        derive_once(root, root / KTO_CSV.format(split="train"), lambda: pickapic_to_kto(comp, root))
    data = load_kto(root, policy, size=src.size)
    return data, {"path": str(root), "images": len(data), "desirable": int(data.labels.sum()), **data.info}
