"""Dataset loaders on fixture files written here in each dataset's published format, each with a
tie, a loser-first row and a corrupt image: ties dropped (kept on request), winner first, the
corrupt row named by its index and skipped or rejected, nothing else lost."""
import json
import logging

import pandas as pd
import pytest
import torch

from bench.data import real as D
from bench.data.pairs import encode_png
from bench.registry import BenchError


def img(v: int) -> torch.Tensor:
    return torch.full((3, 8, 8), v, dtype=torch.uint8)


def png(v: int) -> bytes:
    return encode_png(img(v))


def pick_row(caption, a, b, l0, l1, jpg_1=None, has_label=True):
    return {"caption": caption, "jpg_0": png(a), "jpg_1": jpg_1 if jpg_1 is not None else png(b),
            "label_0": l0, "label_1": l1, "has_label": has_label, "best_image_uid": "u", "ranking_id": 7}


@pytest.fixture
def pickapic(tmp_path):
    """Pick-a-Pic v2's HF layout: <root>/data/<split>-NNNNN-of-NNNNN-<hash>.parquet, two train
    shards (rows 0-2 and 3-5; row 5 has no label) and a test_unique shard."""
    data = tmp_path / "data"
    data.mkdir()
    pd.DataFrame([pick_row("first wins", 10, 20, 1.0, 0.0), pick_row("tie", 30, 40, 0.5, 0.5),
                  pick_row("second wins", 50, 60, 0.0, 1.0)]).to_parquet(data / "train-00000-of-00002-ab12.parquet")
    pd.DataFrame([pick_row("corrupt", 70, 0, 1.0, 0.0, jpg_1=b"\xff\xd8 not a jpeg"),
                  pick_row("last", 80, 90, 0.0, 1.0),
                  pick_row("unlabelled", 1, 2, 0.0, 0.0, has_label=False)]).to_parquet(
        data / "train-00001-of-00002-cd34.parquet")
    pd.DataFrame([pick_row(c, 1, 2, 1.0, 0.0) for c in ("a fox", "a cube", "a fox")]).to_parquet(
        data / "test_unique-00000-of-00001-ef56.parquet")
    return tmp_path


def test_pickapic_v2_streams_shards_winner_first_ties_dropped(pickapic, caplog):
    skipped = []
    with caplog.at_level(logging.WARNING):
        pairs = list(D.pickapic_v2(pickapic, "train", on_corrupt="skip", skipped=skipped))
    assert [(p.index, p.caption) for p in pairs] == [(0, "first wins"), (2, "second wins"), (4, "last")]
    assert [int(p.winner[0, 0, 0]) for p in pairs] == [10, 60, 90]
    assert [int(p.loser[0, 0, 0]) for p in pairs] == [20, 50, 80]
    assert skipped == [3]
    assert "train-00001-of-00002-cd34.parquet: row 3 has an undecodable image (UnidentifiedImageError); skipped" \
        in caplog.text


def test_pickapic_v2_keeps_ties_on_request(pickapic):
    pairs = list(D.pickapic_v2(pickapic, "train", keep_ties=True, on_corrupt="skip"))
    assert [(p.index, p.tie) for p in pairs] == [(0, False), (1, True), (2, False), (4, False)]


def test_pickapic_v2_rejects_a_corrupt_row_by_default(pickapic):
    with pytest.raises(BenchError, match=r"train-00001-of-00002-cd34\.parquet: row 3 has an undecodable image "
                                         r"\(\w+\); fix or drop that row, or read with on_corrupt='skip'") as e:
        list(D.pickapic_v2(pickapic, "train"))
    assert "\n" not in str(e.value)


def test_load_pairs_stops_streaming_at_max_pairs(pickapic):
    # the corrupt row 3 is never read: streaming stops after two pairs
    d = D.load_pairs("pickapic_v2", pickapic, "train", max_pairs=2)
    assert d.captions == ["first wins", "second wins"] and d.winners[:, 0, 0, 0].tolist() == [10, 60]
    assert d.ties.tolist() == [False, False]
    with pytest.raises(BenchError, match=r"no 'validation' shards under .* \(expected data/validation-\*\.parquet\)"):
        D.load_pairs("pickapic_v2", pickapic, "validation")


def write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


@pytest.fixture
def hpd(tmp_path):
    """HPD v2's layout (tgxs002/HPSv2 README): train.json, test.json, train/ and test/ images."""
    for split, values in (("train", range(10, 90, 10)), ("test", (100, 110, 120, 130))):
        (tmp_path / split).mkdir()
        for v in values:
            (tmp_path / split / f"{v}.png").write_bytes(png(v))
    (tmp_path / "train" / "bad.png").write_bytes(b"\x89PNG broken")
    write_json(tmp_path / "train.json", [
        {"prompt": "first preferred", "file_path": ["10.png", "20.png"], "human_preference": [1, 0]},
        {"prompt": "second preferred", "file_path": ["30.png", "40.png"], "human_preference": [0, 1]},
        {"prompt": "no preference", "file_path": ["50.png", "60.png"], "human_preference": [0, 0]},
        {"prompt": "corrupt", "file_path": ["bad.png", "70.png"], "human_preference": [1, 0]},
        {"prompt": "last", "file_path": ["80.png", "10.png"], "human_preference": [0, 1]}])
    write_json(tmp_path / "test.json", [
        {"prompt": "ranked", "image_path": ["100.png", "110.png", "120.png", "130.png"], "rank": [2, 1, 3, 2],
         "raw_annotations": [{"rank": [2, 1, 3, 2], "user_hash": "x"}]}])
    return tmp_path


