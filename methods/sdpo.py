"""Diffusion-SDPO: safeguarded Diffusion-DPO (Fu et al. 2025, arXiv 2511.03317).

Diffusion-DPO can raise the winners' error along with the losers' (docs/methods.md measured it:
the policy's error on the winners rises above the reference's). SDPO keeps the Diffusion-DPO loss
but scales the *gradient* of the loser branch by lambda in [0, max_scale], chosen so that the
update does not raise the winners' error to first order. Rule as in AIDC-AI/Diffusion-SDPO
train.py (`get_adaptive_lose_l_scale` and its use, @1c83c65), re-derived here:

  With g_w, g_l the gradients of the winners' and losers' mean errors, the DPO step moves along
  -(k)(g_w - lambda g_l), k > 0. Asking the winners' error to fall at least by mu * ||g_w||^2
  (times the step): (g_w - lambda g_l) . g_w >= mu ||g_w||^2, i.e. when g_l . g_w > 0
      lambda <= (1 - mu) ||g_w||^2 / (g_l . g_w)
  and no limit when g_l . g_w <= 0 (then lambda = max_scale). lambda = clamp(bound, 0, max_scale),
  no gradient through it, one value per micro-batch (the code's A, B are batch means).
  The code evaluates the gradients in *output space* (w.r.t. the UNet's prediction, winner and
  loser share noise and timestep): g_w ~ pred_w - target, g_l ~ pred_l - target, summed over the
  whole micro-batch -- the paper's approximation of the parameter-space rule.

  The loser's error enters the DPO term as e_l' = e_l.detach() + lambda (e_l - e_l.detach()): the
  loss value is Diffusion-DPO's, only the loser's gradient is scaled.

Constants: mu = --winner_preserving_mu, 0.9 in scripts/train/sd15_diffusion_dpo.sh (0.6 in the
SDXL launchers; argparse default 0.0); max_scale = max_lambda = 1.0 and eps = 1e-9 (the function's
defaults); beta = --beta_dpo 5000 with the -beta/2 form (sd15/sdxl_diffusion_dpo.sh, train.py).

Suite choices (named options):
  space: output (default, the code's) | parameter: the exact first-order rule, with g_w, g_l the
         gradients of the winners' and losers' mean errors w.r.t. the trainable parameters (two
         extra backward passes per micro-batch; one process -- under DDP use output).
  The output-space rule needs the policy's prediction, which the trainer does not hand a method;
  batch_loss recomputes it without gradient on the step's noised latents (one extra forward).
  With train.error_weighting the errors carry w(t), and so do the output-space gradients here.
  Only the Diffusion-DPO base loss is implemented (the code also wraps DSPO and DMPO).
"""
from __future__ import annotations

from dataclasses import dataclass

from bench.lazy import torch
from bench.method import Method
from bench.registry import METHODS, BenchError, MethodConfig

SPACES = ("output", "parameter")


@dataclass
class SDPOConfig(MethodConfig):
    beta: float = 5000.0               # --beta_dpo in Diffusion-SDPO's sd15/sdxl diffusion-dpo launchers
    half: bool = True                  # the -beta/2 form of train.py (methods/dpo.py)
    mu: float = 0.9                    # --winner_preserving_mu, scripts/train/sd15_diffusion_dpo.sh
    max_scale: float = 1.0             # max_lambda default of get_adaptive_lose_l_scale
    eps: float = 1e-9                  # its eps default
    space: str = "output"              # output (the code's) | parameter (suite option, exact)


def safeguard_scale(g_w, g_l, mu: float, max_scale: float = 1.0, eps: float = 1e-9):
    """lambda for the loser's gradient from flattened winner/loser gradients (no gradient)."""
    g_w, g_l = g_w.detach().flatten().double(), g_l.detach().flatten().double()
    num, den = g_w.pow(2).sum(), (g_w * g_l).sum()
    bound = (1.0 - mu) * num / (den + eps)
    lam = torch.where(den > 0, bound, torch.full_like(bound, max_scale))
    return lam.clamp(0.0, max_scale).float()


@METHODS.register("sdpo")
class SDPO(Method):
    """Diffusion-SDPO: Diffusion-DPO with the loser's gradient scaled so the winners' error cannot rise, mu = 0.9."""
    feedback = "pairs"
    needs_reference = True
    Config = SDPOConfig

    def __init__(self, cfg):
        super().__init__(cfg)
        if cfg.space not in SPACES:
            raise BenchError(f"unknown method.space {cfg.space!r}; valid: {', '.join(SPACES)}")
        if not 0.0 <= cfg.mu <= 1.0:
            raise BenchError(f"method.mu must lie in [0, 1], got {cfg.mu}")
        if not cfg.max_scale >= 0:
            raise BenchError(f"method.max_scale must be >= 0, got {cfg.max_scale}")

    def loss(self, err, ref_err, scale=1.0):
        """Diffusion-DPO's loss with the losers' gradient multiplied by `scale` (lambda)."""
        e_w, e_l = err.chunk(2)
        r_w, r_l = ref_err.chunk(2)
        e_l = e_l.detach() + scale * (e_l - e_l.detach())
        from methods.dpo import dpo_margin       # here: importing this module must not import torch
        inside = dpo_margin(e_w, e_l, r_w, r_l, self.cfg.beta, self.cfg.half)
        loss = -torch.nn.functional.logsigmoid(inside).mean()
        return loss, {"implicit_acc": (inside > 0).float().mean(),
                      "reward_margin": inside.mean().detach(),
                      "loser_scale": torch.as_tensor(scale, dtype=torch.float32).detach(),
                      "model_err_w": e_w.mean().detach(), "ref_err_w": r_w.mean().detach()}

    def output_gradients(self, ctx):
        """(g_w, g_l): the output-space gradients of the winners' and losers' mean errors, up to
        one common positive factor: (prediction - target) * w(t), on this step's noised latents."""
        bb = ctx.backbone
        with torch.no_grad():
            noisy = bb.noise_scheduler.add_noise(ctx.latents, ctx.noise, ctx.t)
            res = bb.predict(ctx.unet, noisy, ctx.t, ctx.cond).float() - bb.target(ctx.latents, ctx.noise, ctx.t).float()
            if ctx.weights is not None:
                res = res * ctx.weights.view(-1, *[1] * (res.dim() - 1))
        return res.chunk(2)

    def parameter_gradients(self, err, params):
        e_w, e_l = err.chunk(2)
        g_w = torch.autograd.grad(e_w.mean(), params, retain_graph=True, allow_unused=True)
        g_l = torch.autograd.grad(e_l.mean(), params, retain_graph=True, allow_unused=True)
        flat = lambda gs: torch.cat([(torch.zeros_like(p) if g is None else g).flatten()   # noqa: E731
                                     for g, p in zip(gs, params)])
        return flat(g_w), flat(g_l)

    def batch_loss(self, err, ref_err, batch, ctx):
        c = self.cfg
        if c.space == "output":
            g_w, g_l = self.output_gradients(ctx)
        else:
            params = [p for p in ctx.unet.parameters() if p.requires_grad] + list(self.extra_parameters())
            g_w, g_l = self.parameter_gradients(err, params)
        lam = safeguard_scale(g_w, g_l, c.mu, c.max_scale, c.eps).to(err.device)
        return self.loss(err, ref_err, lam)
