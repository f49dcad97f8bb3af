import json

import pytest
import torch

from bench import world as W
from bench.autoencoder import SpaceToDepthAutoencoder
from bench.backbones import Backbone, PretrainConfig, TinyArch, load_pipeline_dir
from bench.backbones.pretraining import min_snr_weight, pretrain
from bench.backbones.shipped import shipped_weights
from bench.backbones.tiny import ASSETS, build_tiny, make_tokenizer, recipe, short_hash
from bench.registry import BACKBONES, BenchError
from bench.sample import generate, initial_latents


def test_space_to_depth_autoencoder_is_exact():
    vae = SpaceToDepthAutoencoder(factor=2)
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    z = vae.encode(x).latent_dist.sample()
    assert z.shape == (3, 12, 16, 16)
    assert torch.allclose(vae.decode(z).sample, x, atol=1e-5)
    assert vae.config.latent_channels == 12 and len(vae.config.block_out_channels) == 2


def test_tokenizer_knows_every_grammar_word_and_pads():
    tok = make_tokenizer(12)
    ids = tok("three yellow triangles on a white background", padding="max_length", max_length=12).input_ids
    assert len(ids) == 12 and tok.unk_token_id not in ids
    assert ids[0] == tok.bos_token_id and ids[8] == tok.eos_token_id and ids[9] == tok.pad_token_id
    assert tok("").input_ids == [tok.bos_token_id, tok.eos_token_id]


def test_pipeline_save_load_round_trip(tmp_path, tiny_arch):
    pipe = build_tiny(tiny_arch, 32, seed=0)
    pipe.save_pretrained(tmp_path / "p", safe_serialization=True)
    assert json.loads((tmp_path / "p" / "model_index.json").read_text())["_class_name"] == "StableDiffusionPipeline"
    assert not list((tmp_path / "p").rglob("*.bin"))           # safetensors only
    loaded = load_pipeline_dir(tmp_path / "p")
    assert type(loaded).__name__ == "StableDiffusionPipeline"
    assert isinstance(loaded.vae, SpaceToDepthAutoencoder)
    a, b = Backbone("x", pipe, 32, 3.0, 2), Backbone("x", loaded, 32, 3.0, 2)
    prompts = ["one red circle on a blue background", "two green squares on a black background"]
    assert torch.equal(generate(a, prompts, [0, 1], progress=False), generate(b, prompts, [0, 1], progress=False))


def test_initial_noise_depends_only_on_prompt_and_seed(tiny_arch):
    bb = Backbone("x", build_tiny(tiny_arch, 32), 32, 3.0, 2)
    one = initial_latents(bb, ["a", "b"], [0, 0])
    two = initial_latents(bb, ["b", "a", "a"], [0, 0, 1])
    assert torch.equal(one[0], two[1]) and torch.equal(one[1], two[0])
    assert not torch.equal(two[1], two[2])


