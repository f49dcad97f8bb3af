"""BalancedDPO (Tamboli et al., arXiv 2503.12575; TMLR 2026) -- "BalancedDPO-style".

Stated mechanism (abstract and author page; the full text and code were not available): per pair,
several preference scorers vote; a majority-vote consensus decides the preferred image
(aggregation "in the preference distribution space" instead of mixing raw rewards); the consensus
label feeds the standard Diffusion-DPO loss; the reference model is updated dynamically. The
TMLR revision names three baselines: Random Score, Vanilla Aggregation, Normalized Aggregation.

This suite's reading, each open choice a named option (docs/methods.md):
  aggregation  majority (default): vote v_k in {+1, -1, 0} per scorer (0 within its tie
               tolerance); the pair's label is sign(sum v_k).
               random_scorer: one voter drawn uniformly per pair decides.
               vanilla_sum: sign of the difference of the summed raw scores.
               normalized_sum: the same after z-scoring each scorer over all images of the data.
  tie_rule     what a pair with no winner becomes (even K, abstentions, equal sums):
               skip: dropped; annotator: the file's annotator label decides (dropped if that is a
               tie too); margin: every pair is weighted by its vote margin |sum v_k| / K, so ties
               weigh 0 (majority aggregation only).
  voters       which scorers vote (proxies only; never gold).
  ref_refresh_every / ref_refresh / ref_ema_decay: the reference is refreshed from the policy
               every N optimizer steps by copy or EMA (bench.train.Reference).
The loss is Diffusion-DPO's (methods/dpo.py, beta = 5000, -beta/2 form) on winner-first consensus
pairs, weighted per pair (weights 1 except under tie_rule=margin): sum w_i l_i / sum w_i.
"""
import torch
import torch.nn.functional as F

from bench.data.pairs import PairData
from bench.data.votes import VoteData
from bench.registry import METHODS, BenchError
from bench.method import Method, RefreshSpec
from methods.config import BalancedDPOConfig
from methods.dpo import dpo_margin

AGGREGATIONS = ("majority", "random_scorer", "vanilla_sum", "normalized_sum")
TIE_RULES = ("skip", "annotator", "margin")


def _sign(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x).to(torch.float32)


def consensus(votes: VoteData, aggregation: str = "majority", tie_rule: str = "skip",
              seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pair: (label, weight). label +1: image 0 preferred, -1: image 1, 0: dropped;
    weight: the pair's loss weight (0 for dropped pairs)."""
    if aggregation not in AGGREGATIONS:
        raise BenchError(f"unknown method.aggregation {aggregation!r}; valid: {', '.join(AGGREGATIONS)}")
    if tie_rule not in TIE_RULES:
        raise BenchError(f"unknown method.tie_rule {tie_rule!r}; valid: {', '.join(TIE_RULES)}")
    if tie_rule == "margin" and aggregation != "majority":
        raise BenchError("method.tie_rule=margin weights pairs by vote margin; it needs aggregation=majority")
    v = votes.votes * 2 - 1                             # label_0 convention -> +1 / -1 / 0
    n, k = v.shape
    if aggregation == "majority":
        total = v.sum(1)
    elif aggregation == "random_scorer":
        pick = torch.randint(0, k, (n,), generator=torch.Generator().manual_seed(seed))
        total = v[torch.arange(n), pick]
    else:
        if votes.scores_0 is None:
            raise BenchError(f"aggregation={aggregation} needs per-scorer scores (score_0_<s>, score_1_<s>) in the file")
        s0, s1 = votes.scores_0, votes.scores_1
        if aggregation == "normalized_sum":
            both = torch.cat([s0, s1])
            mu, sd = both.mean(0), both.std(0).clamp(min=1e-8)
            s0, s1 = (s0 - mu) / sd, (s1 - mu) / sd
        total = s0.sum(1) - s1.sum(1)
    label = _sign(total)
    weight = (label != 0).float()
    if tie_rule == "annotator":
        ann = _sign(votes.labels_0 * 2 - 1)             # 1 -> +1, 0 -> -1, 0.5 (tie) -> 0
        label = torch.where(label == 0, ann, label)
        weight = (label != 0).float()
    elif tie_rule == "margin":
        weight = total.abs() / k
    return label, weight


@METHODS.register("balanced_dpo")
class BalancedDPO(Method):
    """BalancedDPO-style: majority vote of proxy scorers per pair, DPO loss, refreshed reference."""
    feedback = "votes"
    needs_reference = True
    Config = BalancedDPOConfig

    def __init__(self, cfg):
        super().__init__(cfg)
        if not cfg.voters:
            raise BenchError("method.voters is empty; name at least one scorer")
        if "gold" in cfg.voters:
            raise BenchError("gold is hidden (evaluation and annotators only); voters must be proxy scorers")
        self.data_info: dict = {}

    def feedback_options(self) -> dict:
        return {"voters": list(self.cfg.voters)}

    def reference_refresh(self):
        return RefreshSpec.from_config(self.cfg)

    def prepare(self, backbone, data, cfg, seed, progress=True):
        if not isinstance(data, VoteData):
            raise BenchError(f"balanced_dpo trains on per-scorer votes (bench.data.votes.load_votes); got {type(data).__name__}")
        if list(data.voters) != list(self.cfg.voters):
            idx = [data.voters.index(v) for v in self.cfg.voters]
            data = VoteData(data.images_0, data.images_1, data.captions, data.labels_0, list(self.cfg.voters),
                            data.votes[:, idx], None if data.scores_0 is None else data.scores_0[:, idx],
                            None if data.scores_1 is None else data.scores_1[:, idx])
        label, weight = consensus(data, self.cfg.aggregation, self.cfg.tie_rule, seed)
        first = (label >= 0).view(-1, 1, 1, 1)
        winners = torch.where(first, data.images_0, data.images_1)
        losers = torch.where(first, data.images_1, data.images_0)
        self.data_info = {"pairs": len(label), "kept": int((weight > 0).sum()),
                          "agree_with_annotator": float(((label * (data.labels_0 * 2 - 1)) > 0).float().mean())}
        return PairData(winners, losers, list(data.captions), weight <= 0, weights=weight)

    def loss(self, err, ref_err, weights=None):
        e_w, e_l = err.chunk(2)
        r_w, r_l = ref_err.chunk(2)
        inside = dpo_margin(e_w, e_l, r_w, r_l, self.cfg.beta, self.cfg.half)
        losses = -F.logsigmoid(inside)
        if weights is None:
            loss = losses.mean()
        else:
            loss = (weights * losses).sum() / weights.sum().clamp(min=1e-12)
        return loss, {"implicit_acc": (inside > 0).float().mean(),
                      "reward_margin": inside.mean().detach()}

    def batch_loss(self, err, ref_err, batch, ctx):
        return self.loss(err, ref_err, batch.weights)
