"""tiny-sd21 and tiny-sdxl on the shared path, and the real SD1.5 / SD2.1 / SDXL loaders."""
import dataclasses
import json
import math

import pytest
import torch

from bench import world as W
from bench.backbones import PretrainConfig, XLBackbone, load_pipeline_dir, load_real, make_backbone, tiny_arch
from bench.backbones.tiny import SIBLING_PRETRAIN, build_tiny, recipe, transfer_weights
from bench.data.pairs import PairData
from bench.registry import BACKBONES, BenchError
from bench.sample import generate
from bench.train import TrainConfig, train
from methods.dpo import DPO, DPOConfig

PROMPTS = ["one red circle on a blue background", "two green squares on a black background"]
NAMES = ["tiny-sd15", "tiny-sd21", "tiny-sdxl"]


def small(name: str):
    """The backbone's architecture at test size (its mechanics unchanged)."""
    widths = {"text_hidden": 16, "text_hidden_2": 16} if name == "tiny-sdxl" else {"text_hidden": 32}
    return dataclasses.replace(tiny_arch(name), block_out_channels=[16, 32], **widths)


@pytest.fixture(scope="module", params=NAMES)
def sibling(request):
    return request.param, make_backbone(request.param, build_tiny(small(request.param), 32), 32, 3.0, 2)


def test_each_backbone_mirrors_its_real_sibling():
    assert tiny_arch("tiny-sd15").prediction_type == "epsilon"
    sd21 = tiny_arch("tiny-sd21")
    assert (sd21.prediction_type, sd21.text_act, sd21.use_linear_projection) == ("v_prediction", "gelu", True)
    xl = build_tiny(small("tiny-sdxl"), 32)
    assert type(xl).__name__ == "StableDiffusionXLPipeline"
    assert type(xl.text_encoder_2).__name__ == "CLIPTextModelWithProjection"
    assert xl.unet.config.addition_embed_type == "text_time"
    assert xl.unet.config.cross_attention_dim == 32          # 16 + 16: both encoders concatenated
    with pytest.raises(BenchError, match="valid: tiny-sd15, tiny-sd21, tiny-sdxl"):
        tiny_arch("tiny-sd3")


def test_save_reload_gives_identical_samples(tmp_path, sibling):
    name, bb = sibling
    bb.pipe.save_pretrained(tmp_path / name, safe_serialization=True)
    assert not list((tmp_path / name).rglob("*.bin"))
    again = make_backbone(name, load_pipeline_dir(tmp_path / name), 32, 3.0, 2)
    assert type(again) is type(bb) and again.prediction_type == bb.prediction_type
    assert torch.equal(generate(bb, PROMPTS, [0, 1], progress=False),
                       generate(again, PROMPTS, [0, 1], progress=False))


def test_conditioning_matches_the_pipelines_encode_prompt(sibling):
    name, bb = sibling
    cond = bb.encode_prompts(PROMPTS + [""])
    if isinstance(bb, XLBackbone):
        emb, _, pooled, _ = bb.pipe.encode_prompt(PROMPTS + [""], device="cpu", do_classifier_free_guidance=False)
        assert torch.allclose(cond["text_embeds"], pooled)
    else:
        emb, _ = bb.pipe.encode_prompt(PROMPTS + [""], "cpu", 1, False)
    assert torch.allclose(cond["encoder_hidden_states"], emb)


def test_dpo_step_zero_loss_is_log2_on_every_backbone(sibling):
    name, bb = sibling
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (8, 3, 32, 32), generator=g, dtype=torch.uint8)
    data = PairData(imgs[:4], imgs[4:], [PROMPTS[0]] * 4, torch.zeros(4, dtype=torch.bool))
    cfg = TrainConfig(steps=2, batch_size=4, lr=1e-3, log_every=1, empty_prompt_prob=0.5)
    before = {k: v.clone() for k, v in bb.unet.state_dict().items()}
    unet, hist = train(bb, DPO(DPOConfig()), data, cfg, seed=0, progress=False)
    assert abs(hist[0]["loss"] - math.log(2)) < 1e-6
    assert hist[1]["loss"] != hist[0]["loss"]
    bb.unet.load_state_dict(before)     # the module-scoped backbone stays the base


def test_v_target_on_hand_made_tensors(sibling):
    name, bb = sibling
    x0, eps = torch.full((2, 12, 16, 16), 0.5), torch.full((2, 12, 16, 16), -1.0)
    t = torch.tensor([0, 600])
    ab = bb.noise_scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    want = ab.sqrt() * eps - (1 - ab).sqrt() * x0 if bb.prediction_type == "v_prediction" else eps
    assert torch.allclose(bb.target(x0, eps, t), want, atol=1e-6)
    if name == "tiny-sd21":       # by hand at t=600: abar from the cosine schedule
        s = 0.008
        f = lambda u: math.cos((u / 1000 + s) / (1 + s) * math.pi / 2) ** 2
        a = f(601) / f(0)
        v = bb.target(x0, eps, t)[1, 0, 0, 0].item()
        assert abs(v - (math.sqrt(a) * -1.0 - math.sqrt(1 - a) * 0.5)) < 1e-3


