"""Diffusion-KTO, BalancedDPO and CPO: losses on hand-computed tensors, the KTO reference point,
majority votes and tie rules, the shared reference refresh, CPO == DPO with one attribute, and
the feedback files' round trips through their loaders."""
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from bench import world as W
from bench.backbones import Backbone
from bench.backbones.tiny import build_tiny
from bench.data.attributes import AttributeData, annotate_attributes, load_attributes
from bench.data.likes import kto_sampling_weights, load_kto, pickapic_to_kto, world_comparisons
from bench.data.pairs import ImageData, PairData, encode_png
from bench.data.votes import VoteData, load_votes, score_votes
from bench.registry import BenchError
from bench.train import Method, Reference, RefreshSpec, TrainConfig, _batches, train
from methods.balanced_dpo import BalancedDPO, BalancedDPOConfig, consensus
from methods.cpo import CPO, CPOConfig, cpo_loss, tree_weights
from methods.dpo import DPO, DPOConfig
from methods.kto import KTO, KTOConfig

CAP = "one red circle on a blue background"


def sig(x):
    return 1 / (1 + math.exp(-x))


# ----------------------------------------------------------------------------- KTO

def test_kto_loss_on_hand_computed_tensors():
    err = torch.tensor([0.10, 0.20, 0.30, 0.40])
    ref = torch.tensor([0.12, 0.18, 0.30, 0.43])
    labels = torch.tensor([True, True, False, False])
    # g = ref - err = [0.02, -0.02, 0, 0.03]; z = max(0, mean g) = 0.0075
    # x = s * beta * (g - z) with beta = 100: [1.25, -2.75, 0.75, -2.25]
    loss, m = KTO(KTOConfig(beta=100.0)).loss(err, ref, labels)
    expected = np.mean([1 - sig(1.25), 1 - sig(-2.75), 1 - sig(0.75), 1 - sig(-2.25)])
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    assert m["z"].item() == pytest.approx(0.0075, abs=1e-7)
    assert m["implicit_acc"].item() == 0.5            # x > 0 for images 0 and 2
    # lambda_D = 2, lambda_U = 0.5 weigh desirable and undesirable images
    loss, _ = KTO(KTOConfig(beta=100.0, lambda_d=2.0, lambda_u=0.5)).loss(err, ref, labels)
    expected = np.mean([2 * (1 - sig(1.25)), 2 * (1 - sig(-2.75)), 0.5 * (1 - sig(0.75)), 0.5 * (1 - sig(-2.25))])
    assert loss.item() == pytest.approx(expected, abs=1e-5)


def test_kto_default_beta_and_loss_at_init():
    assert KTOConfig().beta == 1000.0 and KTOConfig().positive_ratio == 0.8
    err = torch.rand(6)
    loss, m = KTO(KTOConfig()).loss(err, err.clone(), torch.tensor([1, 0, 1, 1, 0, 1]).bool())
    assert loss.item() == pytest.approx(0.5) and m["z"].item() == 0.0


def test_kto_reference_point_is_clamped_at_zero_and_has_no_gradient():
    labels = torch.tensor([True, False, True])
    ref = torch.tensor([0.10, 0.10, 0.10])
    err = torch.tensor([0.12, 0.13, 0.10], requires_grad=True)      # g = [-0.02, -0.03, 0]: mean < 0
    loss, m = KTO(KTOConfig(beta=50.0)).loss(err, ref, labels)
    assert m["z"].item() == 0.0                                     # max(0, -0.01667)
    loss.backward()
    # d/d err_i of mean(1 - sigmoid(s_i * beta * (g_i - z))) with z constant and g_i = ref_i - err_i
    g = (ref - err).detach()
    s = labels.float() * 2 - 1
    x = s * 50.0 * g
    manual = (torch.sigmoid(x) * (1 - torch.sigmoid(x)) * s * 50.0) / 3
    assert torch.allclose(err.grad, manual, atol=1e-6)
    # a positive batch mean is used as is, and still carries no gradient
    err2 = torch.tensor([0.08, 0.09, 0.10], requires_grad=True)     # g = [0.02, 0.01, 0]
    loss, m = KTO(KTOConfig(beta=50.0)).loss(err2, ref, labels)
    assert m["z"].item() == pytest.approx(0.01, abs=1e-7)
    loss.backward()
    x = s * 50.0 * ((ref - err2).detach() - 0.01)
    manual = (torch.sigmoid(x) * (1 - torch.sigmoid(x)) * s * 50.0) / 3
    assert torch.allclose(err2.grad, manual, atol=1e-6)


