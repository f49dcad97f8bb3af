"""The methods added as one file each (issue 18, "the proof"): losses on hand-computed numbers,
each method's defining property, and a 2-step job of each through the runner on the tiny backbone."""
import dataclasses
import json
import math

import pytest
import torch

from bench import runner
from bench.registry import METHODS

SMOKE_METHODS = ["ipo", "mapo", "sdpo"]


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
    assert [f.name for f in dataclasses.fields(IPOConfig)] == ["name", "beta"]
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


# ---------------------------------------------------------------- Diffusion-SDPO

def test_sdpo_scale_on_hand_computed_numbers():
    from methods.sdpo import safeguard_scale
    g_w = torch.tensor([1.0, 0.0])
    # g_l . g_w = 1, ||g_w||^2 = 1: lambda = (1 - 0.9) * 1 / 1 = 0.1
    assert safeguard_scale(g_w, torch.tensor([1.0, 1.0]), mu=0.9).item() == pytest.approx(0.1, abs=1e-6)
    # mu = 0.6 and g_l . g_w = 4: lambda = 0.4 / 4 = 0.1
    assert safeguard_scale(g_w, torch.tensor([4.0, -3.0]), mu=0.6).item() == pytest.approx(0.1, abs=1e-6)
    # opposed gradients: no limit, lambda = max_scale
    assert safeguard_scale(g_w, torch.tensor([-1.0, 2.0]), mu=0.9).item() == 1.0
    # a bound above max_scale is clipped: 0.1 / 0.05 = 2 -> 1
    assert safeguard_scale(g_w, torch.tensor([0.05, 0.0]), mu=0.9).item() == 1.0


def test_sdpo_loss_value_is_dpo_and_only_the_losers_gradient_is_scaled():
    from methods.dpo import DPO, DPOConfig
    from methods.sdpo import SDPO, SDPOConfig
    ref = torch.tensor([0.12, 0.20, 0.29, 0.25])
    grads = {}
    for name, method, kw in (("dpo", DPO(DPOConfig(beta=5000.0)), {}), ("sdpo", SDPO(SDPOConfig()), {"scale": 0.25})):
        err = torch.tensor([0.10, 0.20, 0.30, 0.25], requires_grad=True)
        loss, m = method.loss(err, ref, **kw)
        # same hand-computed value as Diffusion-DPO: insides 75 and 0
        expected = (math.log1p(math.exp(-75.0)) + math.log(2)) / 2
        assert loss.item() == pytest.approx(expected, abs=1e-6)
        loss.backward()
        grads[name] = err.grad.clone()
    assert torch.allclose(grads["sdpo"][:2], grads["dpo"][:2])
    assert torch.allclose(grads["sdpo"][2:], 0.25 * grads["dpo"][2:])
    # pair 2 (inside 0): d loss / d e_w = (2500 / 2) * sigmoid(0) = 625 (mean over 2 pairs)
    assert grads["sdpo"][1].item() == pytest.approx(625.0, rel=1e-6)
    assert grads["sdpo"][3].item() == pytest.approx(-0.25 * 625.0, rel=1e-6)


class _ToyBackbone:
    """pred = unet(x) on x = the latents themselves; target = the shared noise."""
    noise_scheduler = type("S", (), {"add_noise": staticmethod(lambda lat, noise, t: lat)})()

    @staticmethod
    def predict(unet, x, t, cond):
        return unet(x)

    @staticmethod
    def target(lat, noise, t):
        return noise


class _Shift(torch.nn.Module):
    """Identity Jacobian: pred = x + theta (output space == parameter space)."""
    def __init__(self, shape):
        super().__init__()
        self.theta = torch.nn.Parameter(torch.zeros(shape))

    def forward(self, x):
        return x + self.theta


