"""The claims table: verdicts from CIs, the reward-hacking rows, and its errors."""
import json

import pytest

from bench.claims import reward_hacking, verdict, write_claims
from bench.registry import BenchError


@pytest.mark.parametrize("cell,side,null,expected", [
    ((0.55, 0.52, 0.58), "above", 0.5, "reproduced"),
    ((0.45, 0.42, 0.48), "above", 0.5, "refuted"),
    ((0.51, 0.49, 0.53), "above", 0.5, "not shown (CI covers the null)"),
    ((-0.1, -0.15, -0.05), "below", 0.0, "reproduced"),      # a fall in negative attributes
    ((0.1, 0.05, 0.15), "below", 0.0, "refuted"),
    ((0.5, 0.5, 0.5), "above", 0.5, "not shown (CI covers the null)"),
])
def test_verdict_reads_the_ci_against_the_null(cell, side, null, expected):
    assert verdict(*cell, side, null, seed_aware=True) == expected


def test_a_one_seed_cell_or_a_missing_estimate_is_no_claim():
    assert verdict(0.6, 0.55, 0.65, "above", 0.5, seed_aware=False) == "one training seed: not a claim"
    assert verdict(float("nan"), 0.5, 0.6, "above", 0.5, seed_aware=True) == "no estimate"


def _c(v, lo, hi):
    return {"value": v, "ci_low": lo, "ci_high": hi, "seed_aware": True}


def test_reward_hacking_needs_the_proxy_up_and_gold_or_another_proxy_down():
    lab = 'balanced_dpo (voters=["{}"])|{}'
    ours = {lab.format("aesthetic", "aesthetic"): _c(0.60, 0.55, 0.65),     # its own proxy rises ...
            lab.format("aesthetic", "gold"): _c(0.47, 0.45, 0.49),          # ... gold falls
            lab.format("aesthetic", "fidelity"): _c(0.51, 0.48, 0.54),
            lab.format("aesthetic", "preference"): _c(0.50, 0.47, 0.53),
            lab.format("fidelity", "fidelity"): _c(0.56, 0.53, 0.59),       # rises, nothing falls
            lab.format("fidelity", "gold"): _c(0.52, 0.49, 0.55),
            lab.format("fidelity", "aesthetic"): _c(0.50, 0.48, 0.52),
            lab.format("fidelity", "preference"): _c(0.53, 0.51, 0.55),
            lab.format("preference", "preference"): _c(0.45, 0.42, 0.48),   # does not even rise
            lab.format("preference", "gold"): _c(0.52, 0.49, 0.55)}
    rows = {r[0].split(" proxy")[0].split("the ")[-1]: r for r in reward_hacking(ours)}
    assert list(rows) == ["fidelity", "aesthetic", "preference"]
    assert rows["aesthetic"][3] == "reproduced"
    assert rows["aesthetic"][2] == "aesthetic 0.600 [0.550, 0.650]; gold 0.470 [0.450, 0.490]"
    assert rows["fidelity"][3] == "not shown (CI covers the null)"
    assert rows["preference"][3] == "refuted"


def test_a_missing_summary_is_one_line_naming_the_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    import bench.claims as C
    monkeypatch.setattr(C, "CLAIMS", [c for c in C.CLAIMS if c.spec != "suite"])
    (tmp_path / "paper" / "diffusion_kto").mkdir(parents=True)
    (tmp_path / "paper" / "diffusion_kto" / "summary.json").write_text(json.dumps({"ours": {}}))
    with pytest.raises(BenchError, match=r"paper/diffusion_kto/summary.json has no cell 'kto\|gold'; regenerate"):
        write_claims(tmp_path / "paper")
    monkeypatch.setattr(C, "CLAIMS", [c for c in C.CLAIMS if c.spec == "cpo_attributes"])
    with pytest.raises(BenchError, match="python -m bench paper cpo_attributes"):
        write_claims(tmp_path / "paper")
    assert not (tmp_path / "paper" / "claims.md").exists()


def test_a_comparison_at_unequal_budgets_names_them(tmp_path, monkeypatch):
    """A claim that sets two methods against each other says so when the spec's summary records
    different training budgets for them (bench.paper writes `budgets` only when they differ)."""
    import bench.claims as C
    monkeypatch.chdir(tmp_path)
    kto_claims = [c for c in C.CLAIMS if c.spec == "diffusion_kto"]
    monkeypatch.setattr(C, "CLAIMS", kto_claims)
    monkeypatch.setattr(C, "reward_hacking", lambda ours: [])
    cells = {"kto|gold": _c(0.5, 0.47, 0.53), "kto vs sft|gold": _c(0.52, 0.49, 0.55),
             "kto vs dpo|gold": _c(0.40, 0.35, 0.45)}
    d = tmp_path / "paper" / "diffusion_kto"
    d.mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps({"ours": cells, "budgets": {"dpo": 1000, "kto": 300, "sft": 300}}))
    (tmp_path / "paper" / "balanced_dpo_consensus").mkdir()
    (tmp_path / "paper" / "balanced_dpo_consensus" / "summary.json").write_text(json.dumps({"ours": {}}))
    by_claim = {r[0]: r for r in C.rows(tmp_path / "paper")}
    assert by_claim["KTO at least matches DPO (tiny-sd15, gold, head to head)"][2] == \
        "0.400 [0.350, 0.450] at unequal budgets (kto 300 steps, dpo 1000 steps)"
    assert by_claim["KTO beats SFT (tiny-sd15, gold, head to head)"][2] == "0.520 [0.490, 0.550]"   # equal budgets
    (d / "summary.json").write_text(json.dumps({"ours": cells}))                 # no budgets: all equal
    assert all("unequal" not in r[2] for r in C.rows(tmp_path / "paper"))