def test_kto_sigmoid_and_rolled_reference_points_are_not_clamped():
    labels = torch.tensor([True, True, False])
    ref = torch.zeros(3)
    err = torch.tensor([0.02, 0.04, 0.01])                          # g = [-0.02, -0.04, -0.01]
    _, m = KTO(KTOConfig(reference_point="sigmoid")).loss(err, ref, labels)
    assert m["z"].item() == pytest.approx((-0.06 / (2 + 1e-6) + -0.01 / (1 + 1e-6)) / 2, abs=1e-7)   # -0.02
    _, m = KTO(KTOConfig(reference_point="rolled_prompts")).loss(err, ref, labels, torch.tensor([-0.1, 0.0, -0.05]))
    assert m["z"].item() == pytest.approx(-0.05)
    with pytest.raises(BenchError, match="unknown method.reference_point"):
        KTO(KTOConfig(reference_point="mean"))


def test_kto_batches_are_80_percent_desirable():
    labels = torch.tensor([True] * 10 + [False] * 90)
    w = kto_sampling_weights(labels, 0.8)
    assert w[labels].sum() / w.sum() == pytest.approx(0.8, abs=1e-9)
    d = ImageData(torch.zeros(100, 3, 4, 4, dtype=torch.uint8), [CAP] * 100, labels=labels, sampling_weights=w)
    b = next(_batches(KTO(KTOConfig()), d, TrainConfig(batch_size=4000), torch.Generator().manual_seed(0)))
    assert b.labels.float().mean().item() == pytest.approx(0.8, abs=0.03)
    assert not b.paired


# ----------------------------------------------------------------------------- BalancedDPO

def votes(rows, labels_0=None, s0=None, s1=None):
    n = len(rows)
    x = torch.zeros(n, 3, 4, 4, dtype=torch.uint8)
    return VoteData(x, x + 1, [CAP] * n, torch.tensor(labels_0 or [1.0] * n), [f"v{i}" for i in range(len(rows[0]))],
                    torch.tensor(rows, dtype=torch.float32), s0, s1)


def test_majority_vote_with_three_scorers_and_abstentions():
    # votes in label_0 convention: 1 image 0, 0 image 1, 0.5 abstain (within tolerance)
    v = votes([[1, 1, 0], [0, 0, 1], [1, 0.5, 0.5], [1, 0, 0.5], [0.5, 0.5, 0.5]])
    label, weight = consensus(v, "majority", "skip")
    assert label.tolist() == [1, -1, 1, 0, 0]
    assert weight.tolist() == [1, 1, 1, 0, 0]


def test_even_k_tie_rules():
    v = votes([[1, 0], [1, 1], [0, 1], [0.5, 0.5]], labels_0=[0.0, 1.0, 0.5, 1.0])
    label, weight = consensus(v, "majority", "skip")
    assert label.tolist() == [0, 1, 0, 0] and weight.tolist() == [0, 1, 0, 0]     # 1 vs 1 and 0 vs 0: ties
    label, weight = consensus(v, "majority", "annotator")
    assert label.tolist() == [-1, 1, 0, 1] and weight.tolist() == [1, 1, 0, 1]    # annotator tie stays dropped
    label, weight = consensus(v, "majority", "margin")
    assert weight.tolist() == [0, 1, 0, 0]                                        # |sum v| / K
    v3 = votes([[1, 1, 0], [1, 1, 1]])
    _, weight = consensus(v3, "majority", "margin")
    assert weight.tolist() == pytest.approx([1 / 3, 1.0])
    with pytest.raises(BenchError, match="unknown method.tie_rule"):
        consensus(v, "majority", "coin")


