"""The one interface every backbone offers: the trainer, the sampler and every method use only
`Backbone.encode_prompts`, `Backbone.predict`, `Backbone.target` and `Backbone.noise_scheduler`, so
nothing downstream branches on the backbone. `make_backbone` wraps a diffusers pipeline in the class
that fits it (`XLBackbone` for SDXL's two text encoders); `load_pipeline_dir` loads a pipeline saved
with `save_pretrained`, whichever backbone it is.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from bench.lazy import torch  # imported on first use: the config path needs no torch
from bench.registry import BenchError


@dataclass
class Backbone:
    """What the trainer and sampler need from a loaded SD1.5/SD2.1-style backbone."""
    name: str
    pipe: object
    resolution: int
    guidance_scale: float
    num_inference_steps: int

    @property
    def prediction_type(self) -> str:
        return self.pipe.scheduler.config.prediction_type

    @property
    def unet(self):
        return self.pipe.unet

    @functools.cached_property
    def noise_scheduler(self):
        """The forward process for training: a DDPMScheduler from the pipeline's scheduler config,
        whatever the sampler (DiffusionDPO train.py and the diffusers ports do the same)."""
        from diffusers import DDPMScheduler
        return DDPMScheduler.from_config(self.pipe.scheduler.config)

    @property
    def text_encoders(self) -> list:
        return [self.pipe.text_encoder]

    def _ids(self, tokenizer, prompts: list[str], encoder) -> torch.Tensor:
        """Token ids on the encoder's device."""
        return tokenizer(prompts, padding="max_length", truncation=True, max_length=tokenizer.model_max_length,
                         return_tensors="pt").input_ids.to(encoder.device)

    def encode_prompts(self, prompts: list[str], grad: bool = False) -> dict[str, torch.Tensor]:
        """Conditioning of each prompt as a flat dict of batch-first tensors, computed as the
        pipeline computes it for sampling (tested against `pipe.encode_prompt`)."""
        with torch.set_grad_enabled(grad):
            enc = self.pipe.text_encoder
            return {"encoder_hidden_states": enc(self._ids(self.pipe.tokenizer, prompts, enc))[0]}

    def predict(self, unet, noisy: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
        return unet(noisy, t, encoder_hidden_states=cond["encoder_hidden_states"]).sample

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] -> scaled latents, float32 on the VAE's device (the VAE
        itself may be held in half precision: bench/devices.py)."""
        vae = self.pipe.vae
        with torch.no_grad():
            x = (images * 2 - 1).to(device=vae.device, dtype=vae.dtype)
            return vae.encode(x).latent_dist.sample().float() * vae.config.scaling_factor

    def target(self, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The regression target the scheduler's prediction type asks for: epsilon, or
        v = sqrt(abar_t) * eps - sqrt(1 - abar_t) * x0 (Salimans & Ho 2022, arXiv 2202.00512)."""
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "v_prediction":
            return self.noise_scheduler.get_velocity(latents, noise, t)
        raise BenchError(f"unsupported prediction_type {self.prediction_type!r}; "
                         "use a scheduler with epsilon or v_prediction")


class XLBackbone(Backbone):
    """SDXL: two text encoders, pooled embeddings and micro-conditioning (`add_time_ids`)."""

    @property
    def text_encoders(self) -> list:
        return [self.pipe.text_encoder, self.pipe.text_encoder_2]

    def time_ids(self, n: int) -> torch.Tensor:
        """(original_size, crops_coords_top_left, target_size) = (res, res, 0, 0, res, res), the
        fixed value of the official DiffusionDPO SDXL training (methods.md) and of the pipeline's
        defaults at sampling (`_get_add_time_ids` with original = target = (height, width))."""
        r = float(self.resolution)
        return torch.tensor([[r, r, 0.0, 0.0, r, r]]).repeat(n, 1)

    def encode_prompts(self, prompts: list[str], grad: bool = False) -> dict[str, torch.Tensor]:
        """As `StableDiffusionXLPipeline.encode_prompt` (clip_skip None): the penultimate hidden
        states of both encoders, concatenated; the pooled output of the second."""
        pipe = self.pipe
        with torch.set_grad_enabled(grad):
            one = pipe.text_encoder(self._ids(pipe.tokenizer, prompts, pipe.text_encoder), output_hidden_states=True)
            two = pipe.text_encoder_2(self._ids(pipe.tokenizer_2, prompts, pipe.text_encoder_2),
                                      output_hidden_states=True)
            return {"encoder_hidden_states": torch.cat([one.hidden_states[-2], two.hidden_states[-2]], dim=-1),
                    "text_embeds": two[0], "time_ids": self.time_ids(len(prompts)).to(two[0].device)}

    def predict(self, unet, noisy: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
        return unet(noisy, t, encoder_hidden_states=cond["encoder_hidden_states"],
                    added_cond_kwargs={"text_embeds": cond["text_embeds"], "time_ids": cond["time_ids"]}).sample


def make_backbone(name: str, pipe, resolution: int, guidance_scale: float, num_inference_steps: int) -> Backbone:
    """The Backbone wrapper that fits the pipeline (SDXL pipelines have a second text encoder)."""
    cls = XLBackbone if getattr(pipe, "text_encoder_2", None) is not None else Backbone
    return cls(name, pipe, resolution, guidance_scale, num_inference_steps)


def load_pipeline_dir(path: Path, dtype=None, key: str = "backbone.path", vae=None):
    """Load a pipeline saved with `save_pretrained` (local files only); `key` is the config key
    that names the directory, for the error line; `vae` replaces the saved one; dtype None: float32."""
    from diffusers import DiffusionPipeline
    from bench.autoencoder import SpaceToDepthAutoencoder
    dtype = torch.float32 if dtype is None else dtype
    index = Path(path) / "model_index.json"
    if not index.is_file():
        raise BenchError(f"no pipeline at {path} (model_index.json missing); "
                         f"pass {key}=<dir saved with save_pretrained>")
    kwargs = {} if vae is None else {"vae": vae}
    if "safety_checker" in json.loads(index.read_text()):
        # the safety checker is off on every loading path (load_real's cache path too): it blacks
        # out images it flags, which would enter the scores; it is neither loaded nor run
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    if vae is None and json.loads(index.read_text()).get("vae", [None, None])[1] == "SpaceToDepthAutoencoder":
        # parameter-free: nothing to load but its config
        kwargs["vae"] = SpaceToDepthAutoencoder.from_config(
            SpaceToDepthAutoencoder.load_config(Path(path) / "vae"))
    pipe = DiffusionPipeline.from_pretrained(path, local_files_only=True, dtype=dtype, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe
