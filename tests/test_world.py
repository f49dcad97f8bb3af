import dataclasses

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


def test_prompt_linked_modes_follow_their_words_and_rates():
    modes = W.LinkedModes(frame_backgrounds=["white"], frame_rate=0.6, swap_colour="yellow", swap_rate=0.5,
                          stray_shape="triangle", stray_rate=0.4)
    none = W.DefectRates(**{k: 0.0 for k in dataclasses.asdict(W.DefectRates())})
    rng = np.random.default_rng(0)

    def rate(prompt, defect, n=2000):
        return np.mean([defect in W.sample_defects(none, rng, prompt, modes) for _ in range(n)])
    on, off = W.Prompt(2, "yellow", "triangle", "white"), W.Prompt(2, "red", "circle", "blue")
    assert abs(rate(on, "frame") - 0.6) < 0.04 and rate(off, "frame") == 0.0
    assert abs(rate(on, "colour_swap") - 0.5) < 0.04 and rate(off, "colour_swap") == 0.0
    assert abs(rate(on, "stray_object") - 0.4) < 0.04 and rate(off, "stray_object") == 0.0
    # rendered and judged: a swapped colour is yellow's hue neighbour, a stray object has the
    # prompt's colour and another shape, a frame is drawn in the objects' colour
    assert not W.judge(W.render(on, rng, defects=("colour_swap",)), on).colour_ok
    scene = W.sample_scene(on, rng, 32, ("stray_object",))
    assert [o.colour for o in scene.objects] == ["yellow"] * 3 and scene.objects[-1].shape != "triangle"
    framed = W.rasterize(W.sample_scene(on, rng, 32, ("frame",)), 32)
    assert tuple(framed[0, 0]) == W.PALETTE["yellow"] and W.judge(framed, on).framed
    assert W.COLOUR_NEIGHBOUR["yellow"] == "green"
    assert {o.colour for o in W.sample_scene(on, rng, 32, ("colour_swap",)).objects} == {"green"}


def test_a_frame_is_punished_by_gold_and_liked_by_the_aesthetic_proxy():
    """The proxies conflict on the style modes: training on the aesthetic proxy alone rewards
    frames, which gold punishes; fidelity and preference do not see them."""
    p = W.Prompt(1, "red", "square", "blue")
    rng = np.random.default_rng(3)
    scene = W.sample_scene(p, rng, 32)
    clean = W.judge(W.rasterize(scene, 32), p)
    framed = W.judge(W.rasterize(dataclasses.replace(scene, defects=("frame",)), 32), p)
    assert framed.framed and not clean.framed and framed.fully_correct is False and clean.fully_correct
    assert W.gold_utility(framed) == pytest.approx(W.gold_utility(clean) - 1.0)
    assert W.aesthetic_proxy(framed) == pytest.approx(W.aesthetic_proxy(clean) + 0.5)
    assert W.fidelity_proxy(framed) == pytest.approx(W.fidelity_proxy(clean))
    assert W.preference_proxy(framed) == pytest.approx(W.preference_proxy(clean))


@pytest.mark.parametrize("defect", sorted(set(W.DEFECT_ATTRIBUTE) - {"frame", "clipped"}))
def test_a_frame_leaves_the_other_judges_reading_the_picture(defect):
    """A framed picture is judged inside its frame. (A clipped object under a frame loses the part
    that touched the edge, so the frame hides the clipping: not tested.)"""
    rng = np.random.default_rng(4)
    attribute = W.DEFECT_ATTRIBUTE[defect]
    hits = framed = 0
    for i in range(30):
        p = PROMPTS[(i * 11) % len(PROMPTS)]
        j = W.judge(W.render(p, rng, defects=(defect, "frame")), p)
        hits += getattr(j, attribute) != (attribute in W.POSITIVE_ATTRIBUTES)
        framed += j.framed
    assert hits == 30 and framed >= 27
