"""Streamed preference data (bench/data/stream.py) on fixture shards written here with Pick-a-Pic v2's
published columns: sharding across ranks, a seeded order, crop/flip, workers, the latent cache."""
import datetime
import io
import json
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from bench.data import stream as S
from bench.registry import BenchError

RES = 32


def png(v: int, w: int = 40, h: int = 36) -> bytes:
    """A w x h image whose red channel is v and whose green channel is a left-to-right ramp
    (so a flip and a crop offset can be read off the pixels)."""
    a = np.zeros((h, w, 3), np.uint8)
    a[..., 0] = v
    a[..., 1] = np.arange(w, dtype=np.uint8)[None, :] * 5
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def row(i: int, l0: float, has_label: bool = True) -> dict:
    """One row with the 19 columns of yuvalkirstain/pickapic_v2 (HF dataset card)."""
    return {"are_different": True, "best_image_uid": f"u{i}", "caption": f"caption {i}",
            "created_at": datetime.datetime(2023, 5, 1), "has_label": has_label,
            "image_0_uid": f"a{i}", "image_0_url": f"https://x/{i}/0", "image_1_uid": f"b{i}",
            "image_1_url": f"https://x/{i}/1", "jpg_0": png(2 * i), "jpg_1": png(2 * i + 1),
            "label_0": l0, "label_1": 1.0 - l0 if l0 != 0.5 else 0.5, "model_0": "sdxl", "model_1": "sd21",
            "ranking_id": i, "user_id": 7, "num_example_per_prompt": 1, "__index_level_0__": i}


def labels(i: int) -> tuple[float, bool]:
    """Row i's label_0 and has_label: every 5th row a tie, every 7th unlabelled, else alternating."""
    if i % 7 == 6:
        return 0.0, False
    if i % 5 == 4:
        return 0.5, True
    return (1.0 if i % 2 else 0.0), True


N_ROWS = 26          # two shards of 13 rows, row groups of 4: 8 units


def write_pickapic(root, n=N_ROWS, shards=2, row_group=4):
    data = root / "data"
    data.mkdir(parents=True)
    per = n // shards
    for s in range(shards):
        rows = [row(i, *labels(i)) for i in range(s * per, (s + 1) * per)]
        pq.write_table(pa.Table.from_pandas(pd.DataFrame(rows), preserve_index=False),
                       data / f"train-{s:05d}-of-{shards:05d}-abcd{s}.parquet", row_group_size=row_group)
    return root


def usable(n=N_ROWS):
    return sorted(i for i in range(n) if labels(i)[1] and labels(i)[0] != 0.5)


@pytest.fixture
def pickapic(tmp_path):
    return write_pickapic(tmp_path / "pickapic")


def stream(root, **kw):
    kw = {"size": RES, "seed": 3, "shuffle_buffer": 5, **kw}
    return S.PairStream("pickapic_v2", root, "train", **kw)


def epoch_keys(s, rank, world, epochs=1):
    return [p["key"][0] for p in s.pairs(rank, world, epochs)]


def test_units_are_row_groups_of_every_shard(pickapic):
    s = stream(pickapic)
    assert len(s.shards) == 2 and len(s.units) == 8 and len(s) == N_ROWS
    assert [u.first for u in s.units] == [0, 4, 8, 12, 13, 17, 21, 25]


@pytest.mark.parametrize("world", [1, 2, 3])
def test_ranks_see_every_labelled_non_tie_pair_once_per_epoch(pickapic, world):
    s = stream(pickapic)
    per_rank = [epoch_keys(s, r, world) for r in range(world)]
    seen = [k for keys in per_rank for k in keys]
    assert sorted(seen) == usable()                 # complete, and nothing twice
    assert all(per_rank)                            # every rank has pairs
    # two epochs: each pair twice, in a different order
    two = [k for r in range(world) for k in epoch_keys(s, r, world, epochs=2)]
    assert sorted(two) == sorted(usable() * 2)


def test_more_ranks_than_units_split_rows(tmp_path):
    root = write_pickapic(tmp_path / "p", n=8, shards=1, row_group=8)   # one unit
    s = stream(root)
    assert len(s.units) == 1
    per_rank = [epoch_keys(s, r, 3) for r in range(3)]
    assert sorted(k for keys in per_rank for k in keys) == usable(8) and all(per_rank)


def test_order_is_seeded_and_independent_of_workers(pickapic):
    a = epoch_keys(stream(pickapic), 0, 2, epochs=2)
    assert a == epoch_keys(stream(pickapic), 0, 2, epochs=2)          # stable for a fixed seed
    assert a != epoch_keys(stream(pickapic, seed=4), 0, 2, epochs=2)  # and the seed matters
    assert a == epoch_keys(stream(pickapic, num_workers=2), 0, 2, epochs=2)   # workers: same order