def test_score_aggregation_baselines():
    # scorer 1 has a 100x larger scale: the raw sum follows it, the normalised sum does not
    s0 = torch.tensor([[0.0, 100.0], [1.0, 0.0], [0.0, 0.0]])
    s1 = torch.tensor([[1.0, 98.0], [0.0, 1.0], [0.5, 0.5]])
    v = votes([[0, 1], [1, 0], [0, 0]], s0=s0, s1=s1)
    assert consensus(v, "vanilla_sum", "skip")[0].tolist() == [1, 0, -1]
    lab, _ = consensus(v, "normalized_sum", "skip")
    both = torch.cat([s0, s1]); z0, z1 = (s0 - both.mean(0)) / both.std(0), (s1 - both.mean(0)) / both.std(0)
    assert lab.tolist() == torch.sign(z0.sum(1) - z1.sum(1)).tolist()
    a, _ = consensus(v, "random_scorer", "skip", seed=3)
    b, _ = consensus(v, "random_scorer", "skip", seed=3)
    assert torch.equal(a, b)
    pick = torch.randint(0, 2, (3,), generator=torch.Generator().manual_seed(3))
    assert a.tolist() == [(v.votes[i, pick[i]] * 2 - 1).item() for i in range(3)]
    with pytest.raises(BenchError, match="needs per-scorer scores"):
        consensus(votes([[1, 0]]), "vanilla_sum", "skip")


def test_balanced_dpo_relabels_pairs_and_weights_the_dpo_loss():
    m = BalancedDPO(BalancedDPOConfig(voters=["v0", "v1", "v2"]))
    v = votes([[1, 1, 0], [0, 0, 1], [0.5, 0.5, 0.5]])
    d = m.prepare(None, v, TrainConfig(), seed=0)
    assert torch.equal(d.winners[0], v.images_0[0]) and torch.equal(d.winners[1], v.images_1[1])
    assert d.ties.tolist() == [False, False, True]
    err, ref = torch.tensor([0.10, 0.20, 0.30, 0.25]), torch.tensor([0.12, 0.20, 0.29, 0.25])
    a, _ = m.loss(err, ref, torch.ones(2))
    b, _ = DPO(DPOConfig(beta=5000.0)).loss(err, ref)
    assert a.item() == pytest.approx(b.item(), abs=1e-6)
    c, _ = m.loss(err, ref, torch.tensor([1.0, 0.0]))          # only pair 0: inside = 75
    assert c.item() == pytest.approx(-math.log(sig(75.0)), abs=1e-6)
    with pytest.raises(BenchError, match="gold is hidden"):
        BalancedDPO(BalancedDPOConfig(voters=["gold", "fidelity"]))


# ----------------------------------------------------------------------------- shared reference

def test_reference_refresh_copy_and_ema_on_parameters():
    net = torch.nn.Linear(2, 2)
    ref = Reference(net, "frozen_copy", RefreshSpec(every=2, kind="ema", ema_decay=0.75))
    w0 = ref.ref.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    assert not ref.after_step(1) and torch.equal(ref.ref.weight, w0)
    assert ref.after_step(2)
    assert torch.allclose(ref.ref.weight, 0.75 * w0 + 0.25 * net.weight)
    # diffusers EMAModel schedule: first update a copy, then decay (1 + n) / (10 + n)
    ref = Reference(net, "frozen_copy", RefreshSpec(every=1, kind="ema", ema_decay=0.999, ema_warmup=True))
    with torch.no_grad():
        net.weight.add_(1.0)
    ref.after_step(1)
    assert torch.equal(ref.ref.weight, net.weight)
    before = ref.ref.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    ref.after_step(2)
    assert torch.allclose(ref.ref.weight, 2 / 11 * before + 9 / 11 * net.weight)
    with pytest.raises(BenchError, match="needs train.reference=frozen_copy"):
        Reference(net, "adapters_disabled", RefreshSpec(every=2))


class Probe(Method):
    """DPO loss that records whether the reference equals the policy at each step."""
    feedback = "pairs"
    needs_reference = True

    def __init__(self, every, kind="copy"):
        super().__init__(DPOConfig())
        self.every, self.kind, self.same = every, kind, []

    def reference_refresh(self):
        return RefreshSpec(self.every, self.kind, 0.5)

    def loss(self, err, ref_err):
        self.same.append(bool(torch.equal(err.detach(), ref_err)))
        return DPO(DPOConfig()).loss(err, ref_err)


def pairs(n=6):
    g = torch.Generator().manual_seed(0)
    w = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    l = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    return PairData(w, l, [CAP] * n, torch.tensor([False] * (n - 1) + [True]))


