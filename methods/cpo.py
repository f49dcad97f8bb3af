"""CPO, Complex Preference Optimization (Meng et al., arXiv 2601.04300) -- this suite's formulation.

Only the abstract is available [page]: an expert attribute tree of positive and negative
attributes; stage 1 injects domain knowledge into an auxiliary diffusion model by SFT; stage 2
extends DPO to the hierarchical criteria, "simultaneously maximizing the probability of positive
attributes while minimizing the probability of negative attributes with the auxiliary diffusion".
The loss, the conditioning mechanism and the weighting are not published; below is our reading
(docs/methods.md has the derivation and every option).

Data: images with 0/1 labels for K attributes; attribute k has polarity p_k (+1 positive, -1
negative) and a root node. Goodness q_k(x) = a_k(x) if p_k = +1 else 1 - a_k(x). Images of the
same caption are paired in file order (bench.data.attributes.pairs_from_images); per pair and attribute
d_k = q_k(x_0) - q_k(x_1) in {-1, 0, +1}. Pairs are put winner first by the sign of sum_k w_k d_k
and pairs with no weighted difference are dropped (the analogue of Diffusion-DPO's tie filter).

Stage 1 (auxiliary model A): a copy of the base UNet plus one learned token per (attribute,
value) with value in {absent, present, unspecified}, appended to the text-encoder states (works on
every backbone: cross-attention takes any sequence length). A and the tokens are fine-tuned with
the plain denoising loss on every annotated image conditioned on its own attributes, each
attribute replaced by `unspecified` with probability aux_attr_dropout so that A also models
partial conditions.

Stage 2: for each pair and each attribute with d_k != 0, a DPO term whose anchor is A conditioned
on that attribute having its good value (present for positive, absent for negative; the others
unspecified), on the same noised latents:
    u_k = -(beta/2) * [(e_pol(x_w) - e_A(x_w | c, k good)) - (e_pol(x_l) - e_A(x_l | c, k good))]
    loss = mean over pairs of  sum_k W_k |d_k| (-log sigmoid(d_k u_k)) / sum_k W_k |d_k|
with tree weights W_k = w_k * (lambda_pos if positive else lambda_neg) and w_k = 1 / (#nodes *
#attributes of k's node) (`hierarchical`) or 1 / K (`uniform`). Positive attributes are raised
and negative ones lowered through q_k; the anchor makes the policy reach, per attribute, at least
the margin between winner and loser that the attribute-aware auxiliary model sees.

With a single binary attribute, d = +1 for every kept pair and the loss is exactly
-mean log sigmoid(-(beta/2)[(e_pol(w) - e_ref(w)) - (e_pol(l) - e_ref(l))]), Diffusion-DPO's, with
the anchor as reference; with anchor=base (the frozen reference) it is Diffusion-DPO
(tests/test_methods_kto_bdpo_cpo.py checks both).
"""
from __future__ import annotations

import copy
import logging
from dataclasses import replace

import torch
import torch.nn.functional as F

from bench.data.attributes import AttributeData, pairs_from_images
from bench.data.pairs import ImageData, PairData
from bench.registry import METHODS, BenchError
from bench.method import Method
from methods.dpo import dpo_margin
from bench.train import train
from methods.config import CPOConfig

log = logging.getLogger(__name__)
ABSENT, PRESENT, UNSPECIFIED = 0, 1, 2


