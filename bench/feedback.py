"""Feedback formats beyond Pick-a-Pic pairs: generated in the shapes world, written in the file
format of their real-world counterpart, and read by the same loader whichever world made them.

    kind        method        file                                                     loader
    pairs       dpo, sft      Pick-a-Pic v2 parquet (bench/data.py)                    load_pickapic
    binary      kto           Diffusion-KTO's processed Pick-a-Pic: <root>/train_processed_v3.csv
                              (file_name, caption, split) + <root>/train/<image>       load_kto
    votes       balanced_dpo  Pick-a-Pic parquet + per scorer `vote_<s>` (label_0
                              convention) and `score_0_<s>`, `score_1_<s>`             load_votes
    attributes  cpo           imagefolder: <root>/metadata.jsonl (file_name, caption,
                              attributes {name: 0/1}) + <root>/attribute_tree.json     load_attributes
                              (real data: made from a Pick-a-Pic file and an attribute-
                              annotation JSON, method.attributes_file)                 attributes_from_file

Every kind is derived from the same annotated base-model samples as the pairs
(bench.data.world_preferences), so the methods are compared on the same images:
  * binary: an image won, lost, or both across the comparisons it took part in. Diffusion-KTO's
    `split` column (exclusive_win | exclusive_lose | intersections; jacklishufan/diffusion-kto
    train_kto_sd_v1.5.py @226bbd0) names these sets; that they are "only won / only lost / both"
    is read from the names [inferred]. In the world each image is in one pair, so `rounds` > 1
    adds rounds of comparisons between images of the same prompt, labelled by the same simulated
    annotator, to give images several comparisons as in Pick-a-Pic. Ties count as neither.
  * votes: each proxy scorer scores both images; its vote is 1 / 0 for image 0 / 1, 0.5 within
    the scorer's tie tolerance. Scores are stored oriented so that higher is better.
  * attributes: the judges' reading of the attribute tree (bench.world.ATTRIBUTE_TREE) per image,
    each label flipped with probability `noise`. The CPO paper's annotation files are not public
    [not found], so the layout is the Hugging Face imagefolder convention (metadata.jsonl).

Derived files are cached under <cache>/feedback/, keyed by their source file and options, and
written to a temp name then renamed into place.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from bench import world as W
from bench.data import (PICKAPIC_COLUMNS, PairData, check_labels, decode_image, load_pickapic, open_pickapic,
                        write_parquet_atomic)
from bench.locks import intact, making, seal_path
from bench.registry import BenchError
from bench.files import atomic

log = logging.getLogger(__name__)

KTO_SPLITS = ("exclusive_win", "exclusive_lose", "intersections")
# Diffusion-KTO `--policy` (train_kto_sd_v1.5.py): which images are desirable.
#   gt_label_wi_l (default, exps/example.sh): exclusive_win + intersections desirable
#   gt_label_w_l: intersections dropped;  gt_label_w_il: intersections undesirable
KTO_POLICIES = ("gt_label_wi_l", "gt_label_w_l", "gt_label_w_il")
KTO_CSV = "{split}_processed_v3.csv"
ATTR_META, ATTR_TREE = "metadata.jsonl", "attribute_tree.json"


# ----------------------------------------------------------------------------- data classes

@dataclass
class ImageData:
    """Single images: uint8 (N, 3, H, W), captions, optional per-image labels (bool), sampling
    weights (drawn with replacement in proportion) and extra per-image tensors."""
    images: torch.Tensor
    captions: list[str]
    labels: torch.Tensor | None = None
    sampling_weights: torch.Tensor | None = None
    extra: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.captions)


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


@dataclass
class AttributeData:
    """Images with binary attribute labels (N, K) over a tree: each attribute's polarity
    (+1 positive: should be present, -1 negative: should be absent) and root node."""
    images: torch.Tensor
    captions: list[str]
    attributes: torch.Tensor
    names: list[str]
    polarity: torch.Tensor
    nodes: list[str]

    def __len__(self) -> int:
        return len(self.captions)


# ----------------------------------------------------------------------------- helpers

def _uid(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def with_uids(df: pd.DataFrame) -> pd.DataFrame:
    """Pick-a-Pic v2 names its images (`image_0_uid`, `image_1_uid`); files without those columns
    get a content hash of the encoded bytes."""
    df = df.copy()
    for side in (0, 1):
        col = f"image_{side}_uid"
        if col not in df.columns:
            df[col] = [_uid(b) for b in df[f"jpg_{side}"]]
        df[col] = df[col].astype(str)
    return df


def _read_pickapic(path: Path) -> pd.DataFrame:
    """A whole Pick-a-Pic-format file as a frame, with the streaming reader's rules
    (bench.data.read_pickapic): rows with has_label=false left out, labels checked."""
    path = Path(path)
    pf = open_pickapic(path)                  # missing file, unreadable parquet, missing columns
    df = pf.read().to_pandas()
    if "has_label" in df.columns:
        keep = df["has_label"].astype(bool).to_numpy()
        if not keep.all():
            log.info("%s: %d row(s) with has_label=false left out", path, int((~keep).sum()))
            df = df[keep].reset_index(drop=True)
    for i, (l0, l1) in enumerate(zip(df["label_0"].to_numpy(float), df["label_1"].to_numpy(float))):
        check_labels(float(l0), float(l1), path, i)
    return df


def _images(df: pd.DataFrame) -> pd.DataFrame:
    """Unique images of a Pick-a-Pic frame in order of first appearance: uid, bytes, caption."""
    rows, seen = [], set()
    for r in df.itertuples(index=False):
        for side in (0, 1):
            uid = getattr(r, f"image_{side}_uid")
            if uid not in seen:
                seen.add(uid)
                rows.append({"uid": uid, "bytes": getattr(r, f"jpg_{side}"), "caption": r.caption})
    return pd.DataFrame(rows, columns=["uid", "bytes", "caption"])


def _as_array(data: bytes) -> np.ndarray:
    return decode_image(data).permute(1, 2, 0).numpy().astype(np.float32) / 255.0


def _ext(data: bytes) -> str:
    return ".png" if data[:8] == b"\x89PNG\r\n\x1a\n" else ".jpg"


def _cache_key(path: Path, *options) -> str:
    # a sealed cache entry is known by its content (bench.locks), so that one made again byte for
    # byte keeps the files derived from it; any other file by its size and modification time
    st, sealed = Path(path).stat(), seal_path(path)
    version = json.loads(sealed.read_text()) if sealed.is_file() else [st.st_size, st.st_mtime_ns]
    blob = json.dumps([str(Path(path).resolve()), version, *options], default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _write_dir_atomic(out: Path, write) -> Path:
    """write(tmp_dir) fills a temp directory, which is then renamed to `out`."""
    with atomic(out) as tmp:
        tmp.mkdir(parents=True)
        write(tmp)
    return out


# ----------------------------------------------------------------------------- binary (KTO)

def world_comparisons(pairs_path: Path, out_path: Path, rounds: int, annotator: W.AnnotatorConfig) -> Path:
    """The pairs file plus `rounds - 1` further rounds of comparisons: in each round the images of
    every caption are shuffled and paired off (pairs already compared are skipped) and labelled
    by the simulated annotator (Bradley-Terry on gold, with ties). Output: a Pick-a-Pic parquet
    with `image_0_uid`, `image_1_uid`."""
    if rounds < 1:
        raise BenchError(f"comparison rounds must be >= 1, got {rounds}")
    df = with_uids(_read_pickapic(pairs_path))
    new = []
    if rounds > 1:
        imgs = _images(df)
        gold = {u: W.gold_utility(W.judge(_as_array(b), W.parse_prompt(c)))
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
    df = with_uids(_read_pickapic(pickapic_path))
    won, lost = set(), set()
    for r in df.itertuples(index=False):
        l0 = float(r.label_0)
        if l0 == 0.5:
            continue
        w, l_ = (r.image_0_uid, r.image_1_uid) if l0 == 1.0 else (r.image_1_uid, r.image_0_uid)
        won.add(w); lost.add(l_)
    imgs = _images(df)
    imgs = imgs[imgs.uid.isin(won | lost)]

    def write(tmp: Path):
        (tmp / split).mkdir()
        rows = []
        for u, b, c in zip(imgs.uid, imgs["bytes"], imgs.caption):
            name = f"{split}/{u}{_ext(b)}"
            (tmp / name).write_bytes(b)
            kind = "intersections" if u in won and u in lost else ("exclusive_win" if u in won else "exclusive_lose")
            rows.append({"file_name": name, "caption": c, "split": kind})
        pd.DataFrame(rows, columns=["file_name", "caption", "split"]).to_csv(tmp / KTO_CSV.format(split=split), index=False)
    return _write_dir_atomic(Path(root), write)


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


# ----------------------------------------------------------------------------- votes (BalancedDPO)

def score_votes(pickapic_path: Path, out_path: Path, scorers: list[str], batch_size: int = 64,
                scorer_options: dict | None = None) -> Path:
    """The Pick-a-Pic file plus, for each scorer, both images' scores (oriented higher-is-better)
    and its vote in label_0 convention: 1 (image 0), 0 (image 1), 0.5 within its tie tolerance.
    Each scorer is built with its `eval.scorer_options` entry (weights path, device, ...), as the
    evaluation builds it. Images are scored at their own size: Pick-a-Pic mixes sizes (512, 768,
    1024, non-square), so each batch is split into groups of equal size before stacking (no resize
    here; each scorer's own preprocessing resizes as it does for any image)."""
    from bench.evaluate import get_scorer
    df = _read_pickapic(pickapic_path).copy()
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
    ties included. Images are decoded and validated by bench.data.load_pickapic."""
    path = Path(path)
    pairs = load_pickapic(path, keep_ties=True, size=size)
    df = _read_pickapic(path)                 # the same rows as load_pickapic (has_label)
    missing = [f"vote_{v}" for v in voters if f"vote_{v}" not in df.columns]
    if missing:
        raise BenchError(f"{path}: missing vote column(s) {missing}; score the file with "
                         "bench.feedback.score_votes or choose voters it has")
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


# ----------------------------------------------------------------------------- attributes (CPO)

def annotate_attributes(pickapic_path: Path, root: Path, noise: float = 0.0, seed: int = 0,
                        tree: dict | None = None) -> Path:
    """Per-image attribute annotations of every image of a Pick-a-Pic file (order of first
    appearance): the judges' attributes, each label flipped with probability `noise`."""
    tree = W.ATTRIBUTE_TREE if tree is None else tree
    names = [a for node in tree.values() for pol in ("positive", "negative") for a in node[pol]]
    imgs = _images(with_uids(_read_pickapic(pickapic_path)))
    rng = np.random.default_rng([seed, 2])

    def write(tmp: Path):
        (tmp / "images").mkdir()
        with open(tmp / ATTR_META, "w") as f:
            for u, b, c in tqdm(zip(imgs.uid, imgs["bytes"], imgs.caption), total=len(imgs), desc="annotate attributes",
                                leave=False, mininterval=2):
                name = f"images/{u}{_ext(b)}"
                (tmp / name).write_bytes(b)
                attrs = W.judge(_as_array(b), W.parse_prompt(c)).attributes()
                flips = rng.random(len(names)) < noise
                labels = {a: int(attrs[a]) ^ int(fl) for a, fl in zip(names, flips)}
                f.write(json.dumps({"file_name": name, "caption": c, "attributes": labels}) + "\n")
        (tmp / ATTR_TREE).write_text(json.dumps({k: {p: list(v[p]) for p in ("positive", "negative")}
                                                 for k, v in tree.items()}, indent=1))
    return _write_dir_atomic(Path(root), write)


def attributes_from_file(pickapic_path: Path, attr_file: Path, root: Path) -> Path:
    """The attribute folder (metadata.jsonl + attribute_tree.json, read by load_attributes) of every
    image of a Pick-a-Pic file, from an attribute-annotation file (CPO on real data):

        {"tree":   {"<node>": {"positive": ["<attr>", ...], "negative": ["<attr>", ...]}, ...},
         "images": {"<image uid>": {"positive": ["<attr>", ...], "negative": ["<attr>", ...]}, ...}}

    The image uid is the file's image_0_uid / image_1_uid (Pick-a-Pic v2), or for a file without
    those columns the first 16 hex digits of the sha256 of the image bytes (bench.feedback.with_uids).
    An image's `positive` list names the positive attributes it has, `negative` the negative ones it
    has (its defects); every attribute of the tree not listed is absent (0). Every image of the
    file must be annotated; an attribute must be in the tree under the list's polarity."""
    attr_file = Path(attr_file)
    try:
        spec = json.loads(attr_file.read_text())
        tree, ann = spec["tree"], spec["images"]
        if not isinstance(tree, dict) or not isinstance(ann, dict):
            raise ValueError
        polarity = {}
        for node, groups in tree.items():
            for pol in ("positive", "negative"):
                for a in groups.get(pol, []):
                    if a in polarity:
                        raise ValueError
                    polarity[a] = pol
    except Exception as e:
        raise BenchError(f"{attr_file}: not an attribute-annotation file ({type(e).__name__}); expected JSON "
                         '{"tree": {node: {"positive": [...], "negative": [...]}}, "images": {uid: {"positive": '
                         '[...], "negative": [...]}}} with each attribute named once in the tree') from None
    if not polarity:
        raise BenchError(f"{attr_file}: the tree names no attribute")
    imgs = _images(with_uids(_read_pickapic(pickapic_path)))
    missing = [u for u in imgs.uid if u not in ann]
    if missing:
        raise BenchError(f"{attr_file}: {len(missing)} of {len(imgs)} image(s) of {pickapic_path} have no annotation "
                         f"(first: uid {missing[0]}); annotate every image or drop its pairs")
    rows = []
    for u in imgs.uid:
        labels = dict.fromkeys(polarity, 0)
        rec = ann[u]
        for pol in ("positive", "negative"):
            for a in rec.get(pol, []) if isinstance(rec, dict) else [None]:
                if polarity.get(a) != pol:
                    raise BenchError(f"{attr_file}: image {u} lists {a!r} as {pol}, but the tree "
                                     f"{'has it as ' + polarity[a] if a in polarity else 'does not name it'}")
                labels[a] = 1
        rows.append(labels)

    def write(tmp: Path):
        (tmp / "images").mkdir()
        with open(tmp / ATTR_META, "w") as f:
            for u, b, c, labels in zip(imgs.uid, imgs["bytes"], imgs.caption, rows):
                name = f"images/{u}{_ext(b)}"
                (tmp / name).write_bytes(b)
                f.write(json.dumps({"file_name": name, "caption": str(c), "attributes": labels}) + "\n")
        (tmp / ATTR_TREE).write_text(json.dumps({k: {p: list(v.get(p, [])) for p in ("positive", "negative")}
                                                 for k, v in tree.items()}, indent=1))
    return _write_dir_atomic(Path(root), write)


def load_attributes(root: Path, size: int | None = None) -> AttributeData:
    """Read an attribute-annotated image folder: attribute_tree.json ({node: {positive: [...],
    negative: [...]}}) and metadata.jsonl (one {file_name, caption, attributes} per image, every
    attribute of the tree labelled 0 or 1)."""
    root = Path(root)
    meta, tree_f = root / ATTR_META, root / ATTR_TREE
    for f in (meta, tree_f):
        if not f.is_file():
            raise BenchError(f"no {f.name} in {root}; an attribute folder holds {ATTR_META} and {ATTR_TREE}")
    tree = json.loads(tree_f.read_text())
    names, polarity, nodes = [], [], []
    for node, groups in tree.items():
        for pol, sign in (("positive", 1.0), ("negative", -1.0)):
            for a in groups.get(pol, []):
                names.append(a); polarity.append(sign); nodes.append(node)
    if not names or len(set(names)) != len(names):
        raise BenchError(f"{tree_f}: the tree must name each attribute once (found {names})")
    images, caps, labels = [], [], []
    for i, line in enumerate(meta.read_text().splitlines()):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            vals = [rec["attributes"][a] for a in names]
            if any(v not in (0, 1) for v in vals) or not isinstance(rec["caption"], str):
                raise ValueError
            img = decode_image((root / rec["file_name"]).read_bytes(), size)
        except Exception as e:
            raise BenchError(f"{meta}: line {i + 1} is malformed ({type(e).__name__}): needs file_name of a "
                             f"readable image, a text caption and 0/1 for each of {names}") from None
        images.append(img); caps.append(rec["caption"]); labels.append(vals)
    if not caps:
        raise BenchError(f"{meta}: no annotated images")
    return AttributeData(torch.stack(images), caps, torch.tensor(labels, dtype=torch.float32), names,
                         torch.tensor(polarity), nodes)


# ----------------------------------------------------------------------------- runner glue

def _once(entry: Path, done: Path, make) -> None:
    """make() the cache entry `entry` unless `done` (its last file) exists and the entry matches
    its seal (a damaged entry is deleted and made again); under the entry's lock, so that
    concurrent jobs compute it once (bench.locks)."""
    if done.is_file() and intact(entry):
        return
    with making(entry, f"feedback file {entry.name}"):
        if not (done.is_file() and intact(entry)):
            make()


def load_for_method(method, path: Path, data_cfg, cache_dir: Path, size: int, world: bool,
                    scorer_options: dict | None = None):
    """The training data of a method's feedback kind from the preference source `path` (the world's
    annotated pairs, or data.path). Returns (data, info for result.json). `scorer_options`
    (eval.scorer_options) builds BalancedDPO's voters as the evaluation builds its scorers."""
    path = Path(path)
    kind, cfg = method.feedback, method.cfg
    base = Path(cache_dir) / "feedback"
    if getattr(data_cfg, "source", None) in ("pickapic_v2", "hpdv2"):   # a directory, streamed
        from bench.stream import open_stream
        return open_stream(method, data_cfg, cache_dir, size)
    if kind in ("pairs", "images"):
        data = load_pickapic(path, keep_ties=data_cfg.keep_ties, size=size)
        return data, {"path": str(path), "pairs": len(data), "ties_kept": int(data.ties.sum())}
    if not path.exists():
        raise BenchError(f"feedback source not found: {path}; set data.path")
    if kind == "binary":
        rounds = int(getattr(cfg, "comparison_rounds", 1))
        policy = getattr(cfg, "policy", "gt_label_wi_l")
        if path.is_dir():
            root = path
        else:
            comp = path
            if rounds > 1 and not world:
                log.warning("method.comparison_rounds=%d needs the world's annotator; using the "
                            "comparisons in %s only", rounds, path)
            if world and rounds > 1:
                comp = base / f"comparisons-{_cache_key(path, rounds, repr(data_cfg.annotator))}.parquet"
                _once(comp, comp, lambda: world_comparisons(path, comp, rounds, data_cfg.annotator))
            root = base / f"kto-{_cache_key(comp)}"
            _once(root, root / KTO_CSV.format(split="train"), lambda: pickapic_to_kto(comp, root))
        data = load_kto(root, policy, size=size)
        return data, {"path": str(root), "images": len(data), "desirable": int(data.labels.sum()), **data.info}
    if kind == "votes":
        voters = list(getattr(cfg, "voters"))
        if not path.is_file():
            raise BenchError(f"{path}: votes come from a Pick-a-Pic-format parquet file; set data.path to one")
        scored = path
        if not has_votes(path, voters):
            opts = {v: dict((scorer_options or {}).get(v) or {}) for v in voters}
            scored = base / f"votes-{_cache_key(path, voters, opts)}.parquet"
            _once(scored, scored, lambda: score_votes(path, scored, voters, scorer_options=opts))
        data = load_votes(scored, voters, size=size)
        return data, {"path": str(scored), "pairs": len(data), "voters": voters}
    if kind == "attributes":
        noise = float(getattr(cfg, "attribute_noise", 0.0))
        attr_file = getattr(cfg, "attributes_file", None)
        if path.is_dir():
            root = path
        elif attr_file:
            attr_file = Path(attr_file)
            if not attr_file.is_file():
                raise BenchError(f"method.attributes_file {attr_file} not found; it holds the per-image attribute "
                                 "annotations of data.path (format: docs/methods.md, 'CPO attribute file')")
            root = base / f"attributes-file-{_cache_key(path, _cache_key(attr_file))}"
            _once(root, root / ATTR_META, lambda: attributes_from_file(path, attr_file, root))
        elif not world:
            raise BenchError(f"method=cpo on {path} needs per-image attribute annotations: set "
                             "method.attributes_file=<attributes.json> (format: docs/methods.md, 'CPO attribute "
                             "file'), or data.path=<attribute folder with metadata.jsonl and attribute_tree.json>")
        else:
            root = base / f"attributes-{_cache_key(path, noise, data_cfg.seed)}"
            _once(root, root / ATTR_META, lambda: annotate_attributes(path, root, noise=noise, seed=data_cfg.seed))
        data = load_attributes(root, size=size)
        return data, {"path": str(root), "images": len(data), "attributes": data.names}
    raise BenchError(f"no feedback loader for kind {kind!r}; valid: pairs, images, binary, votes, attributes")


def pairs_from_images(captions: list[str]) -> list[tuple[int, int]]:
    """Consecutive images of the same caption, in file order: (0, 1), (2, 3), ... within each
    caption (an odd one out is left unpaired). On files made by annotate_attributes from a pairs
    file this gives back the original pairs."""
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(captions):
        groups.setdefault(c, []).append(i)
    out = []
    for idx in groups.values():
        out.extend(zip(idx[0::2], idx[1::2]))
    return sorted(out)


__all__ = ["ImageData", "VoteData", "AttributeData", "PairData", "load_kto", "load_votes", "load_attributes",
           "pickapic_to_kto", "world_comparisons", "score_votes", "annotate_attributes", "attributes_from_file",
           "load_for_method",
           "kto_sampling_weights", "pairs_from_images"]
