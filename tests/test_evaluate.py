"""bench.evaluate: eval sets (the statistics moved to tests/test_statistics.py)."""


def test_spread_takes_evenly_spaced_items_in_order():
    from bench.evaluate import spread
    assert spread(list(range(10)), 4) == [0, 2, 5, 7]            # i * 10 // 4
    assert spread(list(range(3)), 5) == [0, 1, 2]
    assert spread(list(range(3)), 0) == []


def test_max_prompts_covers_every_count():
    """The world's splits list every one-object prompt first; a prefix would test one count."""
    from bench import world as W
    from bench.evaluate import EvalConfig, eval_set
    split = W.split_prompts(W.WorldConfig())["eval"]
    assert {p.count for p in split[:3]} == {1}
    chosen = eval_set(EvalConfig(max_prompts=3), W.WorldConfig())
    assert sorted(p.count for p in chosen) == [1, 2, 3]
    assert [p.text for p in chosen] == [split[0].text, split[18].text, split[36].text]