@pytest.mark.parametrize("finetune", ["full", "lora"])
def test_reference_refreshes_at_exactly_the_configured_steps(tiny_arch, finetune):
    bb = Backbone("x", build_tiny(tiny_arch, 32), 32, 3.0, 2)
    probe = Probe(every=3)
    cfg = TrainConfig(steps=8, batch_size=2, lr=1e-3, finetune=finetune, log_every=1, empty_prompt_prob=0.0)
    train(bb, probe, pairs(), cfg, seed=0, progress=False)
    # refreshed (copied) after optimizer steps 3 and 6: the reference equals the policy when the
    # loss of steps 0, 3 and 6 (0-based) is computed, and at no other step
    assert [i for i, s in enumerate(probe.same) if s] == [0, 3, 6]


def test_no_refresh_keeps_a_frozen_reference(tiny_arch):
    bb = Backbone("x", build_tiny(tiny_arch, 32), 32, 3.0, 2)
    probe = Probe(every=0)
    train(bb, probe, pairs(), TrainConfig(steps=4, batch_size=2, lr=1e-3, log_every=1), seed=0, progress=False)
    assert probe.same == [True, False, False, False]


# ----------------------------------------------------------------------------- CPO

def test_cpo_loss_on_hand_computed_tensors():
    err = torch.tensor([0.10, 0.30])                         # one pair: e(w) = 0.10, e(l) = 0.30
    a_w = torch.tensor([[0.11, 0.10]])
    a_l = torch.tensor([[0.30, 0.305]])
    diff = torch.tensor([[1.0, -1.0]])                       # attribute 0 favours w, attribute 1 favours l
    w = torch.tensor([0.75, 0.25])
    loss, m = cpo_loss(err, a_w, a_l, diff, w, beta=200.0)
    # u_0 = -100 * ((0.10 - 0.11) - (0.30 - 0.30)) = 1;  u_1 = -100 * ((0.10 - 0.10) - (0.30 - 0.305)) = -0.5
    expected = (0.75 * -math.log(sig(1.0)) + 0.25 * -math.log(sig(0.5))) / 1.0
    assert loss.item() == pytest.approx(expected, abs=1e-5)
    assert m["implicit_acc"].item() == 1.0                  # d*u = 1 and 0.5, both > 0


def test_cpo_with_one_binary_attribute_is_the_dpo_loss():
    torch.manual_seed(0)
    err, ref = torch.rand(8) * 1e-3, torch.rand(8) * 1e-3
    r_w, r_l = ref.chunk(2)
    a, _ = cpo_loss(err, r_w[:, None], r_l[:, None], torch.ones(4, 1), torch.tensor([1.0]), beta=5000.0)
    b, _ = DPO(DPOConfig(beta=5000.0)).loss(err, ref)
    assert a.item() == b.item()
    a, _ = cpo_loss(err, r_w[:, None], r_l[:, None], torch.ones(4, 1), torch.tensor([0.3]), beta=2500.0, half=False)
    b, _ = DPO(DPOConfig(beta=2500.0, half=False)).loss(err, ref)
    assert a.item() == pytest.approx(b.item(), rel=1e-6)


def single_attribute(d: PairData) -> AttributeData:
    """The pairs as images in file order (w0, l0, w1, l1, ...) with one positive attribute:
    1 for winners, 0 for losers, 1 for both images of a tie. Captions must differ between pairs."""
    imgs, caps, attrs = [], [], []
    for i in range(len(d)):
        imgs += [d.winners[i], d.losers[i]]
        caps += [d.captions[i]] * 2
        attrs += [[1.0], [1.0 if d.ties[i] else 0.0]]
    return AttributeData(torch.stack(imgs), caps, torch.tensor(attrs), ["good"], torch.tensor([1.0]), ["root"])


def test_cpo_with_one_attribute_trains_exactly_as_dpo(tiny_arch):
    d = pairs()
    d = PairData(d.winners, d.losers, [f"{CAP} #{i}" for i in range(len(d))], d.ties)
    cfg = TrainConfig(steps=3, batch_size=3, lr=1e-3, log_every=1)
    runs = []
    for method, data in ((DPO(DPOConfig(beta=5000.0)), d), (CPO(CPOConfig(anchor="base")), single_attribute(d))):
        bb = Backbone("x", build_tiny(tiny_arch, 32), 32, 3.0, 2)
        runs.append(train(bb, method, data, cfg, seed=0, progress=False)[1])
    assert [h["loss"] for h in runs[0]] == [h["loss"] for h in runs[1]]
    assert runs[0][0]["loss"] == pytest.approx(math.log(2))


