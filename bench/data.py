"""Preference data: generated in the shapes world, stored and read in Pick-a-Pic v2's format.

File format (one parquet file, as Pick-a-Pic v2's shards): `caption` (str), `jpg_0`, `jpg_1`
(encoded image bytes), `label_0`, `label_1` (1/0, 0/1, or 0.5/0.5 for a tie), and, as Pick-a-Pic
records which model made each image, `model_0`, `model_1` (the generator of each image; world files
write them, the loader does not need them). Shapes-world files
store PNG bytes in the `jpg_*` columns: lossless at 32x32 (JPEG artifacts would be read by the
judges as defects); the loader decodes whatever PIL can open, so real shards load the same way.

Loader conventions (Diffusion-DPO, SalesforceAIResearch/DiffusionDPO train.py): ties (label_0 not
in {0, 1}) are dropped by default; each kept pair is reordered winner first.
"""
from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from bench import world as W
from bench.lazy import torch  # imported on first use: the config path needs no torch
from bench.locks import load_entry, making
from bench.registry import BenchError
from bench.files import atomic

log = logging.getLogger(__name__)
PICKAPIC_COLUMNS = ("caption", "jpg_0", "jpg_1", "label_0", "label_1")


@dataclass
class DataConfig:
    # world: simulated annotators on base samples; file: a parquet; pickapic_v2 | hpdv2: a
    # dataset directory streamed shard by shard (bench/stream.py)
    source: str = "world"
    path: str | None = None            # for source=file: a Pick-a-Pic-format parquet file
    n_pairs: int = 1024                # world: pairs of base samples to annotate
    keep_ties: bool = False            # Diffusion-DPO drops ties (train.py); True keeps them (skipped by pair methods)
    # world: the pool of generators a pair's two images come from (Pick-a-Pic pairs images of two
    # different models, model_0/model_1). "base": the base model as configured (one-entry pool:
    # on-policy pairs, two seeds of the base); "base@g3": at guidance 3; "base@s10": with 10
    # sampling steps (combinable: "base@g5@s10"); "renderer": the world's renderer with its corpus
    # defect model (world.defects, world.modes). With two or more, each pair draws two different ones.
    generators: list[str] = field(default_factory=lambda: ["base"])
    seed: int = 0
    annotator: W.AnnotatorConfig = field(default_factory=W.AnnotatorConfig)
    # Streamed sources (source=pickapic_v2 | hpdv2, path=<dataset directory>; bench/stream.py):
    split: str = "train"               # the split read (Pick-a-Pic: train, validation, ...; HPD: train, test)
    num_workers: int = 0               # DataLoader worker processes decoding units (0: in the trainer)
    shuffle_buffer: int = 1000         # pairs mixed across units (1: unit order only)
    # DiffusionDPO train.py: CenterCrop unless --random_crop; RandomHorizontalFlip unless --no_hflip
    random_crop: bool = False
    hflip: bool = True
    # none: encode every micro-batch; dist: cache the VAE posterior's mean and std (a fresh sample
    # every step, as DiffusionDPO) and the text conditioning; mode: the mean only (deterministic)
    latent_cache: str = "none"
    on_corrupt: str = "error"          # an undecodable image: stop (error) or skip its pair with a warning (skip)


@dataclass
class PairData:
    """Winner-first pairs: images uint8 (N, 3, H, W) each, captions, and tie flags. Methods that
    relabel pairs (bench/feedback.py) may add per-pair loss `weights` (N,) (pairs of weight 0 are
    not drawn) and `extra` per-pair tensors (N, ...) handed to the loss with each batch."""
    winners: torch.Tensor
    losers: torch.Tensor
    captions: list[str]
    ties: torch.Tensor
    weights: torch.Tensor | None = None
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.captions)


def encode_png(img: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img.permute(1, 2, 0).numpy()).save(buf, format="PNG")
    return buf.getvalue()


def decode_image(data: bytes, size: int | None = None) -> torch.Tensor:
    with Image.open(io.BytesIO(data)) as im:
        im = im.convert("RGB")
        if size is not None and im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR)
        return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)


