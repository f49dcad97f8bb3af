
import numpy as np
import pandas as pd
import pytest
import torch

from bench.data.pairs import decode_image, encode_png, load_pickapic
from bench.registry import BenchError


def img(v: int) -> torch.Tensor:
    return torch.full((3, 8, 8), v, dtype=torch.uint8)


def write(tmp_path, rows, name="prefs.parquet"):
    path = tmp_path / name
    pd.DataFrame(rows).to_parquet(path)
    return path


def row(caption, a, b, l0, l1):
    return {"caption": caption, "jpg_0": encode_png(img(a)), "jpg_1": encode_png(img(b)),
            "label_0": l0, "label_1": l1}


def test_ties_dropped_and_winner_first(tmp_path):
    path = write(tmp_path, [row("first wins", 10, 20, 1.0, 0.0), row("tie", 30, 40, 0.5, 0.5),
                            row("second wins", 50, 60, 0.0, 1.0)])
    d = load_pickapic(path)
    assert d.captions == ["first wins", "second wins"]
    assert d.winners[:, 0, 0, 0].tolist() == [10, 60]
    assert d.losers[:, 0, 0, 0].tolist() == [20, 50]
    kept = load_pickapic(path, keep_ties=True)
    assert kept.captions == ["first wins", "tie", "second wins"] and kept.ties.tolist() == [False, True, False]


def test_file_round_trips_exactly(tmp_path):
    rng = np.random.default_rng(0)
    a = torch.from_numpy(rng.integers(0, 256, (3, 32, 32), dtype=np.uint8))
    path = write(tmp_path, [{"caption": "c", "jpg_0": encode_png(a), "jpg_1": encode_png(img(1)),
                             "label_0": 1.0, "label_1": 0.0}])
    assert torch.equal(load_pickapic(path).winners[0], a)


@pytest.mark.parametrize("bad,match", [
    ({"label_0": 0.7, "label_1": 0.3}, r"row 1 has labels \(0.7, 0.3\)"),
    ({"jpg_1": b"not an image"}, "row 1 has an undecodable image"),
    ({"caption": None}, "row 1 has a non-text caption"),
])
def test_malformed_rows_named_in_one_line(tmp_path, bad, match):
    rows = [row("ok", 1, 2, 1.0, 0.0), {**row("bad", 3, 4, 1.0, 0.0), **bad}]
    with pytest.raises(BenchError, match=match) as e:
        load_pickapic(write(tmp_path, rows))
    assert "\n" not in str(e.value)


def test_missing_file_and_columns(tmp_path):
    with pytest.raises(BenchError, match="preference file not found"):
        load_pickapic(tmp_path / "nope.parquet")
    path = write(tmp_path, [{"caption": "x", "jpg_0": b""}])
    with pytest.raises(BenchError, match=r"missing column\(s\) \['jpg_1', 'label_0', 'label_1'\]"):
        load_pickapic(path)


def test_unlabelled_rows_and_bad_labels_follow_one_rule_in_every_loader(tmp_path):
    """has_label=false rows are left out and labels are checked by the streaming loader, the
    votes loader (BalancedDPO) and the KTO conversion alike."""
    from bench.data.likes import pickapic_to_kto
    from bench.data.votes import load_votes
    rows = [{**row("a", 1, 2, 1.0, 0.0), "has_label": True, "vote_p": 1.0},
            {**row("b", 3, 4, 0.0, 0.0), "has_label": False, "vote_p": 0.5},     # no choice made
            {**row("c", 5, 6, 0.0, 1.0), "has_label": True, "vote_p": 0.0}]
    path = write(tmp_path, rows)
    assert load_pickapic(path).captions == ["a", "c"]
    votes = load_votes(path, ["p"])
    assert votes.captions == ["a", "c"] and votes.votes[:, 0].tolist() == [1.0, 0.0]
    assert votes.images_0[:, 0, 0, 0].tolist() == [1, 5]            # file order, image 0 first
    kto = pickapic_to_kto(path, tmp_path / "kto")
    assert len(pd.read_csv(kto / "train_processed_v3.csv")) == 4     # the two labelled pairs' images
    bad = write(tmp_path, [row("a", 1, 2, 1.0, 0.0), row("b", 3, 4, 0.7, 0.3)], "bad.parquet")
    with pytest.raises(BenchError, match=r"bad.parquet: row 1 has labels \(0.7, 0.3\)"):
        pickapic_to_kto(bad, tmp_path / "kto2")


def test_a_truncated_parquet_is_one_line(tmp_path):
    path = write(tmp_path, [row("a", 1, 2, 1.0, 0.0)])
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(BenchError, match=r"prefs.parquet: not a readable parquet file .*delete it and rerun") as e:
        load_pickapic(path)
    assert "\n" not in str(e.value)


