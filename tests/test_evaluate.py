import numpy as np
import pytest
from scipy import stats

from bench.evaluate import outcomes, win_rate


def test_outcomes_with_tie_tolerance():
    o = outcomes(np.array([1.0, 1.0, 1.0]), np.array([0.5, 1.05, 2.0]), tie_tol=0.1)
    assert o.tolist() == [1.0, 0.5, 0.0]
    assert outcomes(np.array([1.0]), np.array([2.0]), 0.0, higher_is_better=False).tolist() == [1.0]


def test_all_wins_gives_degenerate_interval():
    r = win_rate([2.0] * 6, [1.0] * 6, ["a", "a", "b", "b", "c", "c"], n_bootstrap=1000)
    assert (r["win_rate"], r["ci_low"], r["ci_high"]) == (1.0, 1.0, 1.0)
    assert (r["wins"], r["ties"], r["losses"]) == (6, 0, 0)
    assert abs(r["sign_test_p"] - 2 / 2 ** 6) < 1e-12


def test_averages_within_prompt_before_across_prompts():
    # prompt a: 3 wins of 3 -> 1.0; prompt b: 1 loss -> 0.0; pooled pairs would give 0.75
    r = win_rate([1, 1, 1, 0], [0, 0, 0, 1], ["a", "a", "a", "b"], n_bootstrap=500)
    assert r["win_rate"] == 0.5 and r["n_prompts"] == 2


def test_bootstrap_ci_matches_normal_approximation():
    # 400 prompts, 280 won: mean 0.7, se = sqrt(.7 * .3 / 400) = 0.0229 -> 95% CI ~ [0.655, 0.745]
    a = np.array([1.0] * 280 + [0.0] * 120)
    r = win_rate(a, np.full(400, 0.5), np.arange(400), n_bootstrap=10000, seed=0)
    se = np.sqrt(0.7 * 0.3 / 400)
    assert abs(r["ci_low"] - (0.7 - 1.96 * se)) < 0.006
    assert abs(r["ci_high"] - (0.7 + 1.96 * se)) < 0.006
    assert r["sign_test_p"] == pytest.approx(stats.binomtest(280, 400, 0.5).pvalue)


def test_sign_test_excludes_ties():
    r = win_rate([1] * 9 + [0] + [5] * 4, [0] * 9 + [1] + [5] * 4, np.arange(14), n_bootstrap=100)
    assert (r["wins"], r["ties"], r["losses"]) == (9, 4, 1)
    # two-sided: 2 * P(X >= 9 | n=10, p=.5) = 2 * 11 / 1024
    assert abs(r["sign_test_p"] - 22 / 1024) < 1e-12


def test_seeded_bootstrap_is_reproducible():
    rng = np.random.default_rng(0)
    a, b = rng.random(50), rng.random(50)
    ids = np.repeat(np.arange(10), 5)
    assert win_rate(a, b, ids, seed=3) == win_rate(a, b, ids, seed=3)


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
