"""Backbones: the embedded tiny-sd15 / tiny-sd21 / tiny-sdxl and the real SD1.5 / SD2.1 / SDXL
loaders, on one interface. Importing this package registers every backbone (bench.registry
BACKBONES), without importing torch.

A backbone turns a config into a diffusers pipeline plus the few facts the trainer and sampler
need (prediction type, resolution, guidance, steps):

    interface.py    Backbone / XLBackbone (what the trainer, sampler and methods use),
                    make_backbone, load_pipeline_dir (a pipeline saved with save_pretrained)
    tiny.py         the tiny backbones: architecture, pipeline builder, configs, weight recipe
    pretraining.py  pretraining a tiny backbone on the defective corpus (the trainer's pieces)
    shipped.py      the shipped tiny weights in bench/assets/: recipe and checksum checks, export
    real.py         the real backbones' configs and loader (local dir or HF cache)

Here: the loader each registered name calls, and the names most callers need.
"""
from __future__ import annotations

from pathlib import Path

from bench import world as W
from bench.backbones.interface import Backbone, XLBackbone, load_pipeline_dir, make_backbone
from bench.backbones.real import RealBackboneConfig, SD21BaseConfig, SD21Config, SDXLConfig, load_real
from bench.backbones.shipped import shipped_weights
from bench.backbones.tiny import (PretrainConfig, TinyArch, TinyBackboneConfig, TinySD21Config,
                                  TinySDXLConfig, tiny_arch)
from bench.registry import BACKBONES

__all__ = ["Backbone", "XLBackbone", "make_backbone", "load_pipeline_dir", "load_real", "load_tiny",
           "load_real_backbone", "TinyArch", "tiny_arch", "PretrainConfig", "TinyBackboneConfig",
           "TinySD21Config", "TinySDXLConfig", "RealBackboneConfig", "SD21Config", "SD21BaseConfig",
           "SDXLConfig"]


def load_tiny(cfg: TinyBackboneConfig, world_cfg: W.WorldConfig, cache_dir: Path) -> Backbone:
    """A tiny backbone with the weights `cfg.weights` names: the shipped ones (checked), a
    pretraining run (cached under cache_dir) or a saved pipeline's directory."""
    if cfg.weights == "shipped":
        path = shipped_weights(cfg.name, cfg.arch, cfg.pretrain, world_cfg)
    elif cfg.weights == "pretrain":
        from bench.backbones.pretraining import pretrain   # imports torch: only when asked to pretrain
        path = pretrain(cfg.name, cfg.arch, cfg.pretrain, world_cfg, cache_dir)
    else:
        path = Path(cfg.weights)
    return make_backbone(cfg.name, load_pipeline_dir(path, key="backbone.weights"), world_cfg.image_size,
                         cfg.guidance_scale, cfg.num_inference_steps)


def load_real_backbone(cfg: RealBackboneConfig, world_cfg, cache_dir: Path) -> Backbone:
    """A real backbone from `cfg.path` or the HF cache (world_cfg and cache_dir are unused)."""
    return make_backbone(cfg.name, load_real(cfg.model_id, cfg.path, cfg.vae_path), cfg.resolution,
                         cfg.guidance_scale, cfg.num_inference_steps)


def _register(name: str, loader, config_cls, doc: str) -> None:
    def load(cfg, world_cfg, cache_dir):
        return loader(cfg, world_cfg, cache_dir)
    load.__doc__, load.Config = doc, config_cls
    BACKBONES.register(name)(load)


_register("tiny-sd15", load_tiny, TinyBackboneConfig,
          "Embedded SD1.5 mirror: one CLIP text encoder, epsilon, 32x32 shapes world.")
_register("tiny-sd21", load_tiny, TinySD21Config,
          "Embedded SD2.1 mirror: v-prediction, gelu text encoder, linear attention projections.")
_register("tiny-sdxl", load_tiny, TinySDXLConfig,
          "Embedded SDXL mirror: two text encoders, pooled embeddings, add_time_ids.")
_register("sd15", load_real_backbone, RealBackboneConfig,
          "Stable Diffusion 1.5 (512, epsilon) from backbone.path or the HF cache.")
_register("sd21", load_real_backbone, SD21Config,
          "Stable Diffusion 2.1 (768, v-prediction) from backbone.path or the HF cache.")
_register("sd21-base", load_real_backbone, SD21BaseConfig,
          "Stable Diffusion 2.1-base (512, epsilon) from backbone.path or the HF cache.")
_register("sdxl", load_real_backbone, SDXLConfig,
          "Stable Diffusion XL base 1.0 (1024, two encoders) from backbone.path or the HF cache.")
