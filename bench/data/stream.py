"""Real preference data at scale: a directory of shards read as a stream, sharded across ranks,
with the reference scripts' crop/flip and an optional cache of VAE latents and text embeddings.

`data.source=pickapic_v2|hpdv2` with `data.path=<dataset directory>` (bench.data.real documents
both layouts). Nothing is decoded whole: the data is cut into *units* read one at a time,

    pickapic_v2   one parquet row group of one shard (the split's shards in name order, as
                  bench.data.real.pickapic_shards lists them); only the footers are read up front
    hpdv2         a block of HPD_BLOCK records of <root>/<split>.json; a record gives every pair
                  of its images (bench.data.real._hpd_record), images read as the unit is read

and a pair is named by its key (row or record index, pair number within the record).

Order and sharding (all of it a pure function of the job seed, the epoch and the rank):
  * epoch e lists the units in the order of a permutation drawn from (seed, e); rank r of w
    takes the units at positions r, r + w, ... (units are disjoint, so the ranks together see
    every labelled non-tie pair exactly once per epoch). With fewer units than ranks every rank
    reads every unit and keeps its kept pairs at positions r, r + w, ... (in row order).
    Ranks may hold different numbers of pairs in an epoch; the stream is endless (epoch after
    epoch), so every rank always has a next batch and the steps stay in lock step.
  * a DataLoader (data.num_workers processes; 0: in this process) reads the rank's units;
    worker k reads the units at positions k, k + K, ... of the rank's endless unit sequence and
    yields one item per unit, which the DataLoader hands on in worker order, i.e. the sequence's
    order: the order does not depend on the number of workers.
  * a shuffle buffer of data.shuffle_buffer pairs (seeded from (seed, rank)) mixes pairs across
    units; a rank's micro-batch is train.batch_size / num_processes pairs taken from it.
  * rows with has_label=false and ties are left out as bench.data.pairs.read_pickapic does (PickScore
    trainer/datasetss/clip_hf_dataset.py filters on has_label; DiffusionDPO train.py drops ties);
    winner first. data.keep_ties does not apply: pair methods never train on ties.

Crop/flip as DiffusionDPO train.py (SalesforceAIResearch/DiffusionDPO, `train_transforms`): each
image on its own is resized so that its shorter side is the resolution (bilinear), then centre
cropped (`--random_crop` off, the default) or randomly cropped (data.random_crop=true), then
flipped horizontally with probability 1/2 unless `--no_hflip` (data.hflip=false). The draws of
an image come from (seed, epoch, pair key, winner/loser), so they do not depend on rank or worker.
(The in-memory `data.source=file` path keeps its square resize, unchanged.)

Latent cache (data.latent_cache=dist|mode; none: encode every micro-batch): one safetensors file
per unit under <paths.cache>/stream/<key>/, holding per kept pair the VAE posterior of the
winner and the loser and the text encoders' conditioning of the caption. `key` hashes the VAE's
and text encoders' weights (every state-dict tensor), their classes and configs, the tokenizers'
vocabularies, the resolution, the crop/flip settings and the cache mode; a unit's file name
carries its shard's name and size. The rank that reads a unit first encodes it and writes the
file (temp name, rename, seal: bench.locks); later epochs and other jobs read it and skip the VAE
and the text encoders. A damaged file fails its seal, is deleted and made again.
  * a cached latent fixes the augmentation: with the cache on, every epoch uses epoch 0's crop
    and flip of each image (and `key` includes the seed when the crop or the flip is random).
    Use data.hflip=false (and centre crops) for one cache shared by every seed.
  * `dist` (recommended) stores the posterior's mean and std, and every step draws
    latents = (mean + std * N(0, I)) * scaling_factor from the global torch generator, exactly as
    `vae.encode(x).latent_dist.sample()` does (DiffusionDPO train.py samples a new latent every
    step); the loss equals on-the-fly encoding's. `mode` stores the mean alone (half the space,
    no sampling noise: a different, deterministic objective for a VAE whose std is not small).

Noise on several ranks: in the in-memory path every rank draws the global batch's noise from one
shared generator; a streamed batch is the rank's own, so each rank's trainer generator is seeded
with `rank_seed(seed, rank)` (rank 0: the job seed) and draws the noise, timesteps and caption
dropout of its own pairs only. Resuming a streamed job restarts the stream at its beginning.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from bench.lazy import torch  # imported on first use: validation needs no torch
from bench.registry import BenchError
from bench.files import atomic, digest

log = logging.getLogger(__name__)

STREAM_SOURCES = ("pickapic_v2", "hpdv2")
LATENT_CACHE = ("none", "dist", "mode")
HPD_BLOCK = 64                       # HPD v2 records per unit
STREAM_FEEDBACK = ("pairs", "images")


def rank_seed(seed: int, rank: int) -> int:
    """The trainer generator's seed of `rank` in a streamed job (rank 0: the job seed itself)."""
    if rank == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(rank)]).generate_state(1, np.uint64)[0] >> 1)


