"""The papers' claims against ours: one table, "claim → paper's figure → ours [95% CI] → verdict",
built only from committed files (the full suite's runs in results/ and paper/<spec>/summary.json), so that it
is regenerated, never typed (`python -m bench claims`, written to paper/claims.md).

A verdict reads the seed-aware 95% CI against the claim's null (0.5 for a win rate, 0 for a
difference): "reproduced" when the whole CI lies on the claimed side, "refuted" when it lies on
the other side, "not shown" when it covers the null. A row whose cell has one training seed only
cannot be a claim about a method and says so.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from bench.registry import BenchError

PROXIES = ("fidelity", "aesthetic", "preference")


@dataclass(frozen=True)
class Claim:
    claim: str
    paper: str               # the paper's figure and where it is from
    spec: str                # paper/<spec>/summary.json holds our cell under `key` ("row|column");
    key: str                 # "suite": the full suite's jobs, key "backbone|method|scorer"
    side: str = "above"      # the claim holds when ours is above (or below) the null
    null: float = 0.5
    compares: tuple[str, ...] = ()   # methods set against each other: their budgets are named if they differ


# Figures from ../shared/reference/field-2026.md and methods.md (each names its paper section).
CLAIMS: list[Claim] = [
    *[Claim(f"DPO beats base ({bb}, gold)",
            "SDXL-DPO vs SDXL: 70.0% (PartiPrompts) and 64.7% (HPSv2 prompts) of human votes "
            "(Wallace et al. 2024, human evaluation)", "suite", f"{bb}|dpo|gold") for bb in
      ("tiny-sd15", "tiny-sd21", "tiny-sdxl")],
    Claim("KTO beats base (tiny-sd15, gold)",
          "Diffusion-KTO vs SD1.5: 86.0 / 85.2 / 87.2% (aesthetic / PickScore / ImageReward) "
          "(Li et al. 2024, win rates on Pick-a-Pic test prompts)", "diffusion_kto", "kto|gold"),
    Claim("KTO beats SFT (tiny-sd15, gold, head to head)",
          "KTO preferred over SFT in the user study (Li et al. 2024, abstract; number not transcribed)",
          "diffusion_kto", "kto vs sft|gold", compares=("kto", "sft")),
    Claim("KTO at least matches DPO (tiny-sd15, gold, head to head)",
          "Diffusion-KTO vs Diffusion-DPO: 74.2 / 61.8 / 78.4% (aesthetic / PickScore / ImageReward) "
          "(Li et al. 2024)", "diffusion_kto", "kto vs dpo|gold", compares=("kto", "dpo")),
    Claim("BalancedDPO beats DPO, win rate averaged over scorers and backbones",
          "+15% (Pick-a-Pic), +7.1% (PartiPrompts), +10.3% (HPD) average win rate over "
          "Diffusion-DPO (Tamboli et al., v1 abstract)", "balanced_dpo_gain", "mean over backbones|gain",
          null=0.0, compares=("balanced_dpo", "dpo")),
    Claim("CPO lowers negative attributes per image (tiny-sd15, vs base)",
          "fewer negative attributes than the baselines (Meng et al. 2026, painting domain; number "
          "not transcribed)", "cpo_attributes", "cpo|n_negative_delta", side="below", null=0.0),
]


def verdict(value: float, low: float, high: float, side: str, null: float, seed_aware: bool) -> str:
    if any(math.isnan(x) for x in (value, low, high)):
        return "no estimate"
    if not seed_aware:
        return "one training seed: not a claim"
    above, below = low > null, high < null
    if side == "below":
        above, below = below, above
    return "reproduced" if above else "refuted" if below else "not shown (CI covers the null)"


def _cell(c: dict, signed: bool) -> str:
    f = "{:+.3f}" if signed else "{:.3f}"
    return f"{f.format(c['value'])} [{f.format(c['ci_low'])}, {f.format(c['ci_high'])}]"


def _summary(paper_dir: Path, spec: str) -> tuple[dict, dict]:
    """A spec's cells and, where its methods trained for different numbers of steps, their budgets."""
    path = paper_dir / spec / "summary.json"
    if not path.is_file():
        raise BenchError(f"no {path}; run `python -m bench paper {spec}` first")
    summary = json.loads(path.read_text())
    return summary["ours"], summary.get("budgets", {})


