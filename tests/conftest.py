import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_arch():
    from bench.backbones import TinyArch
    # smaller than the shipped recipe: every test path runs, in seconds
    return TinyArch(block_out_channels=[16, 32], norm_num_groups=8, text_hidden=32)


@pytest.fixture(scope="session")
def tiny_pipe_dir(tmp_path_factory, tiny_arch):
    """A short pretraining run (the real recipe code, few steps), saved in the HF layout."""
    from bench import world as W
    from bench.backbones import PretrainConfig
    from bench.backbones.pretraining import pretrain
    pre = PretrainConfig(steps=4, batch_size=8, corpus_size=64, warmup=2, snr_gamma=None, init_from=None)
    return pretrain("tiny-sd15", tiny_arch, pre, W.world_v1(), tmp_path_factory.mktemp("cache"),
                    progress=False)


def build_real_sd15(path: Path, seed: int = 0, with_safety_checker: bool = False) -> Path:
    """A tiny random-weight SD1.5 in the real on-disk layout: a CLIP BPE tokenizer (letters, no
    merges), CLIPTextModel, AutoencoderKL (2 blocks: 32 px -> 16 x 16 x 4 latents), a UNet with
    cross-attention, SD1.5's scaled_linear PNDM scheduler; saved with save_pretrained."""
    import json
    import string
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    tok_dir = path / "_bpe"
    tok_dir.mkdir(parents=True, exist_ok=True)
    chars = list(string.ascii_lowercase)
    vocab = {t: i for i, t in enumerate(chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"])}
    (tok_dir / "vocab.json").write_text(json.dumps(vocab))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=16)
    torch.manual_seed(seed)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                        num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=16,
                                        eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id,
                                        pad_token_id=tok.pad_token_id))
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32),
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        layers_per_block=1, norm_num_groups=8, sample_size=32)
    unet = UNet2DConditionModel(sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64),
                                layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=4, norm_num_groups=8)
    # SD1.5's scheduler_config.json: scaled_linear 0.00085..0.012, 1000 steps, epsilon, skip_prk_steps
    sched = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                          num_train_timesteps=1000, skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False)
    extra = {}
    if with_safety_checker:
        from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
        from transformers import CLIPConfig, CLIPImageProcessor
        extra = dict(safety_checker=StableDiffusionSafetyChecker(CLIPConfig(
            text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2),
            vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                               image_size=32, patch_size=16), projection_dim=8)),
            feature_extractor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
            requires_safety_checker=True)
    else:
        extra = dict(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=sched, **extra)
    pipe.save_pretrained(path / "sd15", safe_serialization=True)
    return path / "sd15"


@pytest.fixture(scope="session")
def real_sd15_dir(tmp_path_factory):
    """A tiny SD1.5 in the real layout (AutoencoderKL, CLIP BPE tokenizer), saved once per session."""
    return build_real_sd15(tmp_path_factory.mktemp("real-sd15"))
