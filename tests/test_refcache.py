"""Precomputed reference errors for fixed draws (train.ref_draws, bench/refcache.py)."""
import math

import pytest
import torch

from bench.backbones import Backbone
from bench.backbones.tiny import build_tiny
from bench.registry import BenchError
from bench.refcache import Draws
from bench.results import job_hash
from bench.objective import per_sample_error
from bench.train import Batch, Method, RefreshSpec, TrainConfig, _batches, _reference_draws, setup_policy, train
from methods.dpo import DPO, DPOConfig
from tests.test_train import pairs


def _setup(tiny_arch, n=6):
    bb = Backbone("x", build_tiny(tiny_arch, 32), 32, 3.0, 2)
    data = pairs(n)
    captions = sorted(set(data.captions) | {""})
    enc = bb.encode_prompts(captions)
    return bb, data, enc, {c: i for i, c in enumerate(captions)}


def test_a_draw_depends_on_its_example_and_index_only():
    d = Draws(k=3, seed=7, latent_shape=(12, 4, 4), n_timesteps=1000, empty_prompt_prob=0.5)
    n1, t1, drop1 = d.take(torch.tensor([5, 2]), torch.tensor([1, 0]))
    n2, t2, drop2 = d.take(torch.tensor([2, 9, 5]), torch.tensor([0, 2, 1]))
    assert torch.equal(n1[0], n2[2]) and t1[0] == t2[2] and drop1[0] == drop2[2]
    assert torch.equal(n1[1], n2[0])
    other, _, _ = d.take(torch.tensor([5]), torch.tensor([2]))
    assert not torch.equal(other[0], n1[0])
    seeded, _, _ = Draws(3, 8, (12, 4, 4), 1000, 0.5).take(torch.tensor([5]), torch.tensor([1]))
    assert not torch.equal(seeded[0], n1[0])


def test_cached_errors_equal_a_live_reference_on_the_same_draws(tiny_arch, tmp_path):
    bb, data, enc, row = _setup(tiny_arch)
    cfg = TrainConfig(batch_size=4, ref_draws=3, empty_prompt_prob=0.5)
    unet, reference = setup_policy(bb.unet, cfg)
    draws = _reference_draws(bb, DPO(DPOConfig()), data, reference, enc, row, cfg, 1000, tmp_path, False)
    assert draws.table.shape == (len(data), 3, 2)
    [cached] = list(tmp_path.glob("x-*.safetensors"))
    b = next(_batches(DPO(DPOConfig()), data, cfg, torch.Generator().manual_seed(0)))
    noise, t, drop, ref_err = draws.take(b, torch.Generator().manual_seed(1))
    rows = torch.tensor([row["" if dr else c] for c, dr in zip(b.captions, drop)])
    latents = bb.encode_images(b.images.float() / 255.0)
    with torch.no_grad():
        live = reference(lambda m: per_sample_error(bb, m, latents, noise, t, {k: v[rows] for k, v in enc.items()}))
    assert torch.allclose(ref_err, live, rtol=1e-5, atol=1e-7)
    assert torch.equal(noise[:4], noise[4:]) and torch.equal(t[:4], t[4:]) and drop[:4] == drop[4:]
    # a second job with the same reference and data reads the file; other weights get another entry
    again = _reference_draws(bb, DPO(DPOConfig()), data, reference, enc, row, cfg, 1000, tmp_path, False)
    assert torch.equal(again.table, draws.table) and len(list(tmp_path.glob("x-*.safetensors"))) == 1
    with torch.no_grad():
        next(reference.ref.parameters()).add_(0.01)
    _reference_draws(bb, DPO(DPOConfig()), data, reference, enc, row, cfg, 1000, tmp_path, False)
    assert len(list(tmp_path.glob("x-*.safetensors"))) == 2 and cached.is_file()


def test_dpo_from_cached_reference_starts_at_log2_and_trains(tiny_arch, tmp_path):
    bb, data, _, _ = _setup(tiny_arch)
    cfg = TrainConfig(steps=3, batch_size=4, lr=1e-3, log_every=1, ref_draws=2, ema_decay=None)
    unet, hist = train(bb, DPO(DPOConfig()), data, cfg, seed=0, progress=False, ref_cache_dir=tmp_path)
    # at step 1 the policy is the reference: the loss is log 2 up to the batching of the two forwards
    # (float rounding ~6e-8 in an error, times beta/2 = 2500 in the logit: 7.5e-5 measured at one thread)
    assert abs(hist[0]["loss"] - math.log(2)) < 2e-4
    assert any(h["loss"] != hist[0]["loss"] for h in hist[1:])


def test_reference_draws_refuse_what_cannot_be_precomputed(tiny_arch):
    bb, data, enc, row = _setup(tiny_arch)
    cfg = TrainConfig(batch_size=4, ref_draws=2)
    _, refreshed = setup_policy(bb.unet, cfg, refresh=RefreshSpec(every=5))
    with pytest.raises(BenchError, match="needs a frozen reference"):
        _reference_draws(bb, DPO(DPOConfig()), data, refreshed, enc, row, cfg, 1000, None, False)

    class Conditioned(DPO):
        def condition(self, cond, batch: Batch):
            return cond
    _, ref = setup_policy(build_tiny(tiny_arch, 32).unet, cfg)
    with pytest.raises(BenchError, match="conditions the reference"):
        _reference_draws(bb, Conditioned(DPOConfig()), data, ref, enc, row, cfg, 1000, None, False)
    with pytest.raises(BenchError, match="train.ref_draws must be >= 0"):
        train(bb, DPO(DPOConfig()), data, TrainConfig(ref_draws=-1), seed=0, progress=False)
    assert Method.condition is not Conditioned.condition


def test_the_option_at_its_default_renames_no_job():
    base = {"backbone": {"name": "b"}, "method": {"name": "dpo"}, "data": {}, "eval": {}, "world": {}, "seed": 0,
            "train": {"steps": 300}}
    with_default = {**base, "train": {"steps": 300, "ref_draws": 0, "ref_draw_seed": 0}}
    assert job_hash(with_default) == job_hash(base)
    assert job_hash({**base, "train": {"steps": 300, "ref_draws": 4, "ref_draw_seed": 0}}) != job_hash(base)