def test_cpo_pairs_orientation_ties_and_tree_weights():
    names = list(W.ATTRIBUTES[:9])          # a nine-attribute tree (world v1's), written out below
    pol = torch.tensor([1.0] * 4 + [-1.0] * 5)
    nodes = ["fidelity"] * 5 + ["craft"] * 4
    w = tree_weights(pol, nodes, "hierarchical", 1.0, 1.0)
    assert w.tolist() == pytest.approx([0.1] * 5 + [0.125] * 4)
    assert tree_weights(pol, nodes, "uniform", 2.0, 1.0).tolist() == pytest.approx([2 / 9] * 4 + [1 / 9] * 5)
    a = torch.zeros(6, 9)
    a[0, 0] = 1                    # pair 0: image 0 has colour_ok, image 1 not -> image 0 wins
    a[3, 5] = 1                    # pair 1: image 3 is blurred (negative) -> image 2 wins
    a[4, 0] = a[5, 0] = 1          # pair 2: identical attributes -> a tie
    imgs = torch.arange(6, dtype=torch.uint8).view(6, 1, 1, 1).expand(6, 3, 2, 2).contiguous()
    caps = ["a", "a", "b", "b", "c", "c"]
    m = CPO(CPOConfig(anchor="base"))
    d = m.prepare(None, AttributeData(imgs, caps, a, names, pol, nodes), TrainConfig(), seed=0)
    assert d.winners[:, 0, 0, 0].tolist() == [0, 2, 4] and d.losers[:, 0, 0, 0].tolist() == [1, 3, 5]
    assert d.ties.tolist() == [False, False, True]
    assert d.extra["diff"][0, 0] == 1 and d.extra["diff"][1, 5] == 1 and d.extra["diff"][2].abs().sum() == 0
    with pytest.raises(BenchError, match="not in the data's tree"):
        CPO(CPOConfig(attributes=["pretty"])).prepare(None, AttributeData(imgs, caps, a, names, pol, nodes),
                                                       TrainConfig(), seed=0)


def test_cpo_stage_one_trains_an_attribute_conditioned_auxiliary_model(tiny_arch):
    bb = Backbone("x", build_tiny(tiny_arch, 32), 32, 3.0, 2)
    base = {k: v.clone() for k, v in bb.unet.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (8, 3, 32, 32), generator=g, dtype=torch.uint8)
    attrs = torch.tensor([[1.0, 0.0], [0.0, 1.0]] * 4)
    data = AttributeData(imgs, [CAP] * 8, attrs, ["colour_ok", "blurred"], torch.tensor([1.0, -1.0]), ["f", "c"])
    m = CPO(CPOConfig(aux_steps=2, aux_lr=1e-3))
    _, hist = train(bb, m, data, TrainConfig(steps=2, batch_size=2, lr=1e-3, log_every=1), seed=0, progress=False)
    assert len(m.aux_history) == 2 and all(math.isfinite(h["loss"]) for h in hist)
    aux = m.aux.state_dict()
    assert any(not torch.equal(aux[k], base[k]) for k in base)          # the auxiliary model moved
    assert m.tokens.tokens.shape == (2, 3, tiny_arch.text_hidden)
    assert not m.needs_reference and m.data_info["kept"] == 4


# ----------------------------------------------------------------------------- feedback files

def png(v):
    return encode_png(torch.full((3, 8, 8), v, dtype=torch.uint8))


