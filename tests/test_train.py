import math

import pytest
import torch

from bench.backbones import Backbone
from bench.backbones.tiny import build_tiny
from bench.data.pairs import PairData
from bench.objective import draw_noise
from bench.registry import BenchError
from bench.train import Method, TrainConfig, _batches, setup_policy, train
from methods.dpo import DPO, DPOConfig
from methods.sft import SFT


def pairs(n=6):
    g = torch.Generator().manual_seed(0)
    w = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    l = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    return PairData(w, l, ["one red circle on a blue background"] * n, torch.tensor([False] * (n - 1) + [True]))


def test_pair_shares_noise_and_timestep():
    lat = torch.zeros(8, 12, 16, 16)
    noise, t = draw_noise(lat, paired=True, n_timesteps=1000, gen=torch.Generator().manual_seed(0))
    assert torch.equal(noise[:4], noise[4:]) and torch.equal(t[:4], t[4:])
    assert not torch.equal(noise[0], noise[1])
    noise, t = draw_noise(lat, paired=False, n_timesteps=1000, gen=torch.Generator().manual_seed(0))
    assert not torch.equal(noise[:4], noise[4:])


def test_pair_batches_are_winner_first_and_skip_ties():
    d = pairs()
    b = next(_batches(DPO(DPOConfig()), d, TrainConfig(batch_size=32), torch.Generator().manual_seed(0)))
    w, l = b.images.chunk(2)
    tie_w = d.winners[-1]
    assert not any(torch.equal(x, tie_w) for x in w)
    for x, y in zip(w, l):   # each row's loser is the loser of the same pair
        k = next(i for i in range(len(d)) if torch.equal(d.winners[i], x))
        assert torch.equal(d.losers[k], y)


@pytest.mark.parametrize("finetune", ["full", "lora"])
def test_dpo_step_zero_loss_is_log2_and_training_moves(tiny_arch, finetune):
    bb = Backbone("x", build_tiny(tiny_arch, 32), 32, 3.0, 2)
    cfg = TrainConfig(steps=3, batch_size=4, lr=1e-3, finetune=finetune, log_every=1, empty_prompt_prob=0.0)
    before = {k: v.clone() for k, v in bb.unet.state_dict().items()}
    unet, hist = train(bb, DPO(DPOConfig()), pairs(), cfg, seed=0, progress=False)
    assert abs(hist[0]["loss"] - math.log(2)) < 1e-6
    assert hist[0]["implicit_acc"] == 0.0
    assert any(h["loss"] != hist[0]["loss"] for h in hist[1:])
    state = {k.replace(".base_layer", ""): v for k, v in unet.state_dict().items()}   # peft renames
    base_changed = [k for k in before if not torch.equal(state[k], before[k])]
    if finetune == "full":
        assert base_changed
    else:   # base weights frozen; the adapters (B initialised to zero) have moved
        assert not base_changed
        assert any("lora_B" in k and state[k].abs().sum() > 0 for k in state)


def test_lora_reference_is_the_base_model(tiny_arch):
    bb = Backbone("x", build_tiny(tiny_arch, 32), 32, 3.0, 2)
    x, t = torch.randn(2, 12, 16, 16), torch.tensor([10, 500])
    cond = bb.encode_prompts(["one red circle on a blue background"] * 2)
    base = bb.unet(x, t, **cond).sample.detach()
    unet, reference = setup_policy(bb.unet, TrainConfig(finetune="lora"))
    with torch.no_grad():
        for n, p in unet.named_parameters():
            if "lora_B" in n:
                p.add_(0.5)      # make the adapters matter
    assert not torch.allclose(unet(x, t, **cond).sample, base)
    assert torch.allclose(reference(lambda m: m(x, t, **cond).sample), base, atol=1e-6)
    assert not torch.allclose(unet(x, t, **cond).sample, base)   # adapters back on