def _default_config_cell(key: str) -> dict:
    """A method's win rate vs base at its default config on one backbone over training seeds
    0-2: the suite's jobs, found by their job directories as `bench paper` finds a spec's."""
    from bench.paper import spec_job_dirs
    from bench.results import is_complete, leaderboard, load_runs
    backbone, method, scorer = key.split("|")
    dirs = spec_job_dirs([f"method={method}", f"backbone={backbone}"], {"seed": ["0", "1", "2"]}, [])
    missing = [d for d in dirs if not is_complete(d)]
    if missing:
        raise BenchError(f"{len(missing)} of the {method} jobs on {backbone} are missing (e.g. {missing[0]}); "
                         "run `python -m bench run +suite=full` first")
    r = leaderboard(runs=load_runs(None, [], dirs=dirs)).iloc[0]
    return {"value": r[f"{scorer}_win_rate"], "ci_low": r[f"{scorer}_ci_low"], "ci_high": r[f"{scorer}_ci_high"],
            "seed_aware": r.ci_kind == "seeds x prompts"}


def rows(paper_dir: Path) -> list[list[str]]:
    out, summaries = [], {}
    for c in CLAIMS:
        if c.spec == "suite":
            cell, budgets = _default_config_cell(c.key), {}
        else:
            if c.spec not in summaries:                   # several claims read one spec's summary
                summaries[c.spec] = _summary(paper_dir, c.spec)
            ours, budgets = summaries[c.spec]
            if c.key not in ours:
                raise BenchError(f"paper/{c.spec}/summary.json has no cell {c.key!r}; regenerate it "
                                 f"with `python -m bench paper {c.spec}`")
            cell = ours[c.key]
        v = verdict(cell["value"], cell["ci_low"], cell["ci_high"], c.side, c.null, cell["seed_aware"])
        ours_txt = _cell(cell, signed=c.null == 0.0)
        steps = {m: budgets[m] for m in c.compares if m in budgets}
        if len(set(map(str, steps.values()))) > 1:
            ours_txt += " at unequal budgets (" + ", ".join(f"{m} {n} steps" for m, n in steps.items()) + ")"
        out.append([c.claim, c.paper, ours_txt, v])
    out.extend(reward_hacking(_summary(paper_dir, "balanced_dpo_consensus")[0]))
    return out


def reward_hacking(ours: dict) -> list[list[str]]:
    """One row per proxy: DPO on that proxy's labels alone (BalancedDPO with one voter) raises the
    proxy, while gold or another proxy falls (the lowest of them is shown)."""
    out = []
    for p in PROXIES:
        label = f'balanced_dpo (voters=["{p}"])'
        if f"{label}|{p}" not in ours:
            continue
        own = ours[f"{label}|{p}"]
        others = {s: ours[f"{label}|{s}"] for s in ("gold",) + PROXIES if s != p and f"{label}|{s}" in ours}
        worst = min(others, key=lambda s: others[s]["ci_high"])
        rises = verdict(own["value"], own["ci_low"], own["ci_high"], "above", 0.5, own["seed_aware"])
        falls = verdict(others[worst]["value"], others[worst]["ci_low"], others[worst]["ci_high"], "below",
                        0.5, others[worst]["seed_aware"])
        v = ("reproduced" if rises == falls == "reproduced"
             else "refuted" if rises == "refuted" or all(o["ci_low"] > 0.5 for o in others.values())
             else "not shown (CI covers the null)")
        out.append([f"training on the {p} proxy alone raises it while gold or another proxy falls (reward hacking)",
                    "optimising one metric trades off the others (Tamboli et al., Sec. 1: the motivation "
                    "of BalancedDPO)", f"{p} {_cell(own, False)}; {worst} {_cell(others[worst], False)}", v])
    return out


def write_claims(paper_dir: Path = Path("paper"), out: Path | None = None) -> Path:
    """paper/claims.md from the committed summaries and the suite's jobs (run from the repository
    root: job directories are named relative to it, as `bench paper` names them)."""
    from bench import world as W
    from bench.files import write_text
    table = rows(paper_dir)
    world = ("world v2 (learned modes; pairs from a generator pool)" if W.WorldConfig().modes.frame_rate > 0
             else "world v1 (no learned modes; on-policy pairs)")
    lines = [f"# The papers' claims on the shapes world: {world}", "",
             "Generated by `python -m bench claims` from the full suite's runs and `paper/*/summary.json`;",
             "every cell is a win rate vs base (or a difference) with its seed-aware 95% CI over training",
             "seeds 0–2 and eval prompts (bench.statistics). Verdict: reproduced when the CI lies on the",
             "claimed side of 0.5 (or 0), refuted when it lies on the other side. The papers measured real",
             "models with humans or learned scorers; ours are tiny backbones judged by the world's gold",
             "judge: compare directions, not magnitudes.", "",
             "| claim | paper's figure | ours [95% CI] | verdict |", "|---|---|---|---|"]
    lines += ["| " + " | ".join(r) + " |" for r in table]
    out = out or paper_dir / "claims.md"
    write_text(out, "\n".join(lines) + "\n")
    return out
