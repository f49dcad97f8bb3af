"""BalancedDPO and CPO on real-layout data (issue 19 item 6): real scorers as voters built with
eval.scorer_options, Pick-a-Pic images of mixed sizes, and CPO's attribute-annotation file."""
import json
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from bench.backbones import Backbone
from bench.backbones.tiny import build_tiny
from bench.data.pairs import decode_image, encode_png
from bench.evaluate import get_scorer
from bench.data.loaders import load_for_method
from bench.data.votes import score_votes
from bench.registry import BenchError
from bench.train import TrainConfig, train
from methods.balanced_dpo import BalancedDPO, BalancedDPOConfig
from methods.cpo import CPO, CPOConfig
from tests.test_scorers_real import clip_dir, clip_tokenizer, pickscore_dirs  # noqa: F401  (fixtures)

CAPTIONS = ["a photo of a red cat on a sofa", "an astronaut riding a horse, oil painting"]
SIZES = [(24, 24), (32, 40), (40, 32), (24, 24)]          # (H, W): Pick-a-Pic mixes sizes and shapes


def img(seed, hw):
    g = torch.Generator().manual_seed(seed)
    return encode_png(torch.randint(0, 256, (3, *hw), generator=g, dtype=torch.uint8))


def mixed_pickapic(path, uids=True):
    """Two pairs of real captions whose four images have three different sizes."""
    rows = []
    for i in range(2):
        r = {"caption": CAPTIONS[i], "jpg_0": img(2 * i, SIZES[2 * i]), "jpg_1": img(2 * i + 1, SIZES[2 * i + 1]),
             "label_0": [1.0, 0.0][i], "label_1": [0.0, 1.0][i]}
        if uids:
            r.update(image_0_uid=f"u{2 * i}", image_1_uid=f"u{2 * i + 1}")
        rows.append(r)
    pd.DataFrame(rows).to_parquet(path)
    return path


@pytest.fixture
def voter_options(pickscore_dirs, clip_dir):
    model, proc = pickscore_dirs
    return {"pickscore": {"model": str(model), "processor": str(proc), "device": "cpu"},
            "clip_score": {"model": str(clip_dir), "device": "cpu"}}


def test_votes_of_real_scorers_on_mixed_sizes_use_the_scorer_options(tmp_path, voter_options):
    path = mixed_pickapic(tmp_path / "pap.parquet")
    out = score_votes(path, tmp_path / "votes.parquet", ["pickscore", "clip_score"], scorer_options=voter_options)
    df = pd.read_parquet(out)
    for name in ("pickscore", "clip_score"):
        sc = get_scorer(name, voter_options[name])
        for side in (0, 1):
            # each image scored at its own size: the same number as scoring it alone
            alone = [float(sc.score(decode_image(b)[None].float() / 255.0, [c])[0])
                     for b, c in zip(df[f"jpg_{side}"], df["caption"])]
            assert df[f"score_{side}_{name}"].tolist() == pytest.approx(alone, rel=1e-4, abs=1e-4)
        d = df[f"score_0_{name}"] - df[f"score_1_{name}"]
        expect = np.where(d.abs() <= sc.tie_tolerance, 0.5, (d > 0).astype(float))
        assert df[f"vote_{name}"].tolist() == expect.tolist()


def test_balanced_dpo_trains_on_real_voters_through_load_for_method(tmp_path, voter_options, tiny_arch):
    path = mixed_pickapic(tmp_path / "pap.parquet")
    # tie_rule=annotator: random tiny voters may split; the file's label then decides
    method = BalancedDPO(BalancedDPOConfig(voters=["pickscore", "clip_score"], ref_refresh_every=0, tie_rule="annotator"))
    data_cfg = SimpleNamespace(keep_ties=False, seed=0)
    # without the options the voters look for their published weights (not here): one line naming them
    with pytest.raises(BenchError, match="PickScore"):
        load_for_method(method, path, data_cfg, tmp_path / "cache", 32, world=False)
    data, info = load_for_method(method, path, data_cfg, tmp_path / "cache", 32, world=False,
                                 scorer_options=voter_options)
    assert info["voters"] == ["pickscore", "clip_score"] and data.votes.shape == (2, 2)
    assert data.images_0.shape == (2, 3, 32, 32)              # training images at the backbone's size
    # the cached votes are keyed by the options: other weights, another file
    other = {**voter_options, "clip_score": {**voter_options["clip_score"], "scale": 1.0}}
    load_for_method(method, path, data_cfg, tmp_path / "cache", 32, world=False, scorer_options=other)
    assert len(list((tmp_path / "cache" / "feedback").glob("votes-*.parquet"))) == 2
    bb = Backbone("x", build_tiny(tiny_arch, 32), 32, 3.0, 2)
    _, hist = train(bb, method, data, TrainConfig(steps=2, batch_size=1, log_every=1), seed=0, progress=False)
    assert len(hist) == 2 and all(math.isfinite(h["loss"]) for h in hist)


