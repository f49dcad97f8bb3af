"""MaPO: margin-aware preference optimization (Hong, Paul et al. 2024, arXiv 2406.06424),
reference-free.

Loss as implemented in mapo-t2i/mapo utils.py `compute_loss` (@374b3d3), with per-sample errors
averaged over C, H, W and winner/loser sharing noise and timestep (train.py; the trainer does both):
    f(e)  = s*e / (exp(s*e) - 1)             s = --snr_value, default 0.5
    L     = mean(e_pol(w)) - beta * mean(log sigmoid(T * (f(e_pol(w)) - f(e_pol(l)))))
T = the scheduler's num_train_timesteps (1000 on every SD backbone; the code multiplies by it "to
maximize the margin throughout the overall denoising process"); beta = --beta_mapo, default 0.1.
f is decreasing in e, so the log-sigmoid term rewards a lower winner error than loser error; the
first term is plain denoising on the winners. No reference model (needs_reference = False).

Suite choices: `timesteps: null` reads T from the backbone's scheduler (the code's choice); a number
overrides it. f(0) is the limit 1 (the code would divide 0 by 0; errors are never exactly 0 in
practice). Logged implicit accuracy = fraction(f(e_w) > f(e_l)).
"""
from __future__ import annotations

from dataclasses import dataclass

from bench.lazy import torch
from bench.method import Method
from bench.registry import METHODS, BenchError, MethodConfig


@dataclass
class MaPOConfig(MethodConfig):
    beta: float = 0.1                  # --beta_mapo default (mapo-t2i/mapo args.py)
    snr_value: float = 0.5             # --snr_value default (args.py)
    timesteps: int | None = None       # T; null: noise_scheduler.config.num_train_timesteps, as the code


def margin_score(e, s: float):
    """f(e) = s*e / (exp(s*e) - 1), with f(0) = 1 (its limit)."""
    x = s * e
    safe = torch.where(x == 0, torch.ones_like(x), x)
    return torch.where(x == 0, torch.ones_like(x), safe / torch.expm1(safe))


@METHODS.register("mapo")
class MaPO(Method):
    """MaPO: reference-free, winner denoising + beta * margin term logsig(T*(f(e_w) - f(e_l))), beta = 0.1."""
    feedback = "pairs"
    needs_reference = False
    Config = MaPOConfig

    def __init__(self, cfg):
        super().__init__(cfg)
        if not cfg.snr_value > 0:
            raise BenchError(f"method.snr_value must be > 0, got {cfg.snr_value}")
        if cfg.timesteps is not None and cfg.timesteps < 1:
            raise BenchError(f"method.timesteps must be >= 1 or null, got {cfg.timesteps}")

    def loss(self, err, ref_err=None, timesteps: int | None = None):
        """err: (2B,) policy errors, winners first; ref_err is not used. `timesteps`: T when the
        config leaves it null (batch_loss passes the scheduler's)."""
        T = self.cfg.timesteps or timesteps or 1000
        e_w, e_l = err.chunk(2)
        log_odds = margin_score(e_w, self.cfg.snr_value) - margin_score(e_l, self.cfg.snr_value)
        ratio = torch.nn.functional.logsigmoid(T * log_odds)
        loss = e_w.mean() - self.cfg.beta * ratio.mean()
        return loss, {"implicit_acc": (log_odds > 0).float().mean(), "margin_term": -ratio.mean().detach(),
                      "model_err_w": e_w.mean().detach(), "model_err_l": e_l.mean().detach()}

    def batch_loss(self, err, ref_err, batch, ctx):
        return self.loss(err, ref_err, int(ctx.backbone.noise_scheduler.config.num_train_timesteps))