def test_kto_file_round_trips_with_each_labelling_policy(tmp_path):
    A, B, C, D, E = (png(v) for v in (10, 20, 30, 40, 50))
    df = pd.DataFrame([
        {"caption": "x", "jpg_0": A, "jpg_1": B, "label_0": 1.0, "label_1": 0.0},   # A beats B
        {"caption": "x", "jpg_0": C, "jpg_1": B, "label_0": 0.0, "label_1": 1.0},   # B beats C
        {"caption": "y", "jpg_0": D, "jpg_1": E, "label_0": 0.5, "label_1": 0.5},   # tie only
    ])
    df.to_parquet(tmp_path / "p.parquet")
    root = pickapic_to_kto(tmp_path / "p.parquet", tmp_path / "kto")
    csv = pd.read_csv(root / "train_processed_v3.csv")
    assert list(csv.columns) == ["file_name", "caption", "split"]
    assert csv["split"].tolist() == ["exclusive_win", "intersections", "exclusive_lose"]   # A, B, C; D, E left out
    assert all((root / f).is_file() and f.startswith("train/") for f in csv["file_name"])
    by_policy = {p: load_kto(root, p) for p in ("gt_label_wi_l", "gt_label_w_l", "gt_label_w_il")}
    assert by_policy["gt_label_wi_l"].labels.tolist() == [True, True, False]
    assert by_policy["gt_label_w_l"].labels.tolist() == [True, False]
    assert by_policy["gt_label_w_il"].labels.tolist() == [True, False, False]
    assert by_policy["gt_label_wi_l"].images[:, 0, 0, 0].tolist() == [10, 20, 30]   # pixels exact
    # the README's column names (file_path, label) read the same
    csv.rename(columns={"file_name": "file_path", "split": "label"}).to_csv(root / "train_processed_v3.csv", index=False)
    assert load_kto(root).labels.tolist() == [True, True, False]
    with pytest.raises(BenchError, match="unknown KTO labelling policy"):
        load_kto(root, "all")
    with pytest.raises(BenchError, match="no train_processed_v3.csv"):
        load_kto(tmp_path)


def world_pairs(tmp_path, n=4):
    rng = np.random.default_rng(0)
    prompts = W.split_prompts(W.WorldConfig())["train"][:2]
    rows = []
    for k in range(n):
        p = prompts[k % 2]
        a, b = (torch.from_numpy((W.render(p, rng, 32, d) * 255).round().astype(np.uint8)).permute(2, 0, 1)
                for d in ((), ("blur",)))
        rows.append({"caption": p.text, "jpg_0": encode_png(a), "jpg_1": encode_png(b),
                     "label_0": [1.0, 0.0, 0.5, 1.0][k], "label_1": [0.0, 1.0, 0.5, 0.0][k]})
    path = tmp_path / "pairs.parquet"
    pd.DataFrame(rows).to_parquet(path)
    return path


def test_world_comparisons_add_same_prompt_rounds(tmp_path):
    path = world_pairs(tmp_path)
    out = world_comparisons(path, tmp_path / "comp.parquet", 2, W.AnnotatorConfig())
    df = pd.read_parquet(out)
    assert len(df) > 4 and {"image_0_uid", "image_1_uid"} <= set(df.columns)
    pairs_seen = [frozenset(p) for p in zip(df.image_0_uid, df.image_1_uid)]
    assert len(set(pairs_seen)) == len(pairs_seen)                    # no pair compared twice
    caption_of = {}
    for r in df.itertuples():
        for u in (r.image_0_uid, r.image_1_uid):
            assert caption_of.setdefault(u, r.caption) == r.caption   # only same-prompt comparisons
    again = pd.read_parquet(world_comparisons(path, tmp_path / "comp2.parquet", 2, W.AnnotatorConfig()))
    assert again.drop(columns=["jpg_0", "jpg_1"]).equals(df.drop(columns=["jpg_0", "jpg_1"]))


def test_vote_file_round_trips(tmp_path):
    path = world_pairs(tmp_path)
    out = score_votes(path, tmp_path / "votes.parquet", ["fidelity", "aesthetic"])
    df = pd.read_parquet(out)
    assert {"vote_fidelity", "vote_aesthetic", "score_0_aesthetic", "score_1_fidelity"} <= set(df.columns)
    v = load_votes(out, ["aesthetic", "fidelity"])
    assert v.voters == ["aesthetic", "fidelity"] and v.votes.shape == (4, 2)
    # image 1 of every pair is the blurred one: the aesthetic proxy votes for image 0
    assert v.votes[:, 0].tolist() == [1.0] * 4
    assert torch.equal(v.scores_0[:, 0] > v.scores_1[:, 0], torch.ones(4, dtype=torch.bool))
    # file order kept even where the annotator preferred image 1 (row 1)
    from bench.data.pairs import decode_image
    assert torch.equal(v.images_0[1], decode_image(df.jpg_0[1]))
    assert v.labels_0.tolist() == [1.0, 0.0, 0.5, 1.0]
    with pytest.raises(BenchError, match=r"missing vote column\(s\) \['vote_preference'\]"):
        load_votes(out, ["preference"])