def test_winner_first_center_crop_and_seeded_flip(pickapic):
    s = stream(pickapic, shuffle_buffer=1, hflip=False)
    pairs = {p["key"][0]: p for p in s.pairs(0, 1, 1)}
    for i, p in pairs.items():
        l0 = labels(i)[0]
        w, lo = (2 * i, 2 * i + 1) if l0 == 1.0 else (2 * i + 1, 2 * i)
        assert (int(p["winner"][0, 0, 0]), int(p["loser"][0, 0, 0])) == (w, lo)
        assert p["caption"] == f"caption {i}" and p["winner"].shape == (3, RES, RES)
    # 40x36 -> shorter side 32: 35x32 (torchvision Resize), centre crop: left offset round(3/2) = 2
    ramp = pairs[0]["winner"][1, 0].tolist()
    assert ramp == sorted(ramp)                     # not flipped
    flips = [p["winner"][1, 0, 0] > p["winner"][1, 0, -1] for p in stream(pickapic, shuffle_buffer=1).pairs(0, 1, 1)]
    assert 0 < sum(flips) < len(flips)              # about half flipped (DiffusionDPO RandomHorizontalFlip)
    again = [p["winner"][1, 0, 0] > p["winner"][1, 0, -1] for p in stream(pickapic, shuffle_buffer=1).pairs(0, 1, 1)]
    assert flips == again                           # the draws are seeded
    rc = {p["key"][0]: p["winner"] for p in stream(pickapic, random_crop=True, hflip=False).pairs(0, 1, 1)}
    assert any(not torch.equal(rc[i], pairs[i]["winner"]) for i in rc)   # random crops move


def test_hpdv2_streams_every_pair_across_ranks(tmp_path):
    root = tmp_path / "hpd"
    (root / "train").mkdir(parents=True)
    recs = []
    for r in range(70):     # two units of HPD_BLOCK records
        files = [f"{r}_{k}.png" for k in range(3)]
        for k, f in enumerate(files):
            (root / "train" / f).write_bytes(png((3 * r + k) % 250))
        pref = [0, 0, 0] if r % 9 == 0 else [int(k == r % 3) for k in range(3)]
        recs.append({"prompt": f"p{r}", "file_path": files, "human_preference": pref})
    (root / "train.json").write_text(json.dumps(recs))
    s = S.PairStream("hpdv2", root, "train", size=RES, seed=0, shuffle_buffer=7)
    assert len(s.units) == 2
    keys = [p["key"] for r in range(2) for p in s.pairs(r, 2, 1)]
    expected = [(r, j) for r in range(70) if r % 9 for j in range(2)]   # 2 pairs per record, no ties
    assert sorted(keys) == expected


# ----------------------------------------------------------------------------- the latent cache

def tiny_backbone(tiny_arch, vae_kind):
    from bench.backbones import Backbone
    from bench.backbones.tiny import build_tiny
    pipe = build_tiny(tiny_arch, RES)
    if vae_kind == "kl":      # a real AutoencoderKL (random weights): its posterior has a real std
        from diffusers import AutoencoderKL
        torch.manual_seed(0)
        pipe.vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=pipe.unet.config.in_channels,
                                 down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                                 block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
                                 scaling_factor=0.18215)
    return Backbone("x", pipe, RES, 3.0, 2)


def first_loss(bb, s, cfg):
    """The DPO loss of the stream's first micro-batch, from fixed generator states."""
    from bench.train import _micro_step, setup_policy
    from methods.dpo import DPO, DPOConfig
    method = DPO(DPOConfig())
    b = next(s.batches(method, bb, cfg))
    if not hasattr(bb, "_ref"):
        bb._ref = setup_policy(bb.unet, cfg, with_reference=True)
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():                   # move the policy off the reference: a loss != log 2
            for p in bb.unet.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    unet, ref = bb._ref
    torch.manual_seed(11)
    loss, _ = _micro_step(bb, method, unet, ref, b, bb.encode_prompts([""]), {"": 0}, cfg, 1000,
                          torch.Generator().manual_seed(5), 0)
    return loss.item(), b