def test_short_pretraining_is_cached_and_deterministic(tmp_path, tiny_arch, tiny_pipe_dir):
    pre = PretrainConfig(steps=4, batch_size=8, corpus_size=64, warmup=2, snr_gamma=None, init_from=None)
    again = pretrain("tiny-sd15", tiny_arch, pre, W.world_v1(), tmp_path, progress=False)
    a = load_pipeline_dir(tiny_pipe_dir).unet.state_dict()
    b = load_pipeline_dir(again).unet.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)              # same recipe, same weights
    log = json.loads((again.parent / "train_log.json").read_text())
    assert log["loss_every_100"] and log["loss_every_100"][0] > 0
    assert json.loads((again.parent / "recipe.json").read_text())["pretrain"]["steps"] == 4
    mtime = (again / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime
    assert pretrain("tiny-sd15", tiny_arch, pre, W.world_v1(), tmp_path, progress=False) == again
    assert (again / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime == mtime


def test_min_snr_weight_on_hand_computed_values():
    # abar = 10/11 -> SNR 10 -> min(10, 5)/10 = 0.5;  abar = 2/3 -> SNR 2 -> 1.0
    ac = torch.tensor([10 / 11, 2 / 3])
    w = min_snr_weight(ac, torch.tensor([0, 1]), gamma=5.0)
    assert torch.allclose(w, torch.tensor([0.5, 1.0]))


def test_two_phase_recipe_continues_from_phase_one(tmp_path, tiny_arch):
    first = dict(steps=2, batch_size=4, corpus_size=16, warmup=1, snr_gamma=None, init_from=None)
    second = PretrainConfig(steps=2, batch_size=4, corpus_size=16, warmup=1, snr_gamma=5.0, init_from=first, seed=1)
    path = pretrain("tiny-sd15", tiny_arch, second, W.WorldConfig(), tmp_path, progress=False)
    entries = sorted(p.name for p in (tmp_path / "pretrain").iterdir())
    assert len(entries) == 2                    # phase 1 cached as its own entry
    one = load_pipeline_dir(tmp_path / "pretrain" / [e for e in entries if e != path.parent.name][0] / "pipeline")
    two = load_pipeline_dir(path)
    assert not torch.equal(one.unet.conv_in.weight, two.unet.conv_in.weight)
    assert json.loads((path.parent / "recipe.json").read_text())["pretrain"]["init_from"]["steps"] == 2


@pytest.mark.skipif(not (ASSETS / "tiny-sd15" / "recipe.json").is_file(), reason="no shipped weights")
def test_shipped_weights_match_recipe_and_checksums():
    """Each world's recipe finds its own asset: v1's bases in bench/assets/<name>, v2's (the
    default) in bench/assets/world-v2/<name>; any other recipe is refused."""
    path = shipped_weights("tiny-sd15", TinyArch(), PretrainConfig(), W.world_v1())
    assert path == ASSETS / "tiny-sd15" / "pipeline" and (path / "model_index.json").is_file()
    pipe = load_pipeline_dir(path)
    assert sum(p.numel() for p in pipe.unet.parameters()) > 1e6
    cfg = BACKBONES.get("tiny-sd15").Config()
    assert shipped_weights("tiny-sd15", cfg.arch, cfg.pretrain, W.WorldConfig()) == ASSETS / "world-v2" / "tiny-sd15" / "pipeline"
    with pytest.raises(BenchError, match="another recipe"):
        shipped_weights("tiny-sd15", TinyArch(), PretrainConfig(), W.WorldConfig())   # v1 recipe, v2 world
    with pytest.raises(BenchError, match="another recipe"):
        shipped_weights("tiny-sd15", TinyArch(), PretrainConfig(steps=1), W.world_v1())
    assert recipe("tiny-sd15", TinyArch(), PretrainConfig(), W.WorldConfig())["format"] == 1


# The cache keys of the default recipes: a change to `recipe` or its hashing renames every
# pretraining cache entry (and the shipped recipe.json files would no longer match).
# World v1's recipes (bench/assets/<name>) and world v2's, the defaults (bench/assets/world-v2/<name>).
RECIPE_HASHES_V1 = {"tiny-sd15": "8095d50c1099", "tiny-sd21": "6d5bb144c0dd", "tiny-sdxl": "2f05c706deec"}
RECIPE_HASHES = {"tiny-sd15": "44b49b4207ec", "tiny-sd21": "8eb559c02950", "tiny-sdxl": "19ef962da644"}


@pytest.mark.parametrize("name", sorted(RECIPE_HASHES))
def test_every_shipped_backbone_matches_its_default_recipe_and_cache_key(name):
    from bench.backbones.tiny import SIBLING_PRETRAIN
    cfg = BACKBONES.get(name).Config()
    rec = recipe(name, cfg.arch, cfg.pretrain, W.WorldConfig())
    assert short_hash(rec) == RECIPE_HASHES[name]
    # world v2's base is its v1 base fine-tuned on the v2 corpus
    assert rec["pretrain"]["warm_start"] == name and rec["world"]["modes"]["frame_rate"] == 0.7
    v1 = PretrainConfig() if name == "tiny-sd15" else PretrainConfig(**SIBLING_PRETRAIN)
    assert short_hash(recipe(name, cfg.arch, v1, W.world_v1())) == RECIPE_HASHES_V1[name]
    # the committed recipe.json and SHA256SUMS.json hold (shipped_weights checks both)
    assert shipped_weights(name, cfg.arch, cfg.pretrain, W.WorldConfig()) == ASSETS / "world-v2" / name / "pipeline"
    assert shipped_weights(name, cfg.arch, v1, W.world_v1()) == ASSETS / name / "pipeline"


def test_pretraining_keeps_its_numbers(tiny_arch, tiny_pipe_dir):
    """The conftest recipe (4 steps from random init, weighted loss, warmup, EMA) gives the figures
    the pretraining loop gave before it was built from the trainer's pieces (bench/optim.py,
    bench/objective.py), where its weights were equal to the bit. The tolerance only admits other
    CPUs' kernels: a change of the draws, schedule, weighting, clipping or EMA moves them far more."""
    log = json.loads((tiny_pipe_dir.parent / "train_log.json").read_text())
    assert log["loss_every_100"] == [pytest.approx(19.384220123291016, rel=1e-4)]
    init = build_tiny(tiny_arch, 32, seed=PretrainConfig().seed)     # conftest's recipe keeps the seed
    pipe = load_pipeline_dir(tiny_pipe_dir)
    moved = {}
    for part in ("unet", "text_encoder"):        # sum of |final - initial| over every tensor
        a, b = getattr(pipe, part).state_dict(), getattr(init, part).state_dict()
        moved[part] = sum(float((a[k].double() - b[k].double()).abs().sum()) for k in a)
    assert moved == {"unet": pytest.approx(141.78184480380907, rel=1e-4),
                     "text_encoder": pytest.approx(9.706202532476592, rel=1e-4)}