def test_attribute_file_round_trips(tmp_path):
    path = world_pairs(tmp_path)
    root = annotate_attributes(path, tmp_path / "attrs")
    d = load_attributes(root)
    tree = json.loads((root / "attribute_tree.json").read_text())
    assert tree["craft"]["negative"] == list(W.ATTRIBUTE_TREE["craft"]["negative"])
    assert tree["style"]["negative"] == ["framed", "hollow"]
    assert d.names == (list(W.POSITIVE_ATTRIBUTES[:4]) + ["extra_object"] + list(W.ATTRIBUTE_TREE["craft"]["negative"])
                       + ["framed", "hollow"])
    assert d.polarity.tolist() == [1.0] * 4 + [-1.0] * 7 and d.nodes[4] == "fidelity" and d.nodes[-1] == "style"
    assert len(d) == 8                                   # every image of the 4 pairs, once
    blurred = d.names.index("blurred")
    assert d.attributes[1::2, blurred].tolist() == [1.0] * 4 and d.attributes[0::2, blurred].tolist() == [0.0] * 4
    flipped = load_attributes(annotate_attributes(path, tmp_path / "flip", noise=1.0))
    assert torch.equal(flipped.attributes, 1 - d.attributes)
    (root / "metadata.jsonl").write_text('{"file_name": "images/nope.png", "caption": "x", "attributes": {}}\n')
    with pytest.raises(BenchError, match="line 1 is malformed"):
        load_attributes(root)


# ----------------------------------------------------------------------------- whole jobs

def compose_cfg(*overrides):
    from bench.runner import compose_config
    return compose_config(list(overrides))


@pytest.fixture(scope="module")
def jobs(tmp_path_factory, tiny_pipe_dir):
    import bench.runner as runner
    root = tmp_path_factory.mktemp("new-methods")
    common = [f"backbone.weights={tiny_pipe_dir}", f"paths.results={root / 'results'}",
              f"paths.cache={root / 'cache'}", "data.n_pairs=12", "train.steps=2", "train.batch_size=4",
              "train.log_every=1", "eval.max_prompts=2", "eval.seeds_per_prompt=1", "eval.n_bootstrap=100",
              "progress=false"]
    extra = {"kto": [], "balanced_dpo": ["method.ref_refresh_every=1"], "cpo": ["method.aux_steps=2"]}
    return root, {m: runner.run_job(compose_cfg(f"method={m}", *common, *extra[m])) for m in extra}


def test_each_new_method_runs_as_a_job(jobs):
    root, dirs = jobs
    res = {m: json.loads((d / "result.json").read_text()) for m, d in dirs.items()}
    for m, r in res.items():
        assert r["method"] == m and r["budget"] == {"steps": 2, "batch_size": 4, "examples": 8}
        assert all(math.isfinite(h["loss"]) for h in r["train_history"])
        assert r["scorers"]["gold"]["vs_base"]["n_pairs"] == 2
    assert res["kto"]["train_history"][0]["loss"] == pytest.approx(0.5, abs=1e-6)   # g = z = 0 at init
    assert res["kto"]["data"]["policy"] == "gt_label_wi_l" and set(res["kto"]["data"]["splits"]) == {
        "exclusive_win", "exclusive_lose", "intersections"}
    assert res["balanced_dpo"]["train_history"][0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert res["balanced_dpo"]["data"]["voters"] == ["fidelity", "aesthetic", "preference"]
    assert len(res["cpo"]["data"]["aux_history"]) == 2
    # every kind is derived from the one annotated pairs file (shared base samples)
    assert len(list((root / "cache" / "preferences").glob("*.parquet"))) == 1
    assert {p.name.split("-")[0] for p in (root / "cache" / "feedback").iterdir() if p.name != ".locks"} == {
        "comparisons", "kto", "votes", "attributes"}
    assert not list(root.rglob("*.tmp*"))