@pytest.mark.parametrize("vae_kind", ["s2d", "kl"])
def test_latent_cache_gives_the_on_the_fly_loss(pickapic, tmp_path, tiny_arch, vae_kind, monkeypatch):
    from bench.train import TrainConfig
    bb = tiny_backbone(tiny_arch, vae_kind)
    cfg = TrainConfig(batch_size=4, empty_prompt_prob=0.5)
    cache = tmp_path / "cache"
    live, b_live = first_loss(bb, stream(pickapic), cfg)
    built, b = first_loss(bb, stream(pickapic, latent_cache="dist", cache_root=cache), cfg)
    assert b.images is None and b_live.images is not None and b.captions == b_live.captions
    assert abs(live - math.log(2)) > 1e-3
    # dist: a fresh sample from the cached posterior with the global generator, as on the fly; equal
    # up to the VAE's float rounding, which depends on how many images it encodes at once (a unit's
    # pairs vs a micro-batch: ~1e-6 for the KL VAE on this CPU; beta = 5000 magnifies it in the loss)
    torch.manual_seed(3)
    sampled = b.latents.get()
    torch.manual_seed(3)
    assert torch.allclose(sampled, bb.encode_images(b_live.images.float() / 255), atol=1e-5, rtol=0)
    assert built == pytest.approx(live, rel=1e-4)
    entries = sorted(cache.rglob("*.safetensors"))
    assert entries and all((e.parent / (e.name + ".sha256")).is_file() for e in entries)
    # read back: neither the VAE nor the text encoder runs, and the loss is the same again
    monkeypatch.setattr(bb.pipe.vae, "encode", lambda *a, **k: pytest.fail("VAE ran on a cached unit"))
    monkeypatch.setattr(bb, "encode_prompts", lambda caps, grad=False: (
        pytest.fail("text encoder ran on cached captions") if caps != [""] else type(bb).encode_prompts(bb, caps)))
    cached, _ = first_loss(bb, stream(pickapic, latent_cache="dist", cache_root=cache), cfg)
    assert cached == built
    monkeypatch.undo()
    # mode: the posterior's mean x scaling factor, no sampling; differs from dist where std matters
    mode, bm = first_loss(bb, stream(pickapic, latent_cache="mode", cache_root=cache), cfg)
    vae = bb.pipe.vae
    with torch.no_grad():
        want = vae.encode(b_live.images.float() / 255 * 2 - 1).latent_dist.mode() * vae.config.scaling_factor
    assert torch.allclose(bm.latents.get(), want, atol=1e-5)
    if vae_kind == "kl":
        assert abs(mode - live) > 1e-6
    else:             # SpaceToDepth's std is ~3e-7: mode and sample agree
        assert mode == pytest.approx(live, rel=1e-3)   # (beta 5000 magnifies the 3e-7 std)


def test_damaged_cache_entry_is_detected_and_made_again(pickapic, tmp_path, tiny_arch, caplog):
    bb = tiny_backbone(tiny_arch, "s2d")
    cache = tmp_path / "cache"
    first = [p["key"] for p in stream(pickapic, latent_cache="dist", cache_root=cache).pairs(0, 1, 1, bb)]
    entries = sorted(cache.rglob("*.safetensors"))
    assert len(entries) == 8                       # one per unit
    good = entries[3].read_bytes()
    data = bytearray(good)
    data[len(data) // 2] ^= 0xFF
    entries[3].write_bytes(bytes(data))
    again = stream(pickapic, latent_cache="dist", cache_root=cache)
    pairs = list(again.pairs(0, 1, 1, bb))
    assert [p["key"] for p in pairs] == first
    assert f"cache entry {entries[3]} is damaged (the file does not match its SHA-256)" in caplog.text
    assert entries[3].read_bytes() == good         # made again, byte for byte
    assert json.loads((entries[3].parent / (entries[3].name + ".sha256")).read_text())


# ----------------------------------------------------------------------------- a whole job

def test_run_trains_on_a_streamed_pickapic_directory(pickapic, tmp_path, tiny_pipe_dir, monkeypatch):
    """`python -m bench run ... data.source=pickapic_v2 data.path=<dir>` end to end (the CLI's
    entry point, in this process), with a DataLoader worker and the latent cache: result.json
    records the stream and the training history."""
    import logging
    from bench.cli import main
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["bench"])
    root_log = logging.getLogger()
    handlers, level = list(root_log.handlers), root_log.level
    try:
        assert main(["run", "backbone=tiny-sd15", f"backbone.weights={tiny_pipe_dir}", "method=dpo",
                     "data.source=pickapic_v2", f"data.path={pickapic}", "data.num_workers=1",
                     "data.latent_cache=dist", "train.steps=2", "train.batch_size=2", "train.log_every=1",
                     "backbone.num_inference_steps=2", "eval.max_prompts=2", "eval.seeds_per_prompt=1",
                     "eval.batch_size=2", f"paths.results={tmp_path / 'results'}",
                     f"paths.cache={tmp_path / 'cache'}", "progress=false"]) == 0
    finally:
        root_log.handlers[:] = handlers      # Hydra points logging at this test's captured streams
        root_log.setLevel(level)
    (result,) = (tmp_path / "results").rglob("result.json")
    res = json.loads(result.read_text())
    assert res["data"]["streamed"] and res["data"]["shards"] == 2 and res["data"]["units"] == 8
    assert [h["step"] for h in res["train_history"]] == [1, 2]
    assert all(math.isfinite(h["loss"]) for h in res["train_history"])
    assert res["config"]["data"]["source"] == "pickapic_v2"
    assert list((tmp_path / "cache" / "stream").rglob("*.safetensors.sha256"))   # the cache was written
