"""The `data.*` options of a job (the schema bench.config composes and validates)."""
from __future__ import annotations

from dataclasses import dataclass, field

from bench import world as W

@dataclass
class DataConfig:
    # world: simulated annotators on base samples; file: a parquet; pickapic_v2 | hpdv2: a
    # dataset directory streamed shard by shard (bench.data.stream)
    source: str = "world"
    path: str | None = None            # for source=file: a Pick-a-Pic-format parquet file
    n_pairs: int = 1024                # world: pairs of base samples to annotate
    keep_ties: bool = False            # Diffusion-DPO drops ties (train.py); True keeps them (skipped by pair methods)
    # world: the pool of generators a pair's two images come from (Pick-a-Pic pairs images of two
    # different models, model_0/model_1). "base": the base model as configured (one-entry pool:
    # on-policy pairs, two seeds of the base); "base@g3": at guidance 3; "base@s10": with 10
    # sampling steps (combinable: "base@g5@s10"); "renderer": the world's renderer with its corpus
    # defect model (world.defects, world.modes); "renderer@curated": the renderer without world
    # v2's learned modes (a generator trained on other data). With two or more, each pair draws two
    # different ones. The default pairs a base sample with a curated render, as Pick-a-Pic pairs
    # images of different generators (docs/world.md measured [base], [base, renderer] and this).
    generators: list[str] = field(default_factory=lambda: ["base", "renderer@curated"])
    seed: int = 0
    annotator: W.AnnotatorConfig = field(default_factory=W.AnnotatorConfig)
    # Streamed sources (source=pickapic_v2 | hpdv2, path=<dataset directory>; bench/data/stream.py):
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