class AttributeTokens(torch.nn.Module):
    """One learned token per (attribute, value); appended to the text-encoder states."""

    def __init__(self, n_attributes: int, dim: int, std: float, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.tokens = torch.nn.Parameter(torch.randn(n_attributes, 3, dim, generator=g) * std)

    def forward(self, states: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        k = torch.arange(self.tokens.shape[0])
        return torch.cat([states, self.tokens[k, values.long()].to(states.dtype)], dim=1)


class AuxSFT(Method):
    """Stage 1: denoising loss on annotated images conditioned on their attributes (not registered)."""
    feedback = "images"
    needs_reference = False

    def __init__(self, tokens: AttributeTokens, dropout: float, seed: int):
        super().__init__(None)
        self.tokens, self.dropout = tokens, dropout
        self.gen = torch.Generator().manual_seed(seed)

    def extra_parameters(self):
        return list(self.tokens.parameters())

    def condition(self, cond, batch):
        values = batch.extra["attributes"].long().clone()
        values[torch.rand(values.shape, generator=self.gen) < self.dropout] = UNSPECIFIED
        return {**cond, "encoder_hidden_states": self.tokens(cond["encoder_hidden_states"], values)}

    def loss(self, err, ref_err):
        return err.mean(), {}


def tree_weights(polarity: torch.Tensor, nodes: list[str], scheme: str, lambda_pos: float,
                 lambda_neg: float) -> torch.Tensor:
    k = len(nodes)
    if scheme == "uniform":
        w = torch.full((k,), 1.0 / k)
    elif scheme == "hierarchical":
        uniq = list(dict.fromkeys(nodes))
        w = torch.tensor([1.0 / (len(uniq) * nodes.count(n)) for n in nodes])
    else:
        raise BenchError(f"unknown method.tree_weighting {scheme!r}; valid: hierarchical, uniform")
    return w * torch.where(polarity > 0, torch.tensor(lambda_pos), torch.tensor(lambda_neg))


def cpo_loss(err: torch.Tensor, anchor_w: torch.Tensor, anchor_l: torch.Tensor, diff: torch.Tensor,
             weights: torch.Tensor, beta: float, half: bool = True) -> tuple[torch.Tensor, dict]:
    """err: (2B,) policy errors, winners first; anchor_w / anchor_l: (B, K) anchor errors of the
    winner / loser for attribute k's term; diff: (B, K) d_k in {-1, 0, 1} (winner's view);
    weights: (K,) tree weights."""
    e_w, e_l = err.chunk(2)
    u = dpo_margin(e_w[:, None], e_l[:, None], anchor_w, anchor_l, beta, half)
    wk = weights[None, :] * diff.abs()
    per_pair = (wk * -F.logsigmoid(diff * u)).sum(1) / wk.sum(1).clamp(min=1e-12)
    on = diff != 0
    return per_pair.mean(), {
        "implicit_acc": ((diff * u) > 0)[on].float().mean() if on.any() else torch.tensor(0.0),
        "reward_margin": ((wk * diff * u).sum(1) / wk.sum(1).clamp(min=1e-12)).mean().detach(),
        "attributes_differing": on.float().sum(1).mean()}


@METHODS.register("cpo")
class CPO(Method):
    """CPO (suite formulation): attribute-tree DPO anchored on an attribute-conditioned SFT model."""
    feedback = "attributes"
    Config = CPOConfig

    def __init__(self, cfg):
        super().__init__(cfg)
        if cfg.anchor not in ("aux", "base"):
            raise BenchError(f"unknown method.anchor {cfg.anchor!r}; valid: aux, base")
        if cfg.anchor_condition not in ("per_attribute", "ideal"):
            raise BenchError(f"unknown method.anchor_condition {cfg.anchor_condition!r}; valid: per_attribute, ideal")
        self.needs_reference = cfg.anchor == "base"
        self.aux = self.tokens = None
        self.aux_history: list = []
        self.data_info: dict = {}

    def feedback_options(self) -> dict:
        return {"noise": self.cfg.attribute_noise, "attributes_file": self.cfg.attributes_file}

    def prepare(self, backbone, data, cfg, seed, progress=True):
        if not isinstance(data, AttributeData):
            raise BenchError(f"cpo trains on attribute annotations (bench.data.attributes.load_attributes); got {type(data).__name__}")
        names = list(self.cfg.attributes) or list(data.names)
        unknown = [a for a in names if a not in data.names]
        if unknown:
            raise BenchError(f"method.attributes names {unknown}, not in the data's tree; valid: {', '.join(data.names)}")
        idx = [data.names.index(a) for a in names]
        a, pol = data.attributes[:, idx], data.polarity[idx]
        nodes = [data.nodes[i] for i in idx]
        self.names, self.polarity = names, pol
        self.weights = tree_weights(pol, nodes, self.cfg.tree_weighting, self.cfg.positive_weight,
                                    self.cfg.negative_weight)
        good = torch.where(pol > 0, a, 1 - a)
        pairs = pairs_from_images(data.captions)
        if not pairs:
            raise BenchError("cpo found no two images with the same caption to compare")
        i0 = torch.tensor([p[0] for p in pairs]); i1 = torch.tensor([p[1] for p in pairs])
        diff = good[i0] - good[i1]
        score = diff @ self.weights
        swap = score < 0
        w_idx, l_idx = torch.where(swap, i1, i0), torch.where(swap, i0, i1)
        diff = torch.where(swap[:, None], -diff, diff)
        ties = (diff.abs() @ self.weights) <= 0
        if self.cfg.anchor == "aux":
            self._train_aux(backbone, data, a, cfg, seed, progress)
        self.data_info = {"pairs": len(pairs), "kept": int((~ties).sum()), "cpo_attributes": names,
                          "aux_history": self.aux_history}
        return PairData(data.images[w_idx], data.images[l_idx], [data.captions[i] for i in w_idx.tolist()],
                        ties, extra={"diff": diff})

    def _train_aux(self, backbone, data, attributes, cfg, seed, progress):
        """Stage 1: SFT of an attribute-conditioned copy of the base UNet."""
        with torch.no_grad():
            states = backbone.encode_prompts(sorted(set(data.captions)))["encoder_hidden_states"]
        self.tokens = AttributeTokens(attributes.shape[1], states.shape[-1], float(states.std()), seed)
        self.aux = copy.deepcopy(backbone.unet)
        aux_cfg = replace(cfg, steps=self.cfg.aux_steps, lr=self.cfg.aux_lr, finetune="full", reference="auto")
        images = ImageData(data.images, list(data.captions), extra={"attributes": attributes})
        _, self.aux_history = train(backbone, AuxSFT(self.tokens, self.cfg.aux_attr_dropout, seed), images,
                                    aux_cfg, seed, progress=progress, unet=self.aux)
        self.aux.requires_grad_(False).eval()
        self.tokens.requires_grad_(False)
        if self.aux_history:
            log.info("cpo stage 1: auxiliary SFT %d steps, last loss %.4f", self.cfg.aux_steps,
                     self.aux_history[-1]["loss"])

    def good_values(self) -> torch.Tensor:
        return torch.where(self.polarity > 0, torch.tensor(PRESENT), torch.tensor(ABSENT))

    @torch.no_grad()
    def anchor_errors(self, ctx, diff: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, K) anchor errors of winners and losers from the auxiliary model."""
        b, k = diff.shape
        good = self.good_values()

        def conditioned(rows, vals):
            c = ctx.cond_rows(rows)
            c["encoder_hidden_states"] = self.tokens(c["encoder_hidden_states"], vals)
            return c
        if self.cfg.anchor_condition == "ideal":
            e = ctx.errors(self.aux, conditioned(None, good.expand(2 * b, k)))
            return e[:b, None].expand(b, k), e[b:, None].expand(b, k)
        pi, ki = torch.nonzero(diff).unbind(1)
        out_w, out_l = torch.zeros(b, k), torch.zeros(b, k)
        if len(pi) == 0:
            return out_w, out_l
        rows = torch.cat([pi, pi + b])
        vals = torch.full((len(rows), k), UNSPECIFIED)
        kk = torch.cat([ki, ki])
        vals[torch.arange(len(rows)), kk] = good[kk]
        e = ctx.errors(self.aux, conditioned(rows, vals), index=rows)
        out_w[pi, ki], out_l[pi, ki] = e[:len(pi)], e[len(pi):]
        return out_w, out_l

    def batch_loss(self, err, ref_err, batch, ctx):
        diff = batch.extra["diff"]
        if self.cfg.anchor == "base":
            r_w, r_l = ref_err.chunk(2)
            a_w, a_l = r_w[:, None].expand_as(diff), r_l[:, None].expand_as(diff)
        else:
            a_w, a_l = self.anchor_errors(ctx, diff)
        return cpo_loss(err, a_w, a_l, diff, self.weights, self.cfg.beta, self.cfg.half)
