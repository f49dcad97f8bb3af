import math

import torch

from methods.dpo import DPO, DPOConfig
from methods.sft import SFT


def test_dpo_loss_on_hand_computed_tensors():
    # winners first: e_pol = [w1, w2, l1, l2]
    err = torch.tensor([0.10, 0.20, 0.30, 0.25])
    ref = torch.tensor([0.12, 0.20, 0.29, 0.25])
    loss, m = DPO(DPOConfig(beta=5000.0)).loss(err, ref)
    # pair 1: inside = -2500 * ((0.10 - 0.12) - (0.30 - 0.29)) = -2500 * -0.03 = 75
    # pair 2: inside = -2500 * ((0.20 - 0.20) - (0.25 - 0.25)) = 0
    expected = (-math.log(1 / (1 + math.exp(-75.0))) + math.log(2)) / 2
    assert abs(loss.item() - expected) < 1e-4
    assert m["implicit_acc"].item() == 0.5          # 75 > 0, 0 is not > 0
    assert abs(m["reward_margin"].item() - 37.5) < 1e-2


def test_dpo_half_beta_5000_equals_no_half_beta_2500():
    torch.manual_seed(0)
    err, ref = torch.rand(8) * 1e-3, torch.rand(8) * 1e-3
    a, _ = DPO(DPOConfig(beta=5000.0, half=True)).loss(err, ref)
    b, _ = DPO(DPOConfig(beta=2500.0, half=False)).loss(err, ref)
    c, _ = DPO(DPOConfig(beta=5000.0, half=False)).loss(err, ref)
    assert torch.allclose(a, b)
    assert not torch.allclose(a, c)


def test_dpo_loss_is_log2_when_policy_equals_reference():
    err = torch.rand(6)
    loss, m = DPO(DPOConfig()).loss(err, err.clone())
    assert abs(loss.item() - math.log(2)) < 1e-7
    assert m["implicit_acc"].item() == 0.0


def test_dpo_gradient_lowers_winner_error():
    err = torch.tensor([0.2, 0.2], requires_grad=True)
    loss, _ = DPO(DPOConfig(beta=10.0)).loss(err, torch.tensor([0.2, 0.2]))
    loss.backward()
    assert err.grad[0] > 0 and err.grad[1] < 0     # descending lowers e_w and raises e_l


def test_sft_loss_is_mean_error():
    loss, _ = SFT(None).loss(torch.tensor([1.0, 2.0, 6.0]), None)
    assert loss.item() == 3.0