def write_parquet_atomic(df: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic(path) as tmp:
        df.to_parquet(tmp, index=False)


@dataclass
class Pair:
    """One winner-first pair as a loader streams it; `index` is its row in the source."""
    index: int
    caption: str
    winner: torch.Tensor
    loser: torch.Tensor
    tie: bool


ON_CORRUPT = ("error", "skip")


def corrupt_image(where: str, index: int, err: Exception, on_corrupt: str, skipped: list | None) -> None:
    """A row whose image does not decode: one BenchError line (on_corrupt='error'), or one warning
    line naming the row, which is recorded in `skipped` (on_corrupt='skip')."""
    if on_corrupt not in ON_CORRUPT:
        raise BenchError(f"unknown on_corrupt {on_corrupt!r}; valid: {', '.join(ON_CORRUPT)}")
    if on_corrupt == "error":
        raise BenchError(f"{where}: row {index} has an undecodable image ({type(err).__name__}); "
                         "fix or drop that row, or read with on_corrupt='skip'")
    log.warning("%s: row %d has an undecodable image (%s); skipped", where, index, type(err).__name__)
    if skipped is not None:
        skipped.append(index)


def open_pickapic(path: str | Path):
    """A Pick-a-Pic-format parquet file, memory-mapped; its columns are checked."""
    import pyarrow.parquet as pq
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"preference file not found: {path}; set data.path to a Pick-a-Pic-format parquet file")
    try:
        pf = pq.ParquetFile(path, memory_map=True)
    except Exception as e:     # pyarrow: ArrowInvalid / OSError on a truncated or non-parquet file
        raise BenchError(f"{path}: not a readable parquet file ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
                         "replace it (a cache entry: delete it and rerun)") from None
    missing = [c for c in PICKAPIC_COLUMNS if c not in pf.schema_arrow.names]
    if missing:
        raise BenchError(f"{path}: missing column(s) {missing}; a Pick-a-Pic file has {list(PICKAPIC_COLUMNS)}")
    return pf


def read_pickapic(path: str | Path, keep_ties: bool = False, size: int | None = None,
                  on_corrupt: str = "error", first_index: int = 0, skipped: list | None = None):
    """Stream the pairs of one Pick-a-Pic-format parquet file, a record batch at a time: ties
    dropped unless keep_ties, winner first. Row numbers count from `first_index` (the file's
    offset in a sharded split). Rows with has_label=false (where the column exists) are left out;
    malformed labels or captions stop with the row; undecodable images follow `on_corrupt`."""
    pf = open_pickapic(path)
    # Pick-a-Pic v2 marks comparisons without a choice has_label=false; they are not pairs
    # (PickScore trainer/datasetss/clip_hf_dataset.py filters on has_label)
    labelled = "has_label" in pf.schema_arrow.names
    i, unlabelled = first_index, 0
    columns = list(PICKAPIC_COLUMNS) + (["has_label"] if labelled else [])
    for batch in pf.iter_batches(batch_size=64, columns=columns):
        for row in batch.to_pylist():
            if labelled and not row["has_label"]:
                unlabelled += 1
            else:
                pair = _pickapic_pair(row, i, path, keep_ties, size, on_corrupt, skipped)
                if pair is not None:
                    yield pair
            i += 1
    if unlabelled:
        log.info("%s: %d row(s) with has_label=false left out", path, unlabelled)


def check_labels(l0: float, l1: float, path, i: int) -> None:
    if (l0, l1) not in ((1.0, 0.0), (0.0, 1.0), (0.5, 0.5)):
        raise BenchError(f"{path}: row {i} has labels ({l0}, {l1}); expected (1, 0), (0, 1) or (0.5, 0.5)")