# ----------------------------------------------------------------------------- units

@dataclass(frozen=True)
class Unit:
    """A piece of the dataset read at once: `part` (row group / record block) of `shard`."""
    shard: int
    part: int
    first: int                       # row (record) index of its first row
    rows: int
    name: str                        # stable name for cache files: shard name, size, part


def list_units(source: str, root: str | Path, split: str) -> tuple[list[Path], list[Unit]]:
    """(shard files, units) of a split; only parquet footers (or the HPD json) are read."""
    from bench.data.real import pickapic_shards
    from bench.data.pairs import open_pickapic
    root = Path(root)
    if source == "pickapic_v2":
        shards = pickapic_shards(root, split)
        units, first = [], 0
        for i, shard in enumerate(shards):
            meta = open_pickapic(shard).metadata
            size = shard.stat().st_size
            for g in range(meta.num_row_groups):
                n = meta.row_group(g).num_rows
                units.append(Unit(i, g, first, n, f"{shard.stem}-{size}-rg{g:05d}"))
                first += n
        return shards, units
    if source == "hpdv2":
        meta = hpd_meta(root, split)
        n = len(_hpd_records(meta))
        size = meta.stat().st_size
        return [meta], [Unit(0, b, lo, min(HPD_BLOCK, n - lo), f"{split}-{size}-b{b:05d}")
                        for b, lo in enumerate(range(0, n, HPD_BLOCK))]
    raise BenchError(f"unknown streamed source {source!r}; valid: {', '.join(STREAM_SOURCES)}")


def hpd_meta(root: str | Path, split: str) -> Path:
    from bench.data.real import HPD_SPLITS
    if split not in HPD_SPLITS:
        raise BenchError(f"unknown HPD v2 split {split!r} (data.split); valid: {', '.join(HPD_SPLITS)}")
    meta = Path(root) / f"{split}.json"
    if not meta.is_file():
        raise BenchError(f"HPD v2 annotations not found: {meta}; point data.path at the unpacked HPD directory")
    if not (Path(root) / split).is_dir():
        raise BenchError(f"HPD v2 images not found: {Path(root) / split} is not a directory; "
                         "unpack the images beside the annotations")
    return meta


_HPD_CACHE: dict = {}


def _hpd_records(meta: Path) -> list:
    """The records of an HPD json (parsed once per process)."""
    key = (str(meta), meta.stat().st_size, meta.stat().st_mtime_ns)
    if key not in _HPD_CACHE:
        try:
            records = json.loads(meta.read_text())
        except (OSError, ValueError) as e:
            raise BenchError(f"{meta}: not readable JSON ({type(e).__name__}); expected HPD v2's list of records") from None
        if not isinstance(records, list):
            raise BenchError(f"{meta}: expected a JSON list of records (HPD v2 layout)")
        _HPD_CACHE.clear()
        _HPD_CACHE[key] = records
    return _HPD_CACHE[key]


def epoch_units(n_units: int, seed: int, epoch: int, rank: int, world: int) -> list[tuple[int, int | None]]:
    """(unit number, row filter) of `rank`'s units in `epoch`: a permutation from (seed, epoch),
    every world-th unit; with fewer units than ranks, every unit with the filter `rank` (keep the
    rows at epoch positions = rank mod world). Filter None: every row."""
    order = np.random.default_rng([int(seed), int(epoch)]).permutation(n_units).tolist()
    if n_units >= world:
        return [(u, None) for u in order[rank::world]]
    return [(u, rank) for u in order]