def test_sdxl_added_conditions_on_hand_made_tensors():
    bb = make_backbone("tiny-sdxl", build_tiny(small("tiny-sdxl"), 32), 32, 5.0, 2)
    assert torch.equal(bb.time_ids(2), torch.tensor([[32.0, 32, 0, 0, 32, 32]] * 2))
    cond = bb.encode_prompts(PROMPTS)
    ids = bb.pipe.tokenizer_2(PROMPTS, padding="max_length", max_length=12, return_tensors="pt").input_ids
    assert torch.allclose(cond["text_embeds"], bb.pipe.text_encoder_2(ids).text_embeds)
    x, t = torch.randn(2, 12, 16, 16, generator=torch.Generator().manual_seed(0)), torch.tensor([100, 700])
    with torch.no_grad():
        out = bb.predict(bb.unet, x, t, cond)
        direct = bb.unet(x, t, encoder_hidden_states=cond["encoder_hidden_states"],
                         added_cond_kwargs={"text_embeds": cond["text_embeds"], "time_ids": cond["time_ids"]}).sample
        assert torch.equal(out, direct)
        # each added condition reaches the UNet
        for key, value in (("time_ids", torch.tensor([[64.0, 64, 8, 8, 32, 32]] * 2)),
                           ("text_embeds", torch.zeros_like(cond["text_embeds"]))):
            assert not torch.allclose(bb.predict(bb.unet, x, t, {**cond, key: value}), out)
    # the pipeline's own micro-conditioning at sampling is the same vector
    add = bb.pipe._get_add_time_ids((32, 32), (0, 0), (32, 32), torch.float32,
                                    text_encoder_projection_dim=bb.pipe.text_encoder_2.config.projection_dim)
    assert torch.equal(add, bb.time_ids(1))


def test_warm_start_copies_every_tensor_that_fits():
    src = build_tiny(small("tiny-sd15"), 32, seed=0)
    sd21 = build_tiny(small("tiny-sd21"), 32, seed=5)
    counts = transfer_weights(src, sd21)
    assert counts["kept"] == 0                                # 1x1 conv -> linear projections reshaped
    a = src.unet.down_blocks[1].attentions[0].proj_in.weight
    assert torch.equal(sd21.unet.down_blocks[1].attentions[0].proj_in.weight, a.squeeze())
    xl = build_tiny(dataclasses.replace(small("tiny-sdxl"), text_hidden=16, text_hidden_2=16), 32, seed=5)
    counts = transfer_weights(src, xl)
    assert counts["copied"] > 0 and counts["kept"] > 0         # new text encoders and add_embedding
    assert torch.equal(xl.unet.conv_in.weight, src.unet.conv_in.weight)


def test_sibling_recipes_name_their_warm_start_and_its_checksums():
    from bench.backbones.shipped import checked_asset
    from bench.backbones.tiny import ASSETS, short_hash
    sums = json.loads((ASSETS / "tiny-sd15" / "SHA256SUMS.json").read_text())
    for name in ("tiny-sd21", "tiny-sdxl"):
        cfg = BACKBONES.get(name).Config()
        rec = recipe(name, cfg.arch, PretrainConfig(**SIBLING_PRETRAIN), W.world_v1())   # world v1's siblings
        assert rec["pretrain"]["warm_start"] == "tiny-sd15" and rec["warm_start_sha256"] == short_hash(sums)
        own = json.loads((ASSETS / name / "SHA256SUMS.json").read_text())             # world v2's: from their v1 base
        rec = recipe(name, cfg.arch, cfg.pretrain, W.WorldConfig())
        assert rec["pretrain"]["warm_start"] == name and rec["warm_start_sha256"] == short_hash(own)
    assert checked_asset("tiny-sd15") == ASSETS / "tiny-sd15" / "pipeline"
    with pytest.raises(BenchError, match="no weights to warm-start from"):
        checked_asset("tiny-sd99")


# ----------------------------------------------------------------------------- real loaders

@pytest.mark.parametrize("name,arch_of", [("sd15", "tiny-sd15"), ("sd21", "tiny-sd21"),
                                          ("sd21-base", "tiny-sd15"), ("sdxl", "tiny-sdxl")])
def test_real_loader_reads_an_hf_layout_dir(tmp_path, name, arch_of):
    build_tiny(small(arch_of), 32).save_pretrained(tmp_path / name, safe_serialization=True)
    index = json.loads((tmp_path / name / "model_index.json").read_text())
    assert {"unet", "text_encoder", "tokenizer", "scheduler", "vae"} <= set(index)
    cfg = dataclasses.replace(BACKBONES.get(name).Config(), path=str(tmp_path / name), vae_path=None)
    bb = BACKBONES.get(name)(cfg, W.WorldConfig(), tmp_path)
    assert bb.name == name and bb.resolution == cfg.resolution
    assert isinstance(bb, XLBackbone) == (name == "sdxl")
    assert bb.prediction_type == ("v_prediction" if name == "sd21" else "epsilon")


