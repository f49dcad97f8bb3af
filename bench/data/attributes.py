"""Per-image attribute annotations over an attribute tree (CPO).

File: the Hugging Face imagefolder convention (the CPO paper's annotation files are not public
[not found]): <root>/metadata.jsonl (file_name, caption, attributes {name: 0/1}) and
<root>/attribute_tree.json ({node: {positive: [...], negative: [...]}}). In the shapes world the
labels are the judges' reading of bench.world.ATTRIBUTE_TREE, each flipped with probability
`noise`; on real data the folder is made from a Pick-a-Pic file and an attribute-annotation JSON
(method.attributes_file, `attributes_from_file`).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from bench import world as W
from bench.data.pairs import decode_image, image_array, image_ext, read_frame, unique_images, with_uids
from bench.data.source import FeedbackSource, derive_once, source_key, write_dir
from bench.lazy import torch  # imported on first use
from bench.registry import BenchError

log = logging.getLogger(__name__)

ATTR_META, ATTR_TREE = "metadata.jsonl", "attribute_tree.json"


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


def annotate_attributes(pickapic_path: Path, root: Path, noise: float = 0.0, seed: int = 0,
                        tree: dict | None = None) -> Path:
    """Per-image attribute annotations of every image of a Pick-a-Pic file (order of first
    appearance): the judges' attributes, each label flipped with probability `noise`."""
    tree = W.ATTRIBUTE_TREE if tree is None else tree
    names = [a for node in tree.values() for pol in ("positive", "negative") for a in node[pol]]
    imgs = unique_images(with_uids(read_frame(pickapic_path)))
    rng = np.random.default_rng([seed, 2])

    def write(tmp: Path):
        (tmp / "images").mkdir()
        with open(tmp / ATTR_META, "w") as f:
            for u, b, c in tqdm(zip(imgs.uid, imgs["bytes"], imgs.caption), total=len(imgs), desc="annotate attributes",
                                leave=False, mininterval=2):
                name = f"images/{u}{image_ext(b)}"
                (tmp / name).write_bytes(b)
                attrs = W.judge(image_array(b), W.parse_prompt(c)).attributes()
                flips = rng.random(len(names)) < noise
                labels = {a: int(attrs[a]) ^ int(fl) for a, fl in zip(names, flips)}
                f.write(json.dumps({"file_name": name, "caption": c, "attributes": labels}) + "\n")
        (tmp / ATTR_TREE).write_text(json.dumps({k: {p: list(v[p]) for p in ("positive", "negative")}
                                                 for k, v in tree.items()}, indent=1))
    return write_dir(Path(root), write)


def attributes_from_file(pickapic_path: Path, attr_file: Path, root: Path) -> Path:
    """The attribute folder (metadata.jsonl + attribute_tree.json, read by load_attributes) of every
    image of a Pick-a-Pic file, from an attribute-annotation file (CPO on real data):

        {"tree":   {"<node>": {"positive": ["<attr>", ...], "negative": ["<attr>", ...]}, ...},
         "images": {"<image uid>": {"positive": ["<attr>", ...], "negative": ["<attr>", ...]}, ...}}

    The image uid is the file's image_0_uid / image_1_uid (Pick-a-Pic v2), or for a file without
    those columns the first 16 hex digits of the sha256 of the image bytes (bench.data.pairs.with_uids).
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
    imgs = unique_images(with_uids(read_frame(pickapic_path)))
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
                name = f"images/{u}{image_ext(b)}"
                (tmp / name).write_bytes(b)
                f.write(json.dumps({"file_name": name, "caption": str(c), "attributes": labels}) + "\n")
        (tmp / ATTR_TREE).write_text(json.dumps({k: {p: list(v.get(p, [])) for p in ("positive", "negative")}
                                                 for k, v in tree.items()}, indent=1))
    return write_dir(Path(root), write)


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


def load_feedback(src: FeedbackSource):
    """Attribute-annotated images: an attribute folder as it is; a pairs file with its annotation
    file (options["attributes_file"], real data); or, in the world, the judges' annotations of the
    pairs' images with each label flipped with probability options["noise"]."""
    noise = float(src.options.get("noise", 0.0))
    attr_file = src.options.get("attributes_file")
    path = Path(src.path)
    if path.is_dir():
        root = path
    elif attr_file:
        attr_file = Path(attr_file)
        if not attr_file.is_file():
            raise BenchError(f"method.attributes_file {attr_file} not found; it holds the per-image attribute "
                             "annotations of data.path (format: docs/methods.md, 'CPO attribute file')")
        root = src.derived / f"attributes-file-{source_key(path, source_key(attr_file))}"
        derive_once(root, root / ATTR_META, lambda: attributes_from_file(path, attr_file, root))
    elif not src.world:
        raise BenchError(f"method=cpo on {path} needs per-image attribute annotations: set "
                         "method.attributes_file=<attributes.json> (format: docs/methods.md, 'CPO attribute "
                         "file'), or data.path=<attribute folder with metadata.jsonl and attribute_tree.json>")
    else:
        root = src.derived / f"attributes-{source_key(path, noise, src.data.seed)}"
        derive_once(root, root / ATTR_META, lambda: annotate_attributes(path, root, noise=noise, seed=src.data.seed))
    data = load_attributes(root, size=src.size)
    return data, {"path": str(root), "images": len(data), "attributes": data.names}