# ----------------------------------------------------------------------------- crop / flip

@dataclass(frozen=True)
class Augment:
    """DiffusionDPO train.py's train_transforms: Resize(resolution) of the shorter side,
    RandomCrop if --random_crop else CenterCrop, RandomHorizontalFlip unless --no_hflip."""
    size: int
    random_crop: bool = False
    hflip: bool = True

    def __call__(self, data: bytes, rng: np.random.Generator):
        import io
        with Image.open(io.BytesIO(data)) as im:
            im = im.convert("RGB")
            w, h = im.size
            s = self.size
            # torchvision Resize(int): the shorter side becomes s, the longer keeps the aspect
            nw, nh = (s, int(s * h / w)) if w <= h else (int(s * w / h), s)
            if (nw, nh) != (w, h):
                im = im.resize((nw, nh), Image.BILINEAR)
            if self.random_crop:
                top, left = int(rng.integers(0, nh - s + 1)), int(rng.integers(0, nw - s + 1))
            else:                     # torchvision center_crop rounds the offsets
                top, left = int(round((nh - s) / 2.0)), int(round((nw - s) / 2.0))
            im = im.crop((left, top, left + s, top + s))
            if self.hflip and rng.random() < 0.5:
                im = im.transpose(Image.FLIP_LEFT_RIGHT)
            return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)


def _rng(seed: int, epoch: int, key: tuple[int, int], side: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(epoch), int(key[0]), int(key[1]), side])


# ----------------------------------------------------------------------------- reading a unit

def _pickapic_rows(shard: Path, unit: Unit):
    """(row index, caption, jpg_0, jpg_1, label_0, label_1) of the labelled rows of a unit."""
    from bench.data.pairs import open_pickapic, PICKAPIC_COLUMNS
    pf = open_pickapic(shard)
    labelled = "has_label" in pf.schema_arrow.names
    table = pf.read_row_group(unit.part, columns=list(PICKAPIC_COLUMNS) + (["has_label"] if labelled else []))
    for i, row in enumerate(table.to_pylist()):
        if labelled and not row["has_label"]:
            continue
        yield unit.first + i, row


def read_unit(stream: "PairStream", u: int, epoch: int, keep: int | None, world: int) -> dict:
    """The kept pairs of unit `u` decoded and augmented: {keys (n, 2), captions, winners,
    losers}. keep: None, or keep only pairs at positions = keep mod world (within the unit's
    kept pairs, in row order)."""
    from bench.data.pairs import check_labels, corrupt_image
    unit = stream.units[u]
    aug = stream.augment
    skipped: list = []
    out: list = []
    if stream.source == "pickapic_v2":
        shard = stream.shards[unit.shard]
        for i, row in _pickapic_rows(shard, unit):
            l0, l1 = float(row["label_0"]), float(row["label_1"])
            check_labels(l0, l1, shard, i)
            if not isinstance(row["caption"], str):
                raise BenchError(f"{shard}: row {i} has a non-text caption; fix or drop that row")
            if l0 == 0.5:
                continue
            w, lo = (row["jpg_1"], row["jpg_0"]) if l0 == 0.0 else (row["jpg_0"], row["jpg_1"])
            out.append(((i, 0), row["caption"], w, lo))
    else:
        from bench.data.real import _hpd_record
        meta = stream.shards[0]
        records = _hpd_records(meta)
        images = Path(stream.root) / stream.split
        for i in range(unit.first, unit.first + unit.rows):
            try:
                prompt, files, pairs = _hpd_record(records[i], stream.split)
            except (ValueError, KeyError, TypeError):
                raise BenchError(f"{meta}: record {i} is malformed; see bench.data.real for HPD v2's layout") from None
            for j, (a, b, tie) in enumerate(pairs):
                if not tie:
                    out.append(((i, j), prompt, images / files[a], images / files[b]))
    if keep is not None:
        out = [p for n, p in enumerate(out) if n % world == keep]
    keys, caps, wins, loss = [], [], [], []
    for key, cap, w, lo in out:
        try:
            pair = [aug(x.read_bytes() if isinstance(x, Path) else x, _rng(stream.aug_seed, epoch, key, side))
                    for side, x in enumerate((w, lo))]
        except Exception as e:       # PIL raises several types; a missing HPD file too
            if key[0] in skipped:
                continue
            corrupt_image(str(stream.shards[unit.shard]), key[0], e, stream.on_corrupt, skipped)
            continue
        keys.append(key); caps.append(cap); wins.append(pair[0]); loss.append(pair[1])
    s = stream.augment.size
    empty = torch.zeros((0, 3, s, s), dtype=torch.uint8)
    return {"keys": torch.tensor(keys, dtype=torch.long).view(-1, 2), "captions": caps,
            "winners": torch.stack(wins) if wins else empty, "losers": torch.stack(loss) if loss else empty}


