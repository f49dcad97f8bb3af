"""The methods added as one file each (issue 18, "the proof"): losses on hand-computed numbers,
each method's defining property, and a 2-step job of each through the runner on the tiny backbone."""
import json
import math

import pytest
import torch

from bench import runner
from bench.registry import METHODS

SMOKE_METHODS = ["ipo", "mapo"]


# ---------------------------------------------------------------- IPO

def test_ipo_loss_on_hand_computed_numbers():
    from methods.ipo import IPO, IPOConfig
    # winners first: e_pol = [w1, w2, l1, l2], e_ref likewise
    err = torch.tensor([0.10, 0.20, 0.30, 0.25])
    ref = torch.tensor([0.12, 0.20, 0.29, 0.25])
    loss, m = IPO(IPOConfig(beta=2500.0)).loss(err, ref)
    # logits = (r_w - r_l) - (e_w - e_l): pair 1 (0.12 - 0.29) - (0.10 - 0.30) = 0.03; pair 2: 0
    # target 1/(2*2500) = 0.0002
    expected = ((0.03 - 0.0002) ** 2 + (0.0 - 0.0002) ** 2) / 2      # 4.4402e-4
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert m["implicit_acc"].item() == 0.5
    assert m["target_margin"].item() == pytest.approx(2e-4)


def test_ipo_uses_the_configured_beta_where_the_port_reads_an_undefined_flag():
    """The port's ipo branch reads `args.beta`, which its parser never defines (AttributeError; fix
    PR #13522 uses --beta_dpo). Here the one `beta` key sets the target margin 1/(2 beta): the loss
    is zero exactly at that margin, and a different beta moves the target."""
    from methods.ipo import IPO, IPOConfig
    assert [f for f in IPOConfig.__dataclass_fields__] == ["name", "beta"]
    assert IPOConfig().beta == 2500.0
    ref = torch.tensor([0.3, 0.3])
    for beta in (2500.0, 100.0):
        margin = 1 / (2 * beta)
        err = torch.tensor([0.3 - margin, 0.3], requires_grad=True)    # logits = margin exactly
        loss, _ = IPO(IPOConfig(beta=beta)).loss(err, ref)
        assert loss.item() == pytest.approx(0.0, abs=1e-12)
        loss.backward()
        assert err.grad.abs().max().item() < 1e-6
    loss, _ = IPO(IPOConfig(beta=100.0)).loss(torch.tensor([0.3 - 1 / 5000, 0.3]), ref)
    assert loss.item() == pytest.approx((1 / 5000 - 1 / 200) ** 2, rel=1e-4)


def test_ipo_pulls_the_margin_towards_the_target_from_both_sides():
    from methods.ipo import IPO, IPOConfig
    ref = torch.tensor([0.3, 0.3])
    for e_w, sign in ((0.3, +1), (0.2, -1)):           # margin 0 (below target) / 0.1 (above)
        err = torch.tensor([e_w, 0.3], requires_grad=True)
        IPO(IPOConfig()).loss(err, ref)[0].backward()
        # d loss / d e_w = -2 (logits - target): > 0 below the target (a step lowers e_w), < 0 above it
        assert torch.sign(err.grad[0]).item() == sign
        assert err.grad[1].item() == pytest.approx(-err.grad[0].item())


# ---------------------------------------------------------------- MaPO

def _f(e, s=0.5):
    return s * e / (math.exp(s * e) - 1)


def test_mapo_loss_on_hand_computed_numbers():
    from methods.mapo import MaPO, MaPOConfig
    # winners first: pair 1 (0.100, 0.101), pair 2 (0.300, 0.2995)
    err = torch.tensor([0.100, 0.300, 0.101, 0.2995], dtype=torch.float64)
    loss, m = MaPO(MaPOConfig()).loss(err, None, timesteps=1000)
    # f(0.1) = 0.05 / (e^0.05 - 1) = 0.97520812..., f(0.101) = 0.97496..., T = 1000
    d1 = 1000 * (_f(0.100) - _f(0.101))               # +0.2477...
    d2 = 1000 * (_f(0.300) - _f(0.2995))              # -0.1233...
    logsig = lambda x: -math.log1p(math.exp(-x))       # noqa: E731
    expected = (0.100 + 0.300) / 2 - 0.1 * (logsig(d1) + logsig(d2)) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert _f(0.1) == pytest.approx(0.9752081, abs=1e-6)
    assert m["implicit_acc"].item() == 0.5
    # beta and snr_value are the code's defaults, and `timesteps` overrides T
    loss10, _ = MaPO(MaPOConfig(timesteps=10)).loss(err, None, timesteps=1000)
    expected10 = 0.2 - 0.1 * (logsig(d1 / 100) + logsig(d2 / 100)) / 2
    assert loss10.item() == pytest.approx(expected10, abs=1e-6)


def test_mapo_needs_no_reference_and_reads_T_from_the_scheduler():
    from types import SimpleNamespace
    from methods.mapo import MaPO, MaPOConfig, margin_score
    method = MaPO(MaPOConfig())
    assert method.needs_reference is False and method.feedback == "pairs"
    err = torch.tensor([0.2, 0.21])
    ctx = SimpleNamespace(backbone=SimpleNamespace(noise_scheduler=SimpleNamespace(
        config=SimpleNamespace(num_train_timesteps=50))))
    via_ctx, _ = method.batch_loss(err, None, None, ctx)
    assert via_ctx.item() == pytest.approx(method.loss(err, None, timesteps=50)[0].item())
    assert via_ctx.item() != pytest.approx(method.loss(err, None, timesteps=1000)[0].item())
    assert margin_score(torch.tensor([0.0]), 0.5).item() == 1.0          # the limit, not 0/0


def test_mapo_gradient_lowers_the_winner_and_raises_the_loser():
    from methods.mapo import MaPO, MaPOConfig
    err = torch.tensor([0.2, 0.2], requires_grad=True)
    MaPO(MaPOConfig()).loss(err, None, timesteps=1000)[0].backward()
    assert err.grad[0] > 0 > err.grad[1]


# ---------------------------------------------------------------- every new method: list and run

@pytest.mark.parametrize("name", SMOKE_METHODS)
def test_listed_without_a_declaration(name):
    assert name in METHODS.names() and name not in METHODS._declared
    assert METHODS.get(name).__module__ == f"methods.{name}"


@pytest.fixture(scope="module")
def two_step_jobs(tmp_path_factory, tiny_pipe_dir):
    root = tmp_path_factory.mktemp("new-methods")
    common = [f"backbone.weights={tiny_pipe_dir}", f"paths.results={root / 'results'}",
              f"paths.cache={root / 'cache'}", "data.n_pairs=8", "train.steps=2", "train.batch_size=2",
              "train.log_every=1", "eval.max_prompts=2", "eval.seeds_per_prompt=1", "eval.n_bootstrap=50",
              "progress=false"]
    return {m: runner.run_job(runner.compose_config([f"method={m}", *common])) for m in SMOKE_METHODS}


@pytest.mark.parametrize("name", SMOKE_METHODS)
def test_each_new_method_trains_two_steps_through_the_runner(two_step_jobs, name):
    res = json.loads((two_step_jobs[name] / "result.json").read_text())
    assert res["config"]["method"]["name"] == name
    assert res["budget"]["steps"] == 2
    hist = res["train_history"]
    assert len(hist) == 2 and all(math.isfinite(h["loss"]) for h in hist)
    assert res["scorers"]["gold"]["n"] == 2