def test_real_backbone_defaults_record_the_papers():
    sd15, sd21, base, xl = (BACKBONES.get(n).Config() for n in ("sd15", "sd21", "sd21-base", "sdxl"))
    assert (sd15.resolution, sd21.resolution, base.resolution, xl.resolution) == (512, 768, 512, 1024)
    assert (sd15.guidance_scale, sd21.guidance_scale, xl.guidance_scale) == (7.5, 7.5, 5.0)
    assert xl.vae_path == "madebyollin/sdxl-vae-fp16-fix"     # the papers' training recipes: tests/test_presets.py


@pytest.mark.parametrize("name", ["sd15", "sd21", "sdxl"])
def test_real_loader_without_weights_says_what_and_where(tmp_path, monkeypatch, name):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    cfg = dataclasses.replace(BACKBONES.get(name).Config(), vae_path=None)
    with pytest.raises(BenchError) as e:
        BACKBONES.get(name)(cfg, W.WorldConfig(), tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and cfg.model_id in msg and str(tmp_path / "empty-cache") in msg
    assert "backbone.path" in msg
    with pytest.raises(BenchError, match="model_index.json missing"):
        load_real(cfg.model_id, str(tmp_path / "nowhere"))
    with pytest.raises(BenchError, match="VAE madebyollin/sdxl-vae-fp16-fix not found.*backbone.vae_path"):
        load_real(cfg.model_id, None, "madebyollin/sdxl-vae-fp16-fix")


def test_loss_weight_is_the_same_in_epsilon_and_v_units():
    from bench.backbones import PretrainConfig
    from bench.backbones.pretraining import loss_weight
    ac, t = torch.tensor([0.9, 0.5, 0.001]), torch.tensor([0, 1, 2])
    pre = PretrainConfig(snr_gamma=None, v_weight_cap=100.0)
    # epsilon units: min(1/abar, 100) = 1.111, 2, 100 (capped)
    assert torch.allclose(loss_weight(pre, ac, t), torch.tensor([1 / 0.9, 2.0, 100.0]))
    # v units: times abar, so that weight x |v error|^2 equals the epsilon-units weighted error
    assert torch.allclose(loss_weight(pre, ac, t, "v_prediction"), torch.tensor([1.0, 1.0, 0.1]))
    # Min-SNR in v units is min(SNR, g) / (SNR + 1): abar 0.9 -> SNR 9 -> 5/10
    pre = PretrainConfig(snr_gamma=5.0, v_weight_cap=None)
    assert torch.allclose(loss_weight(pre, ac[:1], t[:1], "v_prediction"), torch.tensor([0.5]))


def _with_safety_checker(pipe_dir):
    """A tiny SD1.5 pipeline saved with a (tiny, random) StableDiffusionSafetyChecker and its feature
    extractor, as the published SD1.5 repositories ship it (model_index.json has safety_checker)."""
    from diffusers import StableDiffusionPipeline
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor
    base = build_tiny(small("tiny-sd15"), 32)
    cfg = CLIPConfig(text_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                                  "num_attention_heads": 2},
                     vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                                    "num_attention_heads": 2, "image_size": 32, "patch_size": 16},
                     projection_dim=8)
    from diffusers import AutoencoderKL
    vae = AutoencoderKL(block_out_channels=[8, 8], norm_num_groups=8, layers_per_block=1, sample_size=32,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer,
                                   unet=base.unet, scheduler=base.scheduler,
                                   safety_checker=StableDiffusionSafetyChecker(cfg),
                                   feature_extractor=CLIPImageProcessor(crop_size=32, size=32))
    pipe.save_pretrained(pipe_dir, safe_serialization=True)
    index = json.loads((pipe_dir / "model_index.json").read_text())
    assert index["safety_checker"] == ["stable_diffusion", "StableDiffusionSafetyChecker"]
    return pipe_dir


def test_safety_checker_is_off_on_both_loading_paths(tmp_path, monkeypatch):
    from tests.test_scorers_real import hf_cache_entry
    d = _with_safety_checker(tmp_path / "sd15")
    from diffusers import DiffusionPipeline
    assert DiffusionPipeline.from_pretrained(d, local_files_only=True).safety_checker is not None  # it is there
    from_dir = load_real("stable-diffusion-v1-5/stable-diffusion-v1-5", str(d))
    hf_cache_entry(tmp_path / "hub", "stable-diffusion-v1-5/stable-diffusion-v1-5", d)
    import huggingface_hub.constants
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))   # read at import
    from_cache = load_real("stable-diffusion-v1-5/stable-diffusion-v1-5", None)
    for pipe in (from_dir, from_cache):
        assert pipe.safety_checker is None
        assert pipe.unet.config.block_out_channels == [16, 32]           # the rest did load
