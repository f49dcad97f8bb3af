"""Diffusion-DPO (Wallace et al., arXiv 2311.12908).

Loss as implemented in SalesforceAIResearch/DiffusionDPO train.py (L1126-1151 @5233e75):
    inside = -(beta / 2) * [(e_pol(w) - e_ref(w)) - (e_pol(l) - e_ref(l))]
    loss   = -mean log sigmoid(inside);  implicit accuracy = fraction(inside > 0)
with per-sample errors averaged over C, H, W and winner/loser sharing noise and timestep (the
trainer does both). At initialisation policy == reference, so the loss is log 2.
"""
import torch.nn.functional as F

from bench.registry import METHODS
from bench.method import Method
from methods.config import DPOConfig


def dpo_scale(beta: float, half: bool) -> float:
    """beta/2 in the official form (train.py), beta in the diffusers port's form (half=False)."""
    return beta * (0.5 if half else 1.0)


def dpo_margin(e_w, e_l, a_w, a_l, beta: float, half: bool = True):
    """The implicit reward margin every DPO-family loss is built on:
    -scale * [(e_w - a_w) - (e_l - a_l)], with a the anchor's errors (the reference's for DPO,
    an attribute-conditioned model's for CPO). Shapes broadcast."""
    return -dpo_scale(beta, half) * ((e_w - a_w) - (e_l - a_l))


@METHODS.register("dpo")
class DPO(Method):
    """Diffusion-DPO: pairwise preference loss against a frozen reference; suite beta 2500, paper beta 5000."""
    feedback = "pairs"
    needs_reference = True
    Config = DPOConfig

    def loss(self, err, ref_err):
        e_w, e_l = err.chunk(2)
        r_w, r_l = ref_err.chunk(2)
        scale = dpo_scale(self.cfg.beta, self.cfg.half)
        inside = dpo_margin(e_w, e_l, r_w, r_l, self.cfg.beta, self.cfg.half)
        loss = -F.logsigmoid(inside).mean()
        reward_w, reward_l = -scale * (e_w - r_w), -scale * (e_l - r_l)
        return loss, {"implicit_acc": (inside > 0).float().mean(),
                      "reward_margin": (reward_w - reward_l).mean().detach(),
                      "model_err_w": e_w.mean().detach(), "ref_err_w": r_w.mean().detach()}
