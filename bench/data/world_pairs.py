"""Preference pairs made in the shapes world: two images per train prompt from a pool of
generators (data.generators: the base model, at other guidance scales or step counts, and the
renderer with its corpus defect model), labelled by the simulated annotator and written as a
Pick-a-Pic file with the real `model_0` / `model_1` columns (bench.data.pairs reads it)."""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from bench.files import digest
from bench import world as W
from bench.data.config import DataConfig
from bench.data.pairs import encode_png, open_pickapic, write_parquet_atomic
from bench.lazy import torch  # imported on first use: the config path needs no torch
from bench.locks import load_entry, making
from bench.registry import BenchError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Generator:
    """One generator of a pair pool (data.generators): its name as written in model_0/model_1."""
    name: str
    kind: str                          # base | renderer
    guidance: float | None = None      # None: the backbone's
    steps: int | None = None
    curated: bool = False              # renderer only: without world v2's learned modes


def parse_generator(spec: str) -> Generator:
    """"base", "base@g3", "base@s10", "base@g5@s10", "renderer" or "renderer@curated"
    (data.generators)."""
    kind, *opts = str(spec).split("@")
    fix = ("data.generators entries are 'base', 'base@g<guidance>', 'base@s<steps>' (combinable, "
           "e.g. 'base@g5@s10'), 'renderer' or 'renderer@curated'")
    if kind == "renderer" and opts == ["curated"]:
        return Generator(str(spec), kind, curated=True)
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
    key = digest(json.dumps([weights_id, repr(world_cfg), world_repr(cfg)]), 12)
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
            imgs = [_render_slot(chosen[i // 2], seeds[i], world_cfg, gen.curated) for i in slots]
        else:
            imgs = sample_fn([texts[i] for i in slots], [seeds[i] for i in slots], gen.guidance, gen.steps)
        for i, img in zip(slots, imgs):
            out[i] = img
    return torch.stack(out)


def _render_slot(prompt: W.Prompt, seed: int, world_cfg: W.WorldConfig,
                 curated: bool = False) -> torch.Tensor:
    """The renderer as a generator: a corpus-like image (defects drawn from the corpus rates).
    Curated, it stands for a generator trained on data without world v2's learned modes (as
    Pick-a-Pic's generators do not share one model's modes): the v1 defects at their corpus
    rates, no frame, hollow shapes, stray object or colour swap."""
    rng = np.random.default_rng(seed)
    rates = (dataclasses.replace(world_cfg.defects, frame=0.0, hollow=0.0) if curated
             else world_cfg.defects)
    img = W.render(prompt, rng, world_cfg.image_size,
                   W.sample_defects(rates, rng, prompt, None if curated else world_cfg.modes))
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