def test_hpdv2_train_pairs(hpd, caplog):
    skipped = []
    with caplog.at_level(logging.INFO):
        pairs = list(D.hpdv2(hpd, "train", on_corrupt="skip", skipped=skipped))
    assert "record 2 prefers no image over another ([0, 0]); its 1 pairs are ties, dropped" in caplog.text
    assert [(p.index, p.caption) for p in pairs] == [(0, "first preferred"), (1, "second preferred"), (4, "last")]
    assert [int(p.winner[0, 0, 0]) for p in pairs] == [10, 40, 10]
    assert [int(p.loser[0, 0, 0]) for p in pairs] == [20, 30, 80]
    assert skipped == [3] and "train.json (bad.png): row 3 has an undecodable image" in caplog.text
    ties = [p for p in D.hpdv2(hpd, "train", keep_ties=True, on_corrupt="skip") if p.tie]
    assert [(p.index, p.caption) for p in ties] == [(2, "no preference")]
    with pytest.raises(BenchError, match=r"train\.json \(bad\.png\): row 3 has an undecodable image"):
        list(D.hpdv2(hpd, "train"))


def test_hpdv2_test_ranks_give_every_pair_lower_rank_first(hpd):
    pairs = list(D.hpdv2(hpd, "test"))
    # ranks 2, 1, 3, 2 for images 100, 110, 120, 130: the equal ranks (100, 130) are a tie
    assert sorted((int(p.winner[0, 0, 0]), int(p.loser[0, 0, 0])) for p in pairs) == \
        [(100, 120), (110, 100), (110, 120), (110, 130), (130, 120)]
    tie = [p for p in D.hpdv2(hpd, "test", keep_ties=True) if p.tie]
    assert len(tie) == 1 and {int(tie[0].winner[0, 0, 0]), int(tie[0].loser[0, 0, 0])} == {100, 130}


def test_hpdv2_malformed_record_is_named(hpd):
    write_json(hpd / "train.json", [{"prompt": "ok", "file_path": ["10.png", "20.png"], "human_preference": [1, 0]},
                                    {"prompt": "two winners", "file_path": ["10.png", "20.png", "30.png"],
                                     "human_preference": [1, 1, 0]}])
    with pytest.raises(BenchError, match=r"train\.json: record 1 is malformed; each needs prompt, file_path and "
                                         r"human_preference \(one 1, rest 0\)"):
        list(D.hpdv2(hpd, "train"))


# ----------------------------------------------------------------------------- prompt sets

def test_partiprompts_tsv(tmp_path):
    path = tmp_path / "PartiPrompts.tsv"
    path.write_text("Prompt\tCategory\tChallenge\tNote\nbond\tAbstract\tBasic\t\n"
                    "a photo of a cat\tAnimals\tBasic\tnote\n")
    items = D.load_prompt_set("partiprompts", path)
    assert [(p.id, p.text, p.category) for p in items] == [("parti/0000", "bond", "Abstract"),
                                                           ("parti/0001", "a photo of a cat", "Animals")]
    # quotes are text in a TSV: kept as written, and an unmatched one merges no rows
    path.write_text('Prompt\tCategory\n"G I G G L E" painted in thick colorful lines\tIllustrations\n'
                    'a "quoted word\tAbstract\nthird\tAbstract\n')
    assert [p.text for p in D.load_prompt_set("partiprompts", path)] == [
        '"G I G G L E" painted in thick colorful lines', 'a "quoted word', "third"]
    path.write_text("Text\tCategory\nbond\tAbstract\n")
    with pytest.raises(BenchError, match=r"no 'Prompt' column \(found \['Text', 'Category'\]\)"):
        D.load_prompt_set("partiprompts", path)


def test_drawbench_csv_and_json(tmp_path):
    csv_path = tmp_path / "drawbench.csv"
    csv_path.write_text('Prompts,Category\n"A red colored car.",Colors\n"Two cats, one dog.",Counting\n')
    assert [(p.text, p.category) for p in D.load_prompt_set("drawbench", csv_path)] == [
        ("A red colored car.", "Colors"), ("Two cats, one dog.", "Counting")]
    write_json(tmp_path / "drawbench.json", ["A red colored car.", "Two cats, one dog."])
    assert [p.id for p in D.load_prompt_set("drawbench", tmp_path / "drawbench.json")] == [
        "drawbench/00000", "drawbench/00001"]


def test_hpsv2_benchmark_four_styles(tmp_path):
    for style in D.HPS_STYLES:
        write_json(tmp_path / f"{style}.json", [f"{style} one", f"{style} two"])
    items = D.load_prompt_set("hpsv2_benchmark", tmp_path)
    assert len(items) == 8 and items[0].id == "anime/00000" and items[-1].id == "photo/00001"
    assert [p.category for p in items[::2]] == list(D.HPS_STYLES)
    (tmp_path / "photo.json").unlink()
    with pytest.raises(BenchError, match=r"missing photo\.json; the HPSv2 benchmark has 4 styles"):
        D.load_prompt_set("hpsv2_benchmark", tmp_path)


def test_pickapic_test_unique_captions(pickapic):
    items = D.load_prompt_set("pickapic_test_unique", pickapic)
    assert [(p.id, p.text) for p in items] == [("pickapic-test_unique/000", "a fox"),
                                               ("pickapic-test_unique/001", "a cube")]


def test_prompt_set_errors(tmp_path):
    with pytest.raises(BenchError, match=r"unknown eval.prompt_set 'parti'; valid: world, partiprompts, drawbench"):
        D.load_prompt_set("parti", tmp_path)
    with pytest.raises(BenchError, match=r"eval.prompt_path is not set; point it at PartiPrompts.tsv"):
        D.load_prompt_set("partiprompts", None)