# ----------------------------------------------------------------------------- the latent cache

def encoder_fingerprint(backbone) -> str:
    """A hash of the VAE's and the text encoders' weights (every state-dict tensor), classes and
    configs, and of the tokenizers' vocabularies and lengths."""
    h = hashlib.sha256()
    pipe = backbone.pipe
    modules = [("vae", pipe.vae)] + [(f"text_encoder{i}", m) for i, m in enumerate(backbone.text_encoders)]
    for name, m in modules:
        cfg = getattr(m, "config", None)
        cfg = dict(cfg) if cfg is not None and not hasattr(cfg, "to_dict") else (cfg.to_dict() if cfg is not None else {})
        h.update(json.dumps([name, type(m).__name__, cfg], sort_keys=True, default=str).encode())
        for k, v in sorted(m.state_dict().items()):
            t = v.detach().to("cpu").contiguous()
            h.update(f"{k}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    for name in ("tokenizer", "tokenizer_2"):
        tok = getattr(pipe, name, None)
        if tok is not None:
            h.update(json.dumps([name, tok.model_max_length, sorted(tok.get_vocab().items())]).encode())
    return h.hexdigest()


def cache_dir_for(stream: "PairStream", backbone) -> Path:
    random_aug = stream.augment.random_crop or stream.augment.hflip
    key = digest(json.dumps({
        "encoders": encoder_fingerprint(backbone), "backbone": type(backbone).__name__,
        "resolution": stream.augment.size, "random_crop": stream.augment.random_crop,
        "hflip": stream.augment.hflip, "aug_seed": stream.aug_seed if random_aug else None,
        "mode": stream.latent_cache, "source": stream.source, "split": stream.split,
    }, sort_keys=True), 16)
    return Path(stream.cache_root) / "stream" / f"{stream.source}-{key}"


def unit_entry(stream: "PairStream", u: int, keep: int | None, world: int) -> Path:
    part = "" if keep is None else f"-r{keep}of{world}"
    return Path(stream.cache_path) / f"{stream.units[u].name}{part}.safetensors"


def load_cached(path: Path) -> dict | None:
    """A cached unit as read_unit's dict with `latents` / `cond` tensors, or None (missing, or
    damaged: then deleted, bench.locks.load_entry)."""
    from safetensors import safe_open
    from bench.locks import load_entry

    def load(p):
        with safe_open(str(p), "pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        return {"keys": tensors.pop("keys"), "captions": json.loads(meta["captions"]),
                "cache": {k: v for k, v in tensors.items()}}
    return load_entry(path, load)


def encode_unit(backbone, item: dict, mode: str, chunk: int = 16) -> dict[str, "torch.Tensor"]:
    """The tensors a unit's cache entry holds: per pair the VAE posterior (dist: mean and std,
    mode: mean x scaling factor) of winner and loser, and the conditioning of its caption."""
    vae = backbone.pipe.vae
    out: dict[str, list] = {}
    n = len(item["captions"])
    with torch.no_grad():
        for lo in range(0, n, chunk):
            hi = min(lo + chunk, n)
            for side, name in (("w", "winners"), ("l", "losers")):
                x = item[name][lo:hi].float() / 255.0
                x = x.to(device=vae.device, dtype=vae.dtype)
                dist = vae.encode(x * 2 - 1).latent_dist
                if mode == "dist":
                    out.setdefault(f"mean_{side}", []).append(dist.mean.float().cpu())
                    out.setdefault(f"std_{side}", []).append(dist.std.float().cpu())
                else:
                    out.setdefault(f"latents_{side}", []).append(
                        (dist.mean * vae.config.scaling_factor).float().cpu())
            for k, v in backbone.encode_prompts(item["captions"][lo:hi]).items():
                out.setdefault(f"cond.{k}", []).append(v.float().cpu())
    return {k: torch.cat(v).contiguous() for k, v in out.items()}


def write_cached(path: Path, item: dict, tensors: dict) -> None:
    """One unit's cache entry, written under its lock to a temp name, renamed, then sealed."""
    from safetensors.torch import save_file
    from bench.locks import intact, making
    with making(path, f"stream cache {path.name}"):
        if path.is_file() and intact(path):
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic(path) as tmp:
            save_file({"keys": item["keys"].contiguous(), **tensors}, str(tmp),
                      metadata={"captions": json.dumps(item["captions"])})


class Latents:
    """A micro-batch's cached latents: `get()` returns scaled latents, drawing a fresh sample
    from the cached posterior (dist) with the global torch generator, as
    DiagonalGaussianDistribution.sample does, or the cached mean (mode)."""

    def __init__(self, mean, std=None, scale: float = 1.0):
        self.mean, self.std, self.scale = mean, std, scale

    def get(self):
        if self.std is None:
            return self.mean
        sample = torch.randn(self.mean.shape, dtype=self.mean.dtype, device=self.mean.device)
        return (self.mean + self.std * sample) * self.scale


# ----------------------------------------------------------------------------- the stream

class _RankUnits:
    """The torch IterableDataset of one rank: one item per unit of the rank's endless unit
    sequence; DataLoader worker k of K takes the items at positions k, k + K, ..."""

    def __init__(self, stream: "PairStream", rank: int, world: int, epochs: int | None):
        self.stream, self.rank, self.world, self.epochs = stream, rank, world, epochs

    def sequence(self):
        for epoch in (range(self.epochs) if self.epochs is not None else itertools.count()):
            for u, keep in epoch_units(len(self.stream.units), self.stream.seed, epoch, self.rank, self.world):
                yield epoch, u, keep

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        k, n = (0, 1) if info is None else (info.id, info.num_workers)
        s = self.stream
        for epoch, u, keep in itertools.islice(self.sequence(), k, None, n):
            item = None
            if s.latent_cache != "none":
                item = load_cached(unit_entry(s, u, keep, self.world))
            if item is None:
                # a cached latent fixes the augmentation: epoch 0's crop and flip (module doc)
                item = read_unit(s, u, 0 if s.latent_cache != "none" else epoch, keep, self.world)
            item.update(epoch=epoch, unit=u, keep=keep)
            yield item


class PairStream:
    """Winner-first pairs of a streamed source (module doc); the trainer takes batches from
    `batches(...)`. `captions` is empty: the stream's captions are encoded batch by batch."""
    streamed = True
    captions: tuple = ()

    def __init__(self, source: str, root, split: str = "train", size: int = 512, seed: int = 0,
                 random_crop: bool = False, hflip: bool = True, on_corrupt: str = "error",
                 num_workers: int = 0, shuffle_buffer: int = 1000, latent_cache: str = "none",
                 cache_root: str | Path | None = None):
        if latent_cache not in LATENT_CACHE:
            raise BenchError(f"unknown data.latent_cache {latent_cache!r}; valid: {', '.join(LATENT_CACHE)}")
        if latent_cache != "none" and cache_root is None:
            raise BenchError("data.latent_cache needs a cache directory (paths.cache)")
        self.source, self.root, self.split = source, Path(root), split
        self.shards, self.units = list_units(source, root, split)
        self.seed, self.aug_seed = int(seed), int(seed)
        self.augment = Augment(int(size), bool(random_crop), bool(hflip))
        self.on_corrupt, self.num_workers, self.shuffle_buffer = on_corrupt, int(num_workers), int(shuffle_buffer)
        self.latent_cache, self.cache_root, self.cache_path = latent_cache, cache_root, None

    def attach(self, backbone) -> None:
        """Key the latent cache by this backbone's encoders (once; a no-op without the cache)."""
        if self.latent_cache != "none" and self.cache_path is None and backbone is not None:
            self.cache_path = cache_dir_for(self, backbone)
            log.info("latent cache: %s", self.cache_path)

    def __len__(self) -> int:          # rows (pairs of Pick-a-Pic, records of HPD), not kept pairs
        return sum(u.rows for u in self.units)

    def items(self, rank: int = 0, world: int = 1, epochs: int | None = None):
        """The rank's unit items in order, read by data.num_workers DataLoader workers."""
        ds = _RankUnits(self, rank, world, epochs)
        if self.num_workers == 0:
            return iter(ds)

        class _DS(torch.utils.data.IterableDataset):
            def __iter__(self_inner):
                return iter(ds)
        return iter(torch.utils.data.DataLoader(_DS(), batch_size=None, num_workers=self.num_workers,
                                                persistent_workers=False))

    def pairs(self, rank: int = 0, world: int = 1, epochs: int | None = None, backbone=None):
        """The rank's pairs, shuffled through the buffer: dicts with key (row or record, pair
        number), epoch, caption, and either winner/loser images or cached tensors. With the
        latent cache on, `backbone` encodes (and writes) units that are not cached yet."""
        self.attach(backbone)
        rng = np.random.default_rng([self.seed, rank, 1])
        buf: list = []
        for item in self.items(rank, world, epochs):
            if self.latent_cache != "none" and "cache" not in item and len(item["captions"]):
                if backbone is None:
                    raise BenchError("the latent cache needs the backbone to encode uncached units")
                tensors = encode_unit(backbone, item, self.latent_cache)
                write_cached(unit_entry(self, item["unit"], item["keep"], world), item, tensors)
                item["cache"] = tensors
            for j in range(len(item["captions"])):
                p = {"key": tuple(item["keys"][j].tolist()), "epoch": item["epoch"], "caption": item["captions"][j]}
                if "cache" in item:
                    p["cache"] = {k: v[j] for k, v in item["cache"].items()}
                else:
                    p["winner"], p["loser"] = item["winners"][j], item["losers"][j]
                if len(buf) < self.shuffle_buffer:
                    buf.append(p)
                    continue
                k = int(rng.integers(0, len(buf)))
                yield buf[k]
                buf[k] = p
        rng.shuffle(buf)               # a finite stream (epochs given): the rest, shuffled
        yield from buf

    def batches(self, method, backbone, cfg, rank: int = 0, world: int = 1):
        """Endless micro-batches of this rank's own pairs (train.batch_size / world of them),
        shaped for the method's feedback (pairs: [winners; losers]; images: the winners)."""
        from bench.method import Batch
        if method.feedback not in STREAM_FEEDBACK:
            raise BenchError(f"{type(method).__name__} trains on {method.feedback!r} feedback; a streamed source "
                             f"gives pairs (methods with feedback {', '.join(STREAM_FEEDBACK)})")
        self.attach(backbone)
        n = cfg.batch_size // world
        paired = method.feedback == "pairs"
        it = self.pairs(rank, world, None, backbone)
        scale = float(backbone.pipe.vae.config.scaling_factor)
        while True:
            ps = list(itertools.islice(it, n))
            if len(ps) < n:
                raise BenchError(f"{self.source} at {self.root} (split {self.split!r}) has no usable pairs for rank "
                                 f"{rank}; check the data (ties and has_label=false rows are left out)")
            caps = [p["caption"] for p in ps]
            keys = torch.tensor([p["key"][0] for p in ps])
            if "cache" in ps[0]:
                c = {k: torch.stack([p["cache"][k] for p in ps]) for k in ps[0]["cache"]}
                cond = {k[5:]: v for k, v in c.items() if k.startswith("cond.")}
                if self.latent_cache == "dist":
                    mean = torch.cat([c["mean_w"], c["mean_l"]]) if paired else c["mean_w"]
                    std = torch.cat([c["std_w"], c["std_l"]]) if paired else c["std_w"]
                    lat = Latents(mean, std, scale)
                else:
                    lat = Latents(torch.cat([c["latents_w"], c["latents_l"]]) if paired else c["latents_w"])
                images = None
            else:
                winners = torch.stack([p["winner"] for p in ps])
                cond = backbone.encode_prompts(caps)
                lat = None
                images = torch.cat([winners, torch.stack([p["loser"] for p in ps])]) if paired else winners
            if paired:
                cond = {k: torch.cat([v, v]) for k, v in cond.items()}
                yield Batch(images, caps + caps, True, groups=keys, latents=lat, cond=cond, local=True)
            else:
                yield Batch(images, caps, False, groups=keys, latents=lat, cond=cond, local=True)


def open_stream(method, data_cfg, cache_dir, size: int) -> tuple[PairStream, dict]:
    """The PairStream of data.source / data.path and the info for result.json."""
    if method.feedback not in STREAM_FEEDBACK:
        raise BenchError(f"method {type(method).__name__} needs {method.feedback!r} feedback; data.source="
                         f"{data_cfg.source} gives pairs (for methods with feedback {', '.join(STREAM_FEEDBACK)})")
    s = PairStream(data_cfg.source, data_cfg.path, data_cfg.split, size, data_cfg.seed,
                   data_cfg.random_crop, data_cfg.hflip, data_cfg.on_corrupt, data_cfg.num_workers,
                   data_cfg.shuffle_buffer, data_cfg.latent_cache, cache_dir)
    return s, {"path": str(data_cfg.path), "source": data_cfg.source, "split": data_cfg.split,
               "shards": len(s.shards), "units": len(s.units), "rows": len(s), "streamed": True,
               "latent_cache": data_cfg.latent_cache}


def check_stream_source(data_cfg, method_name: str, train_cfg) -> None:
    """A streamed source's options, layout and columns, before any work (one line each)."""
    from bench.data.pairs import ON_CORRUPT
    from bench.registry import METHODS
    if not data_cfg.path:
        raise BenchError(f"data.source={data_cfg.source} needs data.path=<the dataset directory>")
    if data_cfg.num_workers < 0:
        raise BenchError(f"data.num_workers must be >= 0 (0: read in the training process), got {data_cfg.num_workers}")
    if data_cfg.shuffle_buffer < 1:
        raise BenchError(f"data.shuffle_buffer must be >= 1 (1: no shuffling across units), got {data_cfg.shuffle_buffer}")
    if data_cfg.latent_cache not in LATENT_CACHE:
        raise BenchError(f"unknown data.latent_cache {data_cfg.latent_cache!r}; valid: {', '.join(LATENT_CACHE)}")
    if data_cfg.on_corrupt not in ON_CORRUPT:
        raise BenchError(f"unknown data.on_corrupt {data_cfg.on_corrupt!r}; valid: {', '.join(ON_CORRUPT)}")
    if train_cfg.ref_draws:
        raise BenchError(f"train.ref_draws needs the training data in memory; set train.ref_draws=0 for "
                         f"data.source={data_cfg.source}")
    path = Path(data_cfg.path)
    if not path.is_dir():
        raise BenchError(f"data.path={path} is not a directory; data.source={data_cfg.source} reads the dataset "
                         "directory (for one parquet file use data.source=file)")
    feedback = getattr(METHODS.get(method_name), "feedback", None)
    if feedback not in STREAM_FEEDBACK + ("none",):
        raise BenchError(f"method {method_name} trains on {feedback!r} feedback; data.source={data_cfg.source} "
                         f"gives pairs (methods with feedback {', '.join(STREAM_FEEDBACK)})")
    _, units = list_units(data_cfg.source, path, data_cfg.split)   # shards, footers, columns / json
    if data_cfg.source == "hpdv2":
        from bench.data.real import _hpd_record
        meta = hpd_meta(path, data_cfg.split)
        for i, rec in enumerate(_hpd_records(meta)):
            try:
                _hpd_record(rec, data_cfg.split)
            except (ValueError, KeyError, TypeError):
                raise BenchError(f"{meta}: record {i} is malformed; see bench.data.real for HPD v2's layout") from None
    if not units or not any(u.rows for u in units):
        raise BenchError(f"{data_cfg.source} at {path} (split {data_cfg.split!r}) has no rows")