def _pickapic_pair(row: dict, i: int, path, keep_ties: bool, size, on_corrupt: str, skipped) -> Pair | None:
    l0, l1 = float(row["label_0"]), float(row["label_1"])
    check_labels(l0, l1, path, i)
    if not isinstance(row["caption"], str):
        raise BenchError(f"{path}: row {i} has a non-text caption; fix or drop that row")
    tie = l0 == 0.5
    if tie and not keep_ties:
        return None
    try:
        a, b = decode_image(row["jpg_0"], size), decode_image(row["jpg_1"], size)
    except Exception as e:  # PIL raises several types for corrupt data
        corrupt_image(str(path), i, e, on_corrupt, skipped)
        return None
    return Pair(i, row["caption"], *((b, a) if l0 == 0.0 else (a, b)), tie)


def stack_pairs(pairs) -> PairData:
    """PairData from streamed pairs (the caller bounds how many)."""
    pairs = list(pairs)
    return PairData(torch.stack([p.winner for p in pairs]), torch.stack([p.loser for p in pairs]),
                    [p.caption for p in pairs], torch.tensor([p.tie for p in pairs]))


def load_pickapic(path: str | Path, keep_ties: bool = False, size: int | None = None,
                  on_corrupt: str = "error") -> PairData:
    """Read a Pick-a-Pic-format parquet file; ties dropped unless keep_ties, winner first."""
    pairs = list(read_pickapic(path, keep_ties, size, on_corrupt))
    if not pairs:
        n = open_pickapic(path).metadata.num_rows
        raise BenchError(f"{path}: no usable pairs (all {n} rows are ties or the file is empty)")
    return stack_pairs(pairs)


@dataclass(frozen=True)
class Generator:
    """One generator of a pair pool (data.generators): its name as written in model_0/model_1."""
    name: str
    kind: str                          # base | renderer
    guidance: float | None = None      # None: the backbone's
    steps: int | None = None


def parse_generator(spec: str) -> Generator:
    """"base", "base@g3", "base@s10", "base@g5@s10" or "renderer" (data.generators)."""
    kind, *opts = str(spec).split("@")
    fix = ("data.generators entries are 'base', 'base@g<guidance>', 'base@s<steps>' (combinable, "
           "e.g. 'base@g5@s10') or 'renderer'")
    if kind not in ("base", "renderer") or (kind == "renderer" and opts):
        raise BenchError(f"unknown generator {spec!r}; {fix}")
    settings: dict = {}
    for o in opts:
        try:
            if o[:1] == "g" and "guidance" not in settings and float(o[1:]) >= 0:
                settings["guidance"] = float(o[1:])
            elif o[:1] == "s" and "steps" not in settings and int(o[1:]) >= 1:
                settings["steps"] = int(o[1:])
            else:
                raise ValueError
        except ValueError:
            raise BenchError(f"bad generator option {o!r} in {spec!r}; {fix}") from None
    return Generator(str(spec), kind, **settings)


def generator_pool(cfg: DataConfig) -> list[Generator]:
    pool = [parse_generator(g) for g in cfg.generators]
    if not pool or len({g.name for g in pool}) < len(pool):
        raise BenchError(f"data.generators must name one or more different generators, got {list(cfg.generators)}")
    return pool


STREAM_OPTIONS = ("split", "num_workers", "shuffle_buffer", "random_crop", "hflip", "latent_cache", "on_corrupt")


def world_repr(cfg: DataConfig) -> str:
    """repr(cfg) without the streamed sources' options (they do not change world pairs), as it
    was before they existed: the world's preference cache keys stay the same."""
    import dataclasses
    return "DataConfig(" + ", ".join(f"{f.name}={getattr(cfg, f.name)!r}" for f in dataclasses.fields(cfg)
                                     if f.name not in STREAM_OPTIONS) + ")"