TREE = {"craft": {"positive": ["sharp"], "negative": ["blurred", "watermark"]},
        "fidelity": {"positive": ["count_ok"], "negative": []}}


def write_attrs(path, images, tree=TREE):
    path.write_text(json.dumps({"tree": tree, "images": images}))
    return path


def test_cpo_reads_an_attribute_annotation_file(tmp_path, tiny_arch):
    path = mixed_pickapic(tmp_path / "pap.parquet")
    attrs = write_attrs(tmp_path / "attributes.json", {
        "u0": {"positive": ["sharp", "count_ok"], "negative": []},
        "u1": {"positive": ["count_ok"], "negative": ["blurred", "watermark"]},
        "u2": {"negative": ["watermark"]},
        "u3": {}})
    method = CPO(CPOConfig(attributes_file=str(attrs), anchor="base"))
    data, info = load_for_method(method, path, SimpleNamespace(seed=0), tmp_path / "cache", 32, world=False)
    assert data.names == ["sharp", "blurred", "watermark", "count_ok"] and data.nodes == ["craft"] * 3 + ["fidelity"]
    assert data.polarity.tolist() == [1.0, -1.0, -1.0, 1.0]
    assert data.attributes.tolist() == [[1, 0, 0, 1], [0, 1, 1, 1], [0, 0, 1, 0], [0, 0, 0, 0]]
    assert data.captions == [CAPTIONS[0]] * 2 + [CAPTIONS[1]] * 2 and data.images.shape == (4, 3, 32, 32)
    bb = Backbone("x", build_tiny(tiny_arch, 32), 32, 3.0, 2)
    _, hist = train(bb, method, data, TrainConfig(steps=2, batch_size=1, log_every=1), seed=0, progress=False)
    assert all(math.isfinite(h["loss"]) for h in hist)
    # u0 beats u1 (sharp, no defects); u3 beats u2 (no watermark)
    assert method.data_info["kept"] == 2


def test_cpo_attribute_file_keyed_by_content_hash_without_uid_columns(tmp_path):
    from bench.data.pairs import image_uid as _uid
    path = mixed_pickapic(tmp_path / "pap.parquet", uids=False)
    df = pd.read_parquet(path)
    uids = [_uid(df[f"jpg_{s}"][i]) for i in range(2) for s in (0, 1)]
    attrs = write_attrs(tmp_path / "a.json", {u: {"positive": ["sharp"]} if k == 0 else {} for k, u in enumerate(uids)})
    data, _ = load_for_method(CPO(CPOConfig(attributes_file=str(attrs))), path, SimpleNamespace(seed=0),
                              tmp_path / "cache", 32, world=False)
    assert data.attributes[:, 0].tolist() == [1, 0, 0, 0]


def test_cpo_on_real_data_without_or_with_a_bad_attribute_file_is_one_line(tmp_path):
    path = mixed_pickapic(tmp_path / "pap.parquet")
    cfg, cache = SimpleNamespace(seed=0), tmp_path / "cache"

    def err(method):
        with pytest.raises(BenchError) as e:
            load_for_method(method, path, cfg, cache, 32, world=False)
        assert "\n" not in str(e.value)
        return str(e.value)

    assert "needs per-image attribute annotations: set method.attributes_file=" in err(CPO(CPOConfig()))
    assert "not found" in err(CPO(CPOConfig(attributes_file=str(tmp_path / "none.json"))))
    (tmp_path / "bad.json").write_text("[1, 2]")
    assert "not an attribute-annotation file" in err(CPO(CPOConfig(attributes_file=str(tmp_path / "bad.json"))))
    partial = write_attrs(tmp_path / "p.json", {"u0": {}, "u1": {}})
    assert "2 of 4 image(s)" in err(CPO(CPOConfig(attributes_file=str(partial)))) and "u2" in err(
        CPO(CPOConfig(attributes_file=str(partial))))
    wrong = write_attrs(tmp_path / "w.json", {"u0": {"positive": ["blurred"]}, "u1": {}, "u2": {}, "u3": {}})
    assert "image u0 lists 'blurred' as positive, but the tree has it as negative" in err(
        CPO(CPOConfig(attributes_file=str(wrong))))