class _Linear(torch.nn.Module):
    def __init__(self, d, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.lin = torch.nn.Linear(d, d)

    def forward(self, x):
        return self.lin(x.flatten(1)).view_as(x)


def _toy_step(method, unet, lat, noise, ref_err):
    from bench.objective import per_sample_error
    from bench.train import StepContext
    t = torch.zeros(len(lat), dtype=torch.long)
    err = per_sample_error(_ToyBackbone, unet, lat, noise, t, {})
    ctx = StepContext(_ToyBackbone, unet, None, lat, noise, t, {}, step=0)
    loss, m = method.batch_loss(err, ref_err, None, ctx)
    return err, loss, m


def _winner_error(unet, lat, noise):
    return (unet(lat[:1]) - noise[:1]).pow(2).mean()


@pytest.mark.parametrize("space", ["output", "parameter"])
def test_sdpo_keeps_the_winners_error_from_rising_where_dpo_raises_it(space):
    """One pair whose loser residual points the winner's way, twice as long: a DPO step raises the
    winner's error; SDPO's scaled step lowers it, by mu * ||g_w||^2 per unit step to first order."""
    from methods.dpo import DPO, DPOConfig
    from methods.sdpo import SDPO, SDPOConfig
    noise = torch.zeros(1, 2, 2, 2).repeat(2, 1, 1, 1)
    r_w = torch.tensor([1.0, -0.5, 0.2, 0.3, -0.1, 0.4, 0.0, 0.6]).view(1, 2, 2, 2)
    lat = torch.cat([r_w, 2 * r_w + 0.05])                # residuals at theta = 0
    ref_err = lat.pow(2).mean(dim=(1, 2, 3))               # reference == policy at theta = 0
    outcomes = {}
    for name, method in (("dpo", DPO(DPOConfig(beta=5000.0))), ("sdpo", SDPO(SDPOConfig(space=space)))):
        unet = _Shift((1, 2, 2, 2))
        err, loss, m = _toy_step(method, unet, lat, noise, ref_err)
        step = torch.autograd.grad(loss, unet.theta)[0]
        g_w = torch.autograd.grad(_winner_error(unet, lat, noise), unet.theta)[0]
        before = _winner_error(unet, lat, noise).item()
        with torch.no_grad():
            unet.theta -= 1e-6 * step                      # a small SGD step
        outcomes[name] = (_winner_error(unet, lat, noise).item() - before, (step * g_w).sum().item(),
                          g_w.pow(2).sum().item(), m)
    d_dpo, dot_dpo, _, _ = outcomes["dpo"]
    d_sdpo, dot_sdpo, gw2, m = outcomes["sdpo"]
    assert dot_dpo < 0 and d_dpo > 0                       # plain DPO: the winner's error rises
    assert dot_sdpo > 0 and d_sdpo < 0                     # SDPO: it falls
    # first order: step . g_w = k * (1 - lambda * g_l.g_w / ||g_w||^2) * ||g_w||^2 = k * mu * ||g_w||^2,
    # k = d loss / d e_w (the step's weight on the winner), here 2500 * sigmoid(-inside)
    inside = -2500 * ((err[0] - ref_err[0]) - (err[1] - ref_err[1])).item()
    k = 2500 / (1 + math.exp(inside))
    assert dot_sdpo == pytest.approx(k * 0.9 * gw2, rel=1e-4)
    r_l = 2 * r_w + 0.05
    expected_lam = 0.1 * r_w.pow(2).sum() / (r_w * r_l).sum()
    assert m["loser_scale"].item() == pytest.approx(expected_lam.item(), rel=1e-5)


def test_sdpo_parameter_space_guarantee_on_a_linear_model():
    """Non-identity Jacobian: in parameter space the rule is exact for one pair:
    grad(loss) . grad(e_w) = k * mu * ||grad(e_w)||^2 whenever the bound is active."""
    from methods.sdpo import SDPO, SDPOConfig
    torch.manual_seed(1)
    noise = torch.randn(1, 2, 2, 2).repeat(2, 1, 1, 1)
    lat_w = torch.randn(1, 2, 2, 2)
    lat = torch.cat([lat_w, lat_w + 0.01 * torch.randn(1, 2, 2, 2)])   # near-identical: aligned gradients
    unet = _Linear(8)
    with torch.no_grad():
        ref_err = (unet(lat) - noise).pow(2).mean(dim=(1, 2, 3)) + torch.tensor([0.0, 1e-4])
    err, loss, m = _toy_step(SDPO(SDPOConfig(space="parameter", mu=0.5)), unet, lat, noise, ref_err)
    params = list(unet.parameters())
    step = torch.autograd.grad(loss, params, retain_graph=True)
    g_w = torch.autograd.grad(err[0], params)
    dot = sum((a * b).sum() for a, b in zip(step, g_w)).item()
    gw2 = sum(b.pow(2).sum() for b in g_w).item()
    assert 0 < m["loser_scale"].item() < 1                 # the bound is active
    inside = -2500 * ((err[0] - ref_err[0]) - (err[1] - ref_err[1])).item()
    k = 2500 / (1 + math.exp(inside))
    assert dot == pytest.approx(k * 0.5 * gw2, rel=1e-3)


def test_sdpo_rejects_bad_options():
    from bench.registry import BenchError
    from methods.sdpo import SDPO, SDPOConfig
    with pytest.raises(BenchError, match="unknown method.space 'weights'"):
        SDPO(SDPOConfig(space="weights"))
    with pytest.raises(BenchError, match=r"method.mu must lie in \[0, 1\], got 1.5"):
        SDPO(SDPOConfig(mu=1.5))


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
