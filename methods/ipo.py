"""IPO for diffusion: the diffusers Diffusion-DPO port's `--loss_type ipo` (Azar et al. 2023,
arXiv 2310.12036, on Diffusion-DPO's per-sample errors).

The port (huggingface/diffusers examples/research_projects/diffusion_dpo/train_diffusion_dpo.py,
added in PR #6788) computes, with per-sample errors averaged over C, H, W and winner/loser sharing
noise and timestep (the trainer does both):
    logits = ref_diff - model_diff = (e_ref(w) - e_ref(l)) - (e_pol(w) - e_pol(l))
    loss   = mean over pairs of (logits - 1 / (2 * beta))^2
i.e. it regresses the pair's implicit margin onto 1/(2 beta) instead of pushing it through a
sigmoid. The port's branch reads `args.beta`, a flag the script does not define (its only beta is
`--beta_dpo`), so `--loss_type ipo` stops with an AttributeError (fix proposed in diffusers PR
#13522: use `beta_dpo`). Here the one `beta` below is that `--beta_dpo`, default 2500 as in the
port (the SD script's default; its sigmoid loss at 2500 is Diffusion-DPO's at 5000 with -beta/2).

At initialisation policy == reference, so logits = 0 and the loss is 1/(2 beta)^2 per pair. The
gradient is small in absolute terms (the margin is a difference of MSEs); Adam-family optimizers,
the suite's default, are insensitive to that scale. Logged implicit accuracy = fraction(logits > 0),
the same sign test as Diffusion-DPO's.
"""
from __future__ import annotations

from dataclasses import dataclass

from bench.method import Method
from bench.registry import METHODS, MethodConfig


@dataclass
class IPOConfig(MethodConfig):
    # --beta_dpo default 2500 of the diffusers SD port (train_diffusion_dpo.py); the ipo branch's
    # target margin is 1/(2*beta) = 2e-4.
    beta: float = 2500.0


@METHODS.register("ipo")
class IPO(Method):
    """IPO (diffusers Diffusion-DPO port's loss_type=ipo): squared gap of the margin to 1/(2 beta), beta = 2500."""
    feedback = "pairs"
    needs_reference = True
    Config = IPOConfig

    def loss(self, err, ref_err):
        e_w, e_l = err.chunk(2)
        r_w, r_l = ref_err.chunk(2)
        from methods.dpo import dpo_margin       # here: importing this module must not import torch
        logits = dpo_margin(e_w, e_l, r_w, r_l, beta=1.0, half=False)   # the shared core, unscaled
        target = 1.0 / (2.0 * self.cfg.beta)
        loss = (logits - target).pow(2).mean()
        return loss, {"implicit_acc": (logits > 0).float().mean(),
                      "margin": logits.mean().detach(), "target_margin": logits.new_tensor(target),
                      "model_err_w": e_w.mean().detach(), "ref_err_w": r_w.mean().detach()}