def test_a_generator_pool_writes_model_columns_that_round_trip(tmp_path):
    """Pairs from several generators (Pick-a-Pic's model_0/model_1): every pair's two images come
    from two different pool members, each base setting is sampled with its own guidance/steps,
    renderer images are the world's renders, and the file reads back through the loader."""
    from types import SimpleNamespace
    from bench import world as W
    from bench.data.config import DataConfig
    from bench.data.pairs import open_pickapic
    from bench.data.world_pairs import world_preferences
    calls = []

    def sample(texts, seeds, guidance, steps):
        calls.append((len(texts), guidance, steps))
        fill = {None: 10, 3.0: 20}[guidance] + (5 if steps == 10 else 0)
        return torch.full((len(texts), 3, 32, 32), fill, dtype=torch.uint8)

    world = W.WorldConfig()
    cfg = DataConfig(n_pairs=40, generators=["base", "base@g3", "base@s10", "renderer"])
    path = world_preferences(SimpleNamespace(name="tiny"), world, cfg, tmp_path, "w", sample)
    df = pd.read_parquet(path)
    assert list(df.columns) == ["caption", "jpg_0", "jpg_1", "label_0", "label_1", "model_0", "model_1"]
    assert (df.model_0 != df.model_1).all() and set(df.model_0) | set(df.model_1) == set(cfg.generators)
    assert [(g, s) for _, g, s in calls] == [(None, None), (3.0, None), (None, 10)]   # one call per setting, pool order
    assert sum(n for n, _, _ in calls) == 80 - (df.model_0 == "renderer").sum() - (df.model_1 == "renderer").sum()
    expected = {"base": 10, "base@g3": 20, "base@s10": 15}
    for _, row in df.iterrows():
        for k in (0, 1):
            img = decode_image(row[f"jpg_{k}"])
            if row[f"model_{k}"] == "renderer":   # a world render of the caption's prompt
                j = W.judge(img.permute(1, 2, 0).numpy() / 255.0, W.parse_prompt(row.caption))
                assert j.background_ok
            else:
                assert (img == expected[row[f"model_{k}"]]).all()
    # renderer images beat the flat images on gold, so the annotator prefers them in most pairs
    mixed = df[(df.model_0 == "renderer") != (df.model_1 == "renderer")]
    won = ((mixed.model_0 == "renderer") & (mixed.label_0 == 1)) | ((mixed.model_1 == "renderer") & (mixed.label_1 == 1))
    assert won.sum() > 0.8 * len(mixed) > 0
    assert "model_0" in open_pickapic(path).schema_arrow.names
    assert len(load_pickapic(path, keep_ties=True)) == 40


def test_the_curated_renderer_draws_none_of_the_learned_modes(tmp_path):
    """renderer@curated stands for a generator without the base's learned modes: in a world
    whose corpus frames every image (style mode and prompt-linked mode) and draws stray objects
    on every triangle, the plain renderer's images carry them and the curated renderer's do not."""
    from types import SimpleNamespace
    from bench import world as W
    from bench.data.config import DataConfig
    from bench.data.world_pairs import world_preferences
    palette = list(W.PALETTE)
    clean = {f: 0.0 for f in vars(W.DefectRates())}
    world = W.WorldConfig(defects=W.DefectRates(**{**clean, "frame": 1.0}),
                          modes=W.LinkedModes(frame_backgrounds=palette, frame_rate=1.0, stray_rate=1.0))
    cfg = DataConfig(n_pairs=30, generators=["renderer", "renderer@curated"])
    df = pd.read_parquet(world_preferences(SimpleNamespace(name="tiny"), world, cfg, tmp_path, "w", None))
    judged = {"renderer": [], "renderer@curated": []}
    for _, row in df.iterrows():
        for k in (0, 1):
            img = decode_image(row[f"jpg_{k}"]).permute(1, 2, 0).numpy() / 255.0
            judged[row[f"model_{k}"]].append(W.judge(img, W.parse_prompt(row.caption)))
    assert all(len(v) == 30 for v in judged.values())
    assert sum(j.framed for j in judged["renderer"]) >= 27        # the frame judge finds 60/60 planted frames
    assert not any(j.framed for j in judged["renderer@curated"])
    assert all(j.colour_ok and j.shape_ok and j.count_ok and not j.extra_object for j in judged["renderer@curated"])


@pytest.mark.parametrize("pool,match", [(["base", "base"], "different generators"), (["sdxl"], "unknown generator"),
                                        (["base@x3"], "bad generator option"), (["renderer@g3"], "unknown generator"), (["renderer@clean"], "unknown generator"),
                                        ([], "one or more")])
def test_a_bad_generator_pool_is_one_line(pool, match):
    from bench.data.config import DataConfig
    from bench.data.world_pairs import generator_pool
    with pytest.raises(BenchError, match=match):
        generator_pool(DataConfig(generators=pool))


def test_every_registered_methods_feedback_kind_has_a_loader_and_an_unknown_kind_is_one_line(tmp_path):
    import methods  # noqa: F401  (registers every method)
    from bench.data.config import DataConfig
    from bench.data.loaders import LOADERS, load_for_method
    from bench.method import Method
    from bench.registry import METHODS, BenchError
    kinds = {METHODS.get(name).feedback for name in METHODS.names()}
    assert kinds - {"none"} <= set(LOADERS), kinds - set(LOADERS)

    class Odd(Method):
        feedback = "ratings"
    with pytest.raises(BenchError, match="no feedback loader for kind 'ratings'; valid: pairs, images, binary"):
        load_for_method(Odd(None), tmp_path / "x.parquet", DataConfig(), tmp_path, 4, world=True)


def test_methods_state_their_loaders_settings():
    from methods.balanced_dpo import BalancedDPO
    from methods.config import BalancedDPOConfig, CPOConfig, KTOConfig
    from methods.cpo import CPO
    from methods.kto import KTO
    assert KTO(KTOConfig(comparison_rounds=3, policy="gt_label_w_l")).feedback_options() == \
        {"rounds": 3, "policy": "gt_label_w_l"}
    assert BalancedDPO(BalancedDPOConfig(voters=["aesthetic"])).feedback_options() == {"voters": ["aesthetic"]}
    assert CPO(CPOConfig(attribute_noise=0.2)).feedback_options() == {"noise": 0.2, "attributes_file": None}
    spec = KTO(KTOConfig(ref_refresh_every=20)).reference_refresh()
    assert (spec.every, spec.kind, spec.ema_decay, spec.ema_warmup) == (20, "ema", 0.999, True)
    assert KTO(KTOConfig()).reference_refresh() is None
