"""The optimisation pieces the trainer and pretraining share (bench/optim.py)."""
import math

import pytest
import torch

from bench.optim import clip_and_step, ema_decay_at, ema_update, lr_schedule


def _factors(warmup, cosine_steps, n):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = lr_schedule(opt, warmup, cosine_steps)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_lr_schedule_is_linear_warmup_then_constant_or_half_cosine():
    assert _factors(4, None, 6) == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert _factors(0, None, 2) == [1.0, 1.0]                  # no warmup
    # pretraining's schedule, in the expression (and so the rounding) the shipped weights were made with
    want = [min(1.0, (s + 1) / 3) * 0.5 * (1 + math.cos(math.pi * min(s / 8, 1.0))) for s in range(10)]
    got = _factors(3, 8, 10)
    assert got == want and got[-1] == 0.0 and got[2] == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))


def test_ema_decay_warms_up_and_the_update_moves_toward_the_weights():
    assert ema_decay_at(0.999, 0) == pytest.approx(0.1) and ema_decay_at(0.999, 8) == pytest.approx(0.5)
    assert ema_decay_at(0.999, 10 ** 6) == 0.999
    shadow, params = [torch.zeros(3)], [torch.nn.Parameter(torch.full((3,), 2.0))]
    ema_update(shadow, params, 0.75)
    assert torch.equal(shadow[0], torch.full((3,), 0.5)) and not shadow[0].requires_grad


def test_clip_and_step_clips_the_global_norm_then_steps_optimizer_and_schedule():
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = lr_schedule(opt, warmup=2)
    p.grad = torch.tensor([3.0, 4.0])                           # norm 5
    clip_and_step(opt, sched, [p], max_norm=1.0)               # at lr 0.5 (warmup step 1 of 2)
    assert torch.allclose(p.detach(), torch.tensor([-0.3, -0.4]))
    assert sched.last_epoch == 1 and opt.param_groups[0]["lr"] == 1.0
    # a (disabled) GradScaler passes the step through unchanged
    q = torch.nn.Parameter(torch.zeros(2))
    opt2 = torch.optim.SGD([q], lr=1.0)
    q.grad = torch.tensor([3.0, 4.0])
    clip_and_step(opt2, lr_schedule(opt2, warmup=2), [q], 1.0, torch.amp.GradScaler("cpu", enabled=False))
    assert torch.equal(q.detach(), p.detach())
