"""benchmarks/perf_real.py (issue 19 item 7) on a tiny UNet config on the CPU: the benchmark's code
path and output fields, the FLOP count, and the memory estimator's byte counts."""
from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


def _load():
    spec = importlib.util.spec_from_file_location("perf_real", ROOT / "benchmarks" / "perf_real.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["perf_real"] = mod
    spec.loader.exec_module(mod)
    return mod


P = _load()

TINY_SD15 = {
    "block_out_channels": [32, 64], "layers_per_block": 1, "norm_num_groups": 8, "cross_attention_dim": 16,
    "attention_head_dim": 4, "in_channels": 4, "out_channels": 4, "sample_size": 8,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
}
# the SDXL mechanics: text_time added conditioning (pooled text + 6 time ids)
TINY_SDXL = {**TINY_SD15, "addition_embed_type": "text_time", "addition_time_embed_dim": 8,
             "projection_class_embeddings_input_dim": 12 + 6 * 8, "transformer_layers_per_block": [1, 2],
             "use_linear_projection": True}


@pytest.fixture(params=["sd15", "sdxl"])
def tiny(request, monkeypatch):
    spec = (P.ModelSpec(TINY_SD15, 8, 16, text_len=5) if request.param == "sd15"
            else P.ModelSpec(TINY_SDXL, 8, 16, text_len=5, pooled_dim=12, time_ids=6))
    monkeypatch.setitem(P.MODELS, "tiny", spec)
    return spec


def test_real_configs_have_the_published_parameter_counts():
    # diffusers' from_config on the meta device: 859,520,964 (SD1.5) and 2,567,463,684 (SDXL) UNet
    # parameters, the counts of the published checkpoints' unet/diffusion_pytorch_model.safetensors
    for name, n in (("sd15", 859_520_964), ("sdxl", 2_567_463_684)):
        counts = P._meta_counts(P.MODELS[name])
        assert sum(math.prod(s) for s in counts["unet_shapes"]) == n
    assert P._meta_counts(P.MODELS["sdxl"])["frozen"] == {"vae": 83_653_863, "text_encoder": 123_060_480,
                                                           "text_encoder_2": 694_659_840}


SAVERS_ON = ["--precision", "bf16", "--grad-checkpointing", "--ref-dtype", "bf16", "--optimizer", "adafactor", "--ema"]


@pytest.fixture
def keep_threads():
    """--threads sets torch's thread count for the process: restore it for the tests after."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("extra", [[], SAVERS_ON])
def test_benchmark_runs_and_writes_its_fields(tiny, tmp_path, extra, keep_threads):
    out = tmp_path / "perf.json"
    P.main(["--model", "tiny", "--device", "cpu", "--steps", "2", "--warmup", "1", "--pairs", "2",
            "--sample-steps", "2", "--threads", "1", "--out", str(out), *extra])
    disk = json.loads(out.read_text())
    assert disk["model"] == "tiny" and disk["device"] == "cpu"
    tr, sa = disk["train"], disk["sample"]
    for k in ("steps_per_s", "s_per_step", "flops_per_step", "tflops_per_s", "peak_memory_bytes", "params"):
        assert k in tr
    assert len(tr["step_times_s"]) == 2 and all(t > 0 for t in tr["step_times_s"])
    assert tr["steps_per_s"] == pytest.approx(1 / tr["s_per_step"])
    assert tr["tflops_per_s"] == pytest.approx(tr["flops_per_step"] / tr["s_per_step"] / 1e12)
    assert math.isfinite(tr["last_loss"]) and tr["last_loss"] > 0
    assert tr["params"] == sum(p.numel() for p in P.build_unet(tiny).parameters())
    assert sa["images"] == 2 and sa["denoising_steps"] == 2 and sa["unet_forwards_per_step"] == 4
    assert sa["images_per_s"] == pytest.approx(2 / sa["s_per_batch"])
    assert tr["peak_memory_bytes"] >= 0 and "RSS" in tr["peak_memory_method"]
    # a DPO step = policy forward + backward (3 forwards' worth of matmul FLOPs) + reference forward,
    # on 2 x pairs images; one guided sampling step = one forward on 2 x images. So per image and
    # at the same latent, a training step counts 4x a sampling step's FLOPs (2 denoising steps here);
    # gradient checkpointing recomputes the forward of the checkpointed blocks (diffusers checkpoints
    # the resnets and transformers, not conv_in/conv_out or the embeddings): between 4x and 5x
    fwd_per_image = sa["flops_per_batch"] / (2 * 2 * 2)
    ratio = tr["flops_per_step"] / (2 * 2) / fwd_per_image
    if "--grad-checkpointing" in extra:
        assert 4.3 < ratio < 5.0
    else:
        assert ratio == pytest.approx(4.0, rel=0.02)


def test_flop_count_of_a_conv_linear_module_is_the_hand_count():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(8 * 5 * 5, 7))
    x = torch.randn(2, 3, 5, 5)
    # conv: 2 FLOPs per MAC; MACs = batch * out_ch * H * W * in_ch * k * k; linear: 2 * batch * in * out
    conv = 2 * 2 * 8 * 5 * 5 * 3 * 3 * 3
    lin = 2 * 2 * 200 * 7
    assert P.count_flops(lambda: net(x)) == conv + lin
    # forward + backward: backward of the first conv needs no grad w.r.t. the input (x has none),
    # the linear's backward computes both grads -> conv: weight grad (1x), linear: input + weight grads (2x)
    assert P.count_flops(lambda: net(x).sum().backward()) == (conv + lin) + conv + 2 * lin


def test_estimator_bytes_are_exact_for_known_shapes():
    shapes = [(10, 20), (5,), (4, 3, 3, 3), (5000,)]          # 200 + 5 + 108 + 5000 = 5313 parameters
    p = 5313
    assert P.optimizer_state_bytes("adamw", shapes) == 8 * p
    # adafactor: (10,20) -> rows 10 + cols 20; (5,) -> 5; (4,3,3,3) -> (4,3,3)=36 + (4,3,3)=36; (5000,) -> 5000
    assert P.optimizer_state_bytes("adafactor", shapes) == 4 * (30 + 5 + 72 + 5000)
    # 8-bit: only (5000,) has >= 4096 elements: 2 bytes each + 2 fp32 absmax per 256-block (20 blocks)
    assert P.optimizer_state_bytes("adamw8bit", shapes) == 8 * (200 + 5 + 108) + 2 * 5000 + 2 * 4 * 20
    base = P.estimate_components(shapes, 1000, P.SAVER_STEPS[0], activation_bytes=77)
    assert base == {"policy_weights": 4 * p, "gradients": 4 * p, "optimizer_state": 8 * p, "reference": 4 * p,
                    "ema": 4 * p, "vae_and_text_encoders": 4000, "autocast_weight_copies": 0, "activations": 77,
                    "total": 24 * p + 4077}
    last = P.estimate_components(shapes, 1000, P.SAVER_STEPS[-1])
    assert last["reference"] == 2 * p and last["ema"] == 0 and last["vae_and_text_encoders"] == 2000
    assert last["autocast_weight_copies"] == 2 * p
    assert last["total"] == 8 * p + 4 * 5107 + 2 * p + 2000 + 2 * p


def test_sdxl_fp32_full_finetune_is_about_62_gb_before_activations():
    # issue 19: "SDXL full fine-tuning in fp32 with reference + EMA + Adam state is ~62 GB before
    # activations": policy + grads + 2 Adam moments + reference + EMA = 6 x 4 bytes x 2.567e9
    res = P.estimate("sdxl", None)
    r = res["rows"][0]
    unet_only = r["total"] - r["vae_and_text_encoders"] - r["activations"] - r["autocast_weight_copies"]
    assert unet_only == 24 * 2_567_463_684
    assert round(unet_only / 1e9) == 62


def test_saved_activations_grow_with_latent_area_and_shrink_under_checkpointing(tiny):
    torch.manual_seed(0)
    unet = P.build_unet(tiny)
    cond = P.conditioning(tiny, 2, "cpu")
    t = torch.full((2,), 10)
    small = P.saved_activation_bytes(unet, torch.randn(2, 4, 8, 8), t, cond)
    big = P.saved_activation_bytes(unet, torch.randn(2, 4, 16, 16), t, cond)
    ck = P.saved_activation_bytes(unet, torch.randn(2, 4, 16, 16), t, cond, checkpointing=True)
    half = P.saved_activation_bytes(unet, torch.randn(2, 4, 16, 16), t, cond, precision="bf16")
    assert 3.0 < big / small <= 4.2          # 4x the area; the conditioning's part does not grow
    assert ck < big / 2 and half < big


def test_activation_line_goes_through_the_measured_sizes(tiny, monkeypatch):
    # measured at 4x4 and 8x8 and read at the model's latent (8): the least-squares line through two
    # points gives back the measurement at 8 exactly; bf16 keeps about half the bytes of fp32
    res = P.measure_activations(tiny, [4, 8], images=2)
    for mode in ("fp32", "bf16", "fp32+ckpt", "bf16+ckpt"):
        assert res["extrapolated"][mode] == pytest.approx(res["measured"][mode][1], abs=2)
    assert 0.4 < res["measured"]["bf16"][1] / res["measured"]["fp32"][1] < 0.6
    assert res["measured"]["fp32+ckpt"][1] < res["measured"]["fp32"][1]
