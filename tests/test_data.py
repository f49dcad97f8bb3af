
import numpy as np
import pandas as pd
import pytest
import torch

from bench.data import encode_png, load_pickapic
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
    from bench.feedback import load_votes, pickapic_to_kto
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