def test_nan_loss_stops_with_one_line(tiny_arch):
    class Broken(Method):
        feedback = "images"

        def loss(self, err, ref_err):
            return err.mean() * float("nan"), {}
    bb = Backbone("x", build_tiny(tiny_arch, 32), 32, 3.0, 2)
    with pytest.raises(BenchError, match="loss became nan at step 0; lower train.lr"):
        train(bb, Broken(None), pairs(), TrainConfig(steps=2, batch_size=2), seed=0, progress=False)


def test_sft_trains_on_winners_only(tiny_arch):
    d = pairs()
    b = next(_batches(SFT(None), d, TrainConfig(batch_size=16), torch.Generator().manual_seed(1)))
    assert all(any(torch.equal(x, w) for w in d.winners[:-1]) for x in b.images)


def test_grad_accum_draws_micro_batches_per_step_and_logs_their_mean(tiny_arch):
    seen = []

    class Spy(DPO):
        def batch_loss(self, err, ref_err, batch, ctx):
            loss, m = super().batch_loss(err, ref_err, batch, ctx)
            seen.append((ctx.step, loss.item()))
            return loss, m
    bb = Backbone("x", build_tiny(tiny_arch, 32), 32, 3.0, 2)
    cfg = TrainConfig(steps=2, batch_size=2, grad_accum=3, lr=1e-3, log_every=1)
    _, hist = train(bb, Spy(DPOConfig()), pairs(), cfg, seed=0, progress=False)
    assert [s for s, _ in seen] == [0, 0, 0, 1, 1, 1]
    for h, k in zip(hist, (0, 3)):
        assert h["loss"] == pytest.approx(sum(l for _, l in seen[k:k + 3]) / 3)
    with pytest.raises(BenchError, match="train.grad_accum must be >= 1"):
        train(bb, DPO(DPOConfig()), pairs(), TrainConfig(grad_accum=0), seed=0, progress=False)


def test_error_weights_v_cap_on_hand_values():
    from types import SimpleNamespace
    from bench.train import error_weights
    abar = torch.tensor([0.5, 0.04, 0.001])
    bb = SimpleNamespace(noise_scheduler=SimpleNamespace(alphas_cumprod=abar), prediction_type="epsilon")
    t = torch.tensor([0, 1, 2])
    assert error_weights(bb, t, TrainConfig()) is None          # reference: constant
    w = error_weights(bb, t, TrainConfig(error_weighting="v_cap", error_weight_cap=100.0))
    assert torch.allclose(w, torch.tensor([2.0, 25.0, 100.0]))   # 1/abar, capped at 100
    bb.prediction_type = "v_prediction"                          # v error = eps error / abar
    w = error_weights(bb, t, TrainConfig(error_weighting="v_cap", error_weight_cap=100.0))
    assert torch.allclose(w, torch.tensor([1.0, 1.0, 0.1]))
    with pytest.raises(BenchError, match="unknown train.error_weighting 'snr'; valid: none, v_cap"):
        train(bb, DPO(DPOConfig()), pairs(), TrainConfig(error_weighting="snr"), seed=0, progress=False)


def test_ema_policy_is_the_fixed_decay_average_of_the_iterates(tiny_arch):
    bb = Backbone("x", build_tiny(tiny_arch, 32), 32, 3.0, 2)
    name = "conv_in.weight"
    w0 = bb.unet.state_dict()[name].clone()
    raw = []

    class Record:
        every = 1

        def __call__(self, step, unet):
            raw.append(unet.state_dict()[name].clone())
    d = 0.75
    cfg = TrainConfig(steps=2, batch_size=2, lr=1e-2, warmup=1, ema_decay=d, empty_prompt_prob=0.0)
    unet, _ = train(bb, DPO(DPOConfig()), pairs(), cfg, seed=0, progress=False, callbacks=[Record()])
    e1 = d * w0 + (1 - d) * raw[0]
    e2 = d * e1 + (1 - d) * raw[1]
    assert not torch.allclose(raw[1], w0)
    assert torch.allclose(unet.state_dict()[name], e2, atol=1e-6)
    with pytest.raises(BenchError, match=r"train.ema_decay must be in \(0, 1\)"):
        train(bb, DPO(DPOConfig()), pairs(), TrainConfig(ema_decay=1.0), seed=0, progress=False)
