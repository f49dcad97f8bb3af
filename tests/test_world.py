import numpy as np
import pytest

from bench import world as W

CFG = W.WorldConfig()
PROMPTS = W.all_prompts(CFG)


def test_prompt_text_round_trips():
    for p in PROMPTS:
        assert W.parse_prompt(p.text) == p
    assert W.Prompt(2, "red", "circle", "blue").text == "two red circles on a blue background"
    with pytest.raises(ValueError, match="not a shapes-world prompt"):
        W.parse_prompt("a photo of a cat")


def test_split_holds_out_unseen_combinations_of_seen_words():
    sp = W.split_prompts(CFG)
    assert len(sp["eval"]) > 0 and len(sp["val"]) > 0
    triple = lambda p: (p.colour, p.shape, p.background)  # noqa: E731
    train = {triple(p) for p in sp["train"]}
    for split in ("val", "eval"):
        held = {triple(p) for p in sp[split]}
        assert not held & train
        for i in range(3):   # every colour / shape / background still seen in training
            assert {t[i] for t in held} <= {t[i] for t in train}
    assert sum(len(v) for v in sp.values()) == len(PROMPTS)
    assert W.split_prompts(CFG) == sp   # deterministic


def test_clean_renders_are_fully_correct():
    rng = np.random.default_rng(0)
    ok = [W.judge(W.render(p, rng), p).fully_correct for p in PROMPTS]
    assert np.mean(ok) == 1.0


@pytest.mark.parametrize("defect,attribute", sorted(W.DEFECT_ATTRIBUTE.items()))
def test_each_planted_defect_is_detected(defect, attribute):
    rng = np.random.default_rng(1)
    positive = attribute in W.POSITIVE_ATTRIBUTES
    hits, n = 0, 60
    for i in range(n):
        p = PROMPTS[(i * 7) % len(PROMPTS)]
        j = W.judge(W.render(p, rng, defects=(defect,)), p)
        hits += getattr(j, attribute) != positive
        assert not j.fully_correct or getattr(j, attribute) == positive
    assert hits == n, f"{defect}: {attribute} detected in {hits}/{n}"


def test_attribute_tree_has_positive_and_negative_attributes():
    assert len(W.ATTRIBUTES) >= 8
    assert set(W.DEFECT_ATTRIBUTE.values()) == set(W.ATTRIBUTES)
    assert W.POSITIVE_ATTRIBUTES and W.NEGATIVE_ATTRIBUTES


def test_gold_prefers_clean_and_proxies_conflict():
    rng = np.random.default_rng(2)
    p = W.Prompt(3, "red", "circle", "blue")
    clean = W.judge(W.render(p, rng), p)
    wrong = W.judge(W.render(p, rng, defects=("wrong_count",)), p)
    assert W.gold_utility(clean) > W.gold_utility(wrong)
    assert W.fidelity_proxy(clean) > W.fidelity_proxy(wrong)
    # the aesthetic proxy prefers fewer objects: for the prompt "three ...", a clean 2-object image
    # ranks above the correct 3-object one, while fidelity and gold rank it below
    two = W.judge(W.render(W.Prompt(2, "red", "circle", "blue"), rng), p)
    assert (two.n_objects, clean.n_objects) == (2, 3)
    assert W.aesthetic_proxy(two) > W.aesthetic_proxy(clean)
    assert W.fidelity_proxy(two) < W.fidelity_proxy(clean) and W.gold_utility(two) < W.gold_utility(clean)


def test_annotator_labels_and_ties():
    cfg = W.AnnotatorConfig(temperature=0.5, tie_max=0.5, tie_scale=0.3)
    rng = np.random.default_rng(0)
    equal = [W.annotate_pair(1.0, 1.0, cfg, rng) for _ in range(4000)]
    assert set(equal) <= {(1.0, 0.0), (0.0, 1.0), (0.5, 0.5)}
    assert abs(np.mean([e == (0.5, 0.5) for e in equal]) - 0.5) < 0.03
    far = [W.annotate_pair(5.0, 0.0, cfg, rng) for _ in range(2000)]
    # P(tie) = 0.5 e^{-5/0.3} ~ 0; P(first wins) = sigmoid(10) = 0.99995
    assert np.mean([f == (1.0, 0.0) for f in far]) > 0.995
