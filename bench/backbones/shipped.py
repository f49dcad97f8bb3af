"""The shipped weights of the tiny backbones, bench/assets/[<world>/]<name>/: the pipeline in
fp16 safetensors with the recipe that made it (recipe.json), its training log and the SHA-256 of
every file (SHA256SUMS.json). World v1's bases are bench/assets/<name>, world v2's
bench/assets/world-v2/<name> (fine-tuned from v1's). `shipped_weights` hands out the asset whose
recipe is the configured one, once every checksum holds; `checked_asset` checks the checksums of a
warm start; `export_shipped` writes an asset from a pretraining cache entry (`python -m bench
pretrain --export[=<world>]`).
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from bench import world as W
from bench.backbones.interface import load_pipeline_dir
from bench.backbones.tiny import ASSETS, PIPELINE_DIR, PretrainConfig, TinyArch, recipe
from bench.lazy import torch  # imported on first use: the config path needs no torch
from bench.registry import BenchError


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def export_shipped(src: Path, name: str, under: str = "") -> Path:
    """Copy a pretrained pipeline into bench/assets/[<under>/]<name> in fp16 with its recipe and
    checksums."""
    dst = ASSETS / under / name
    pipe = load_pipeline_dir(src)
    shutil.rmtree(dst, ignore_errors=True)
    pipe.to(torch.float16).save_pretrained(dst / PIPELINE_DIR, safe_serialization=True)
    for f in ("recipe.json", "train_log.json"):
        if (src.parent / f).is_file():
            shutil.copy(src.parent / f, dst / f)
    (dst / "SHA256SUMS.json").write_text(json.dumps(_tree_digest(dst / PIPELINE_DIR), indent=1))
    return dst


def checked_asset(name: str) -> Path:
    """The pipeline of bench/assets/<name> after checking its checksums (a warm start). Its recipe
    is not compared with the configured world: a fine-tune on another world starts from it."""
    root = ASSETS / name
    sums = root / "SHA256SUMS.json"
    if not sums.is_file():
        raise BenchError(f"no weights to warm-start from in {root}; valid: "
                         f"{sorted(str(p.parent.relative_to(ASSETS)) for p in ASSETS.rglob('SHA256SUMS.json'))}")
    if _tree_digest(root / PIPELINE_DIR) != json.loads(sums.read_text()):
        raise BenchError(f"checksum mismatch in {root / PIPELINE_DIR}; restore it with git checkout")
    return root / PIPELINE_DIR


def shipped_weights(name: str, arch: TinyArch, pre: PretrainConfig, world_cfg: W.WorldConfig) -> Path:
    """Path of the shipped base weights made by the configured recipe (any asset directory of
    this backbone, e.g. world v1's or v2's), after checking their checksums."""
    shipped = {p.parent: json.loads(p.read_text()) for p in sorted(ASSETS.rglob("recipe.json"))}
    mine = [root for root, rec in shipped.items() if rec.get("backbone") == name]
    if not mine:
        raise BenchError(f"no shipped weights for {name} in {ASSETS}; use backbone.weights=pretrain "
                         f"(python -m bench pretrain backbone={name})")
    want = json.loads(json.dumps(recipe(name, arch, pre, world_cfg), default=str))
    match = [root for root in mine if shipped[root] == want]
    if not match:
        raise BenchError(f"the shipped {name} weights ({', '.join(str(r.relative_to(ASSETS)) for r in mine)}) "
                         "were made with another recipe than the one configured (arch/pretrain/world); "
                         "use backbone.weights=pretrain")
    root = match[0]
    sums = json.loads((root / "SHA256SUMS.json").read_text())
    if _tree_digest(root / PIPELINE_DIR) != sums:
        raise BenchError(f"checksum mismatch in {root / PIPELINE_DIR}; restore it with git checkout "
                         "or use backbone.weights=pretrain")
    return root / PIPELINE_DIR
