"""Paper presets (sweeps/preset/): each composes to its paper's recipe, and a preset job runs end
to end on a tiny SD1.5 in the real layout with a streamed Pick-a-Pic directory."""
import json
import math

import pytest

from bench.config import compose_config, validate
from bench.train import learning_rate
from tests.test_stream import write_pickapic


@pytest.fixture
def pickapic(tmp_path):
    return write_pickapic(tmp_path / "pickapic")


def job(*overrides):
    return validate(compose_config(list(overrides)))


def test_diffusion_dpo_presets_are_the_official_recipes(pickapic, real_sd15_dir):
    sd15 = job("+preset=diffusion_dpo_sd15", f"data.path={pickapic}", f"backbone.path={real_sd15_dir}")
    assert (sd15.backbone.name, sd15.method.name, sd15.preset) == ("sd15", "dpo", "diffusion_dpo_sd15")
    assert sd15.train.batch_size * sd15.train.grad_accum == 2048              # pairs per optimizer step
    assert learning_rate(sd15.train) == pytest.approx(2.048e-5)               # 1e-8 x 2048 (--scale_lr)
    assert (sd15.method.beta, sd15.train.warmup, sd15.train.steps) == (5000.0, 500, 2000)
    assert (sd15.train.optimizer, sd15.train.mixed_precision, sd15.train.ema_decay) == ("adamw", "fp16", None)
    assert (sd15.data.source, sd15.data.random_crop, sd15.data.hflip) == ("pickapic_v2", False, True)
    assert sd15.backbone.resolution == 512 and sd15.backbone.guidance_scale == 7.5
    xl = job("+preset=diffusion_dpo_sdxl", f"data.path={pickapic}", f"backbone.path={real_sd15_dir}")
    assert (xl.backbone.name, xl.train.optimizer, xl.train.gradient_checkpointing) == ("sdxl", "adafactor", True)
    assert (xl.train.warmup, xl.backbone.resolution, xl.backbone.guidance_scale) == (200, 1024, 5.0)
    assert xl.backbone.vae_path == "madebyollin/sdxl-vae-fp16-fix"


def test_a_real_backbone_turns_ema_off_unless_asked(real_sd15_dir):
    assert job("backbone=sd15", f"backbone.path={real_sd15_dir}").train.ema_decay is None
    assert job("backbone=sd15", f"backbone.path={real_sd15_dir}", "train.ema_decay=0.9").train.ema_decay == 0.9
    assert job().train.ema_decay == 0.99                 # the tiny backbones keep the suite's EMA


def test_kto_preset_and_8bit_adam_without_bitsandbytes_is_one_line(tmp_path, real_sd15_dir):
    import importlib.util
    from bench.registry import BenchError
    cfg = compose_config(["+preset=diffusion_kto_sd15", f"backbone.path={real_sd15_dir}", "data.path=x.parquet"])
    assert (cfg.method.name, cfg.method.beta, cfg.train.lr, cfg.train.optimizer) == ("kto", 1000.0, 1e-7, "adamw8bit")
    if importlib.util.find_spec("bitsandbytes") is None:
        with pytest.raises(BenchError, match=r"adamw8bit needs bitsandbytes; pip install -e '\.\[paper\]'"):
            validate(cfg)


def test_preset_job_runs_end_to_end_on_the_real_layout(pickapic, tmp_path, real_sd15_dir, monkeypatch):
    """+preset=diffusion_dpo_sd15 scaled down (1 step, 2 pairs, 32 px, bf16 on the CPU)."""
    import bench.runner as runner
    monkeypatch.chdir(tmp_path)
    cfg = compose_config(["+preset=diffusion_dpo_sd15", f"backbone.path={real_sd15_dir}", "backbone.resolution=32",
                          "backbone.num_inference_steps=2", f"data.path={pickapic}", "train.steps=1",
                          "train.batch_size=2", "train.grad_accum=1", "train.warmup=1", "train.mixed_precision=bf16",
                          "train.log_every=1", "eval.max_prompts=2", "eval.seeds_per_prompt=1", "eval.batch_size=2",
                          "eval.scorers=[gold]", "eval.n_bootstrap=100", f"paths.results={tmp_path / 'r'}",
                          f"paths.cache={tmp_path / 'cache'}", "progress=false"])
    out = runner.run_job(cfg)
    res = json.loads((out / "result.json").read_text())
    assert res["config"]["preset"] == "diffusion_dpo_sd15" and res["config"]["weights_fingerprint"]["pipeline"]
    t = res["training"]
    assert t["lr"] == pytest.approx(2e-8) and t["mixed_precision"] == "bf16" and t["optimizer"] == "adamw"
    assert set(t["placement"]) == {"policy", "vae", "text_encoder", "reference"}      # no EMA
    assert t["placement"]["reference"]["dtypes"] == ["bfloat16"]
    assert math.isfinite(res["train_history"][0]["loss"]) and res["data"]["streamed"]
