"""Diffusion-KTO (Li et al., NeurIPS 2024, arXiv 2404.04465).

Loss as implemented in jacklishufan/diffusion-kto train_kto_sd_v1.5.py @226bbd0 with
`--loss kto --halo sigmoid` (the example launcher exps/example.sh). Per image, with independent
noise and timestep per image (no pairs; the trainer draws them so for unpaired feedback):
    g = e_ref - e_pol            (code: policy_KL_logps - reference_KL_logps, logps = -MSE)
    z = reference point, without gradient (`reference_point`, the code's --bce_offset):
        batch_mean      (none, default)  max(0, mean of g over the batch)
        sigmoid         (sigmoid)        (mean of g over desirable + mean over undesirable) / 2, unclamped
        rolled_prompts  (original)       mean over the batch of (e_ref - e_pol) on the same noised
                                         latents with the prompts rolled by one position, unclamped
    h = sigmoid(beta * s * (g - z)),  s = +1 desirable, -1 undesirable
    loss = mean over images of w_s * (1 - h),  w_+ = lambda_D, w_- = lambda_U
No 1/2 factor (unlike Diffusion-DPO). At initialisation g = 0 and z = 0, so the loss is 1/2 per
image (times its lambda). Logged implicit accuracy = fraction(s * (g - z) > 0), as the code's `acc`.
Per-image binary labels come from bench.data.likes (processed-Pick-a-Pic layout, `policy`).
"""
from dataclasses import replace

import torch

from bench.data.likes import kto_sampling_weights
from bench.data.pairs import ImageData
from bench.registry import METHODS, BenchError
from bench.method import Method, RefreshSpec
from methods.config import KTOConfig

REFERENCE_POINTS = ("batch_mean", "sigmoid", "rolled_prompts")


@METHODS.register("kto")
class KTO(Method):
    """Diffusion-KTO: per-image likes/dislikes, utility 1 - sigmoid(beta*s*(g - z)), beta = 1000."""
    feedback = "binary"
    needs_reference = True
    Config = KTOConfig

    def __init__(self, cfg):
        super().__init__(cfg)
        if cfg.reference_point not in REFERENCE_POINTS:
            raise BenchError(f"unknown method.reference_point {cfg.reference_point!r}; valid: {', '.join(REFERENCE_POINTS)}")
        if not 0.0 <= cfg.positive_ratio <= 1.0:
            raise BenchError(f"method.positive_ratio must lie in [0, 1], got {cfg.positive_ratio}")

    def feedback_options(self) -> dict:
        return {"rounds": self.cfg.comparison_rounds, "policy": self.cfg.policy}

    def reference_refresh(self):
        return RefreshSpec.from_config(self.cfg)

    def prepare(self, backbone, data, cfg, seed, progress=True):
        if not isinstance(data, ImageData) or data.labels is None:
            raise BenchError("kto trains on per-image binary labels (bench.data.likes.load_kto); got "
                             f"{type(data).__name__}")
        return replace(data, sampling_weights=kto_sampling_weights(data.labels, self.cfg.positive_ratio))

    def reference_point(self, g: torch.Tensor, labels: torch.Tensor, rolled_g: torch.Tensor | None = None):
        c = self.cfg
        if c.reference_point == "batch_mean":
            return g.mean().detach().clamp(min=0)
        if c.reference_point == "sigmoid":
            pos, neg = labels.float(), (~labels).float()
            z_pos = (pos * g).sum().detach() / (pos.sum() + 1e-6)    # code's +1e-6 for an empty class
            z_neg = (neg * g).sum().detach() / (neg.sum() + 1e-6)
            return (z_pos + z_neg) / 2
        if rolled_g is None:
            raise BenchError("reference_point=rolled_prompts needs the errors on rolled prompts")
        return rolled_g.mean().detach()

    def loss(self, err, ref_err, labels, rolled_g=None):
        """err, ref_err: (N,) per-image errors; labels: (N,) bool desirable; rolled_g: (N,)
        e_ref - e_pol on rolled prompts (rolled_prompts only)."""
        c = self.cfg
        labels = labels.bool()
        g = ref_err - err
        z = self.reference_point(g, labels, rolled_g)
        s = labels.float() * 2 - 1
        x = s * c.beta * (g - z)
        w = torch.where(labels, torch.full_like(g, c.lambda_d), torch.full_like(g, c.lambda_u))
        loss = (w * (1 - torch.sigmoid(x))).mean()
        pos, neg = labels.float(), (~labels).float()
        with torch.no_grad():
            g_pos = ((g - z) * pos).sum() / (pos.sum() + 1e-6)
            g_neg = ((g - z) * neg).sum() / (neg.sum() + 1e-6)
        return loss, {"implicit_acc": (x > 0).float().mean(), "reward_margin": c.beta * (g_pos - g_neg),
                      "z": z.detach(), "desirable_frac": pos.mean()}

    def batch_loss(self, err, ref_err, batch, ctx):
        rolled = None
        if self.cfg.reference_point == "rolled_prompts":
            # every caption-derived tensor rolled by one (the code: torch.roll(prompt_embeds, 1, 0))
            cond = {k: torch.roll(v, 1, 0) for k, v in ctx.cond.items()}
            rolled = ctx.reference_errors(cond) - ctx.policy_errors(cond)
        return self.loss(err, ref_err, batch.labels, rolled)
