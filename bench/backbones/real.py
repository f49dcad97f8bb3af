"""The real backbones: Stable Diffusion 1.5, 2.1 (768, v-prediction), 2.1-base and XL base 1.0,
their configs with the sampling defaults of the papers and model cards, and `load_real`, which
loads one from a local directory (HF layout) or the HF cache, local files only. The papers'
training recipes on them are presets (sweeps/preset/).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from bench.backbones.interface import load_pipeline_dir
from bench.registry import BenchError


@dataclass
class RealBackboneConfig:
    """A real backbone. The papers' training recipes on it are presets (sweeps/preset/, e.g.
    `+preset=diffusion_dpo_sd15`); selecting a real backbone turns the trainer's EMA off, as the
    papers train without one (bench.config.register_configs)."""
    name: str = "sd15"
    model_id: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    path: str | None = None                # a local dir saved with save_pretrained (HF layout)
    vae_path: str | None = None            # another VAE (dir or HF id, local files only)
    resolution: int = 512                  # SD1.5 model card: trained at 512x512
    guidance_scale: float = 7.5            # Diffusion-DPO quick_samples.ipynb, SD1.5
    num_inference_steps: int = 50          # diffusers' pipeline default, used by quick_samples.ipynb


@dataclass
class SD21Config(RealBackboneConfig):
    """SD2.1 (768, v-prediction; the scheduler config in the checkpoint says so)."""
    name: str = "sd21"
    model_id: str = "stabilityai/stable-diffusion-2-1"
    resolution: int = 768                  # stable-diffusion-2-1 model card: 768x768, v-objective
    guidance_scale: float = 7.5            # diffusers' StableDiffusionPipeline default


@dataclass
class SD21BaseConfig(RealBackboneConfig):
    """SD2.1-base (512, epsilon)."""
    name: str = "sd21-base"
    model_id: str = "stabilityai/stable-diffusion-2-1-base"
    resolution: int = 512                  # stable-diffusion-2-1-base model card: 512x512
    guidance_scale: float = 7.5            # diffusers' StableDiffusionPipeline default


@dataclass
class SDXLConfig(RealBackboneConfig):
    name: str = "sdxl"
    model_id: str = "stabilityai/stable-diffusion-xl-base-1.0"
    # fp16-safe VAE: the diffusers diffusion_dpo README's SDXL command passes
    # --pretrained_vae_model_name_or_path=madebyollin/sdxl-vae-fp16-fix (SDXL's own VAE overflows
    # in fp16); null keeps the checkpoint's VAE
    vae_path: str | None = "madebyollin/sdxl-vae-fp16-fix"
    resolution: int = 1024                 # SDXL base 1.0; DiffusionDPO SDXL trains at 1024
    guidance_scale: float = 5.0            # Diffusion-DPO quick_samples.ipynb, SDXL


def _missing(what: str, model_id: str, key: str) -> BenchError:
    hub = os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or "~/.cache/huggingface"
    return BenchError(f"{what} {model_id} not found in the HF cache ({hub}); download it on a machine "
                      f"with access (hf download {model_id}) or pass {key}=<local dir>")


def load_real(model_id: str, path: str | None, vae_path: str | None = None):
    """A real pipeline from a local dir (HF layout) or the HF cache, local files only; `vae_path`
    (a dir or an HF id) replaces its VAE. The safety checker is off on both paths (not loaded,
    `pipe.safety_checker is None`): it would black out the images it flags before scoring."""
    from diffusers import AutoencoderKL, DiffusionPipeline
    kwargs = {}
    if vae_path:
        try:
            kwargs["vae"] = AutoencoderKL.from_pretrained(vae_path, local_files_only=True)
        except (OSError, ValueError):
            raise _missing("VAE", vae_path, "backbone.vae_path") from None
    if path:
        pipe = load_pipeline_dir(Path(path), vae=kwargs.get("vae"))
    else:
        try:
            pipe = DiffusionPipeline.from_pretrained(model_id, local_files_only=True, safety_checker=None,
                                                     **kwargs)
        except (OSError, ValueError):
            raise _missing("weights for", model_id, "backbone.path") from None
    pipe.set_progress_bar_config(disable=True)
    return pipe