def world_preferences(backbone, world_cfg: W.WorldConfig, cfg: DataConfig, cache_dir: Path,
                      weights_id: str, sample_fn) -> Path:
    """Pairs of images on train prompts from the generator pool (data.generators), labelled by
    the simulated annotator.

    Cached by content hash of (base weights, world, data config). `sample_fn(prompts, seeds,
    guidance, steps)` returns uint8 images from the base model (None: its configured settings).
    """
    import json
    key = hashlib.sha256(json.dumps([weights_id, repr(world_cfg), world_repr(cfg)]).encode()).hexdigest()[:12]
    path = Path(cache_dir) / "preferences" / f"{backbone.name}-{key}.parquet"
    if load_entry(path, open_pickapic) is not None:          # a damaged entry is deleted and made again
        return path
    prompts = W.split_prompts(world_cfg)["train"]
    if not prompts or cfg.n_pairs < 1:
        raise BenchError("no train prompts or data.n_pairs < 1: nothing to annotate; check world.* and data.n_pairs")
    rng = np.random.default_rng(cfg.seed)
    chosen = [prompts[i] for i in rng.integers(0, len(prompts), cfg.n_pairs)]
    texts = [p.text for p in chosen for _ in range(2)]
    seeds = [int(s) for s in rng.integers(0, 2**31 - 1, 2 * cfg.n_pairs)]
    pool = generator_pool(cfg)
    # each pair's two generators: two different ones from the pool (drawn after the prompts and
    # seeds, so a one-entry pool gives the same images as before pools existed)
    which = (np.stack([rng.choice(len(pool), 2, replace=False) for _ in range(cfg.n_pairs)]).ravel()
             if len(pool) > 1 else np.zeros(2 * cfg.n_pairs, int))
    log.info("making %d images for %d preference pairs (generators: %s)", len(texts), cfg.n_pairs,
             ", ".join(g.name for g in pool))
    # outside the entry's lock: concurrent jobs share the sampling out when sample_fn lets them
    images = _pool_images(pool, which, chosen, texts, seeds, world_cfg, sample_fn)
    with making(path, f"preference pairs {path.name}"):
        if load_entry(path, open_pickapic) is None:
            _annotate(images, texts, cfg, path, [pool[i].name for i in which])
    return path


def _pool_images(pool: list[Generator], which: np.ndarray, chosen: list, texts: list[str],
                 seeds: list[int], world_cfg: W.WorldConfig, sample_fn) -> torch.Tensor:
    """uint8 images (2N, 3, H, W): slot i made by pool[which[i]] for texts[i] with seeds[i]."""
    out: list = [None] * len(texts)
    for k, gen in enumerate(pool):
        slots = [i for i in range(len(texts)) if which[i] == k]
        if not slots:
            continue
        if gen.kind == "renderer":
            imgs = [_render_slot(chosen[i // 2], seeds[i], world_cfg) for i in slots]
        else:
            imgs = sample_fn([texts[i] for i in slots], [seeds[i] for i in slots], gen.guidance, gen.steps)
        for i, img in zip(slots, imgs):
            out[i] = img
    return torch.stack(out)


def _render_slot(prompt: W.Prompt, seed: int, world_cfg: W.WorldConfig) -> torch.Tensor:
    """The renderer as a generator: a corpus-like image (defects drawn from the corpus rates)."""
    rng = np.random.default_rng(seed)
    img = W.render(prompt, rng, world_cfg.image_size,
                   W.sample_defects(world_cfg.defects, rng, prompt, world_cfg.modes))
    return torch.from_numpy(np.round(img * 255).astype(np.uint8)).permute(2, 0, 1)


def _annotate(images: torch.Tensor, texts: list[str], cfg: DataConfig, path: Path,
              models: list[str]) -> None:
    arr = images.permute(0, 2, 3, 1).numpy().astype(np.float32) / 255.0
    gold = [W.gold_utility(W.judge(a, W.parse_prompt(t))) for a, t in zip(arr, texts)]
    ann_rng = np.random.default_rng(cfg.annotator.seed)
    rows = []
    for k in tqdm(range(cfg.n_pairs), desc="annotate", leave=False, mininterval=2):
        l0, l1 = W.annotate_pair(gold[2 * k], gold[2 * k + 1], cfg.annotator, ann_rng)
        rows.append({"caption": texts[2 * k], "jpg_0": encode_png(images[2 * k]),
                     "jpg_1": encode_png(images[2 * k + 1]), "label_0": l0, "label_1": l1,
                     "model_0": models[2 * k], "model_1": models[2 * k + 1]})
    write_parquet_atomic(pd.DataFrame(rows), path)
