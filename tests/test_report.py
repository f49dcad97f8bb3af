"""bench.report: `report` on a results directory with known values (tables, leaderboard, figures,
image grids), bad result files, report.html in headless Chromium, and readable figures and grids
with many configurations. The fake jobs written here are reused by tests/test_paper.py."""
import json
import logging
import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from bench.cli import main
from bench.report import report
from bench.report.figures import SHORT_LABEL, _save, short_labels, winrate_figure
from bench.report.grids import GRID_COLUMNS, grid_figure
from bench.report.tables import Cell, best_separated
from bench.statistics import win_rate
from bench.results import load_runs, write_job, write_sample_sheet

N_PROMPTS, N_EVAL_SEEDS, N_BOOT = 10, 2, 2000
SCORERS = {"gold": {"higher_is_better": True, "tie_tolerance": 0.1},
           "aesthetic": {"higher_is_better": True, "tie_tolerance": 0.1}}
EVAL = {"split": "eval", "seeds_per_prompt": N_EVAL_SEEDS, "n_bootstrap": N_BOOT, "bootstrap_seed": 0, "ci": 0.95,
        "scorers": list(SCORERS)}
PROMPTS = [f"p{i}" for i in range(N_PROMPTS)]


def outcome_column(wins: set, ties: set = frozenset()):
    """Model scores for every (prompt, eval seed): +1 over base if the prompt is in `wins`,
    +0.05 (within the tie tolerance) if in `ties`, else -1; base scores are 0."""
    return np.array([1.0 if i in wins else 0.05 if i in ties else -1.0
                     for i in range(N_PROMPTS) for _ in range(N_EVAL_SEEDS)])


def fake_job(root: Path, method: str, seed: int, gold: np.ndarray, aesthetic: np.ndarray,
             method_cfg: dict | None = None, history=None, samples: bool = True, name: str | None = None) -> Path:
    """A job directory written by the real writer (bench.results.write_job) with known scores."""
    rows = [(p, s) for p in PROMPTS for s in range(N_EVAL_SEEDS)]
    df = pd.DataFrame({"prompt_id": [p for p, _ in rows], "prompt": [f"prompt {p}" for p, _ in rows],
                       "seed": [s for _, s in rows]})
    for n, v in (("gold", gold), ("aesthetic", aesthetic)):
        df[n], df[f"base_{n}"] = v.astype(np.float32), np.zeros(len(rows), np.float32)
    df["blurred"], df["base_blurred"] = gold < 0, np.ones(len(rows), bool)
    df["colour_ok"], df["base_colour_ok"] = gold > 0, np.zeros(len(rows), bool)
    df["n_negative"], df["base_n_negative"] = (gold < 0).astype(np.int64), np.full(len(rows), 2, np.int64)
    df["fully_correct"], df["base_fully_correct"] = gold > 0, np.zeros(len(rows), bool)
    identity = {"backbone": {"name": "tiny-sd15"}, "method": {"name": method, **(method_cfg or {})},
                "data": {"n_pairs": 64}, "train": {"steps": 10, "finetune": "full"}, "eval": EVAL,
                "world": {"image_size": 8}, "seed": seed}
    scorers = {}
    for n, sc in SCORERS.items():
        st = win_rate(df[n], df[f"base_{n}"], df["prompt_id"], sc["tie_tolerance"], True)
        scorers[n] = {**sc, "mean": float(df[n].mean()), "std": 1.0, "n": len(df),
                      "base_mean": 0.0, "vs_base": st}
    result = {"job": f"{method}{seed}", "backbone": "tiny-sd15", "method": method, "identity": identity,
              "config": identity, "provenance": {"git_sha": "0123456789abcdef", "git_dirty": False},
              "wall_s": {"total": 10.0 + seed}, "budget": {"steps": 10, "batch_size": 4, "examples": 40},
              "data": {}, "scorers": scorers, "attributes": {}, "train_history": history or []}
    path = root / "runs" / (name or f"tiny-sd15-{method}-{abs(hash((method, seed, json.dumps(method_cfg))))%10**8}")
    write_job(path, result, df, "{}\n")
    if samples:
        g = torch.Generator().manual_seed(0)
        base = torch.randint(0, 256, (len(df), 3, 8, 8), dtype=torch.uint8, generator=g)
        model = torch.randint(0, 256, (len(df), 3, 8, 8), dtype=torch.uint8, generator=g)
        write_sample_sheet(path, model, base, df["prompt_id"].tolist(), df["prompt"].tolist(),
                           df["seed"].tolist(), n_prompts=4)
    return path


def dpo_history(offset):
    return [{"step": s, "loss": 0.69 - 0.01 * s + offset, "implicit_acc": 0.5 + 0.01 * s,
             "reward_margin": 0.1 * s} for s in (1, 2, 3, 4)]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("report-input") / "results"
    ties = np.full(N_PROMPTS * N_EVAL_SEEDS, 0.05)
    fake_job(root, "base", 0, np.zeros(N_PROMPTS * N_EVAL_SEEDS), np.zeros(N_PROMPTS * N_EVAL_SEEDS))
    # dpo, beta 5000: seed 0 wins prompts 0-7 (0.8), seed 1 wins prompts 0-5 (0.6): pooled 0.7, W/T/L 28/0/12
    fake_job(root, "dpo", 0, outcome_column(set(range(8))), ties, {"beta": 5000.0}, dpo_history(0))
    fake_job(root, "dpo", 1, outcome_column(set(range(6))), ties, {"beta": 5000.0}, dpo_history(0.1))
    # dpo, beta 2500: wins prompts 0-6 (0.7), gold CIs overlap, so no bold in the gold column
    fake_job(root, "dpo", 0, outcome_column(set(range(7))), ties, {"beta": 2500.0}, dpo_history(0.2))
    # sft: gold 0.3; aesthetic wins every pair (1.0 [1.0, 1.0]) -> separated from the dpo rows' 0.5 -> bold
    fake_job(root, "sft", 0, outcome_column({0, 1, 2}), np.ones(N_PROMPTS * N_EVAL_SEEDS),
             history=[{"step": s, "loss": 0.1} for s in (1, 2)])
    # a corrupt result.json and a job without scores.parquet: each named in one line, left out
    bad = root / "runs" / "tiny-sd15-dpo-corrupt"
    bad.mkdir(parents=True)
    (bad / "result.json").write_text("{not json")
    noscores = fake_job(root, "sft", 7, outcome_column(set()), ties, name="tiny-sd15-sft-noscores")
    (noscores / "scores.parquet").unlink()
    return root


def one_seed_ci(per_prompt):
    """The documented one-seed statistic, computed here by hand: t interval on the per-prompt means,
    clipped to [0, 1]."""
    x = np.asarray(per_prompt, float)
    h = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return max(0.0, x.mean() - h), min(1.0, x.mean() + h)


# dpo beta=5000 pools two seeds: the 2 x 10 matrix of tests/test_statistics.py (TWO_SEEDS), whose
# hand-computed variance of the mean is 0.023333 on 3.965 Satterthwaite df
DPO_VAR, DPO_DF = 0.46666667 / 20, 3.965035


@pytest.fixture(scope="module")
def rep(results, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return report(results, out)


def md_rows(path: Path, table: int = 0) -> dict[str, list[str]]:
    """Rows (first cell -> the rest) of the `table`-th Markdown table in the file."""
    rows = {}
    block = path.read_text().split("### ")[table + 1]
    lines = [ln for ln in block.splitlines() if ln.startswith("|")]
    for line in lines[2:]:                                   # after the header and the |---| line
        if line.startswith("| "):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            rows[cells[0]] = cells[1:]
    return rows


def test_winrate_table_numbers_and_cis(rep):
    rows = md_rows(rep.out / "tables" / "winrates.md")
    assert set(rows) == {"dpo (beta=2500.0)", "dpo (beta=5000.0)", "sft"}     # base is the reference, not a row
    assert [rows[k][0] for k in ("dpo (beta=5000.0)", "dpo (beta=2500.0)", "sft")] == ["2", "1", "1"]   # seeds
    lo = 0.7 - stats.t.ppf(0.975, DPO_DF) * np.sqrt(DPO_VAR)                    # seed-aware, two seeds
    assert rows["dpo (beta=5000.0)"][1] == f"0.700 [{lo:.3f}, 1.000]"
    lo, hi = one_seed_ci([1] * 7 + [0] * 3)
    assert rows["dpo (beta=2500.0)"][1] == f"0.700 [{lo:.3f}, {hi:.3f}]"
    lo, hi = one_seed_ci([1] * 3 + [0] * 7)
    assert rows["sft"][1] == f"0.300 [{lo:.3f}, {hi:.3f}]"
    # sft wins every aesthetic pair, a CI separated from the dpo rows' 0.5 ties, but on one training
    # seed: a single run is never marked as the best method
    assert rows["sft"][2] == "1.000 [1.000, 1.000]"
    assert rows["dpo (beta=5000.0)"][2] == "0.500 [0.500, 0.500]"
    assert not any("**" in c for r in rows.values() for c in r)
    tex = (rep.out / "tables" / "winrates.tex").read_text()
    assert "1.000 [1.000, 1.000]" in tex and "dpo (beta=5000.0)" in tex and "\\begin{tabular}" in tex
    assert "one seed (seeds = 1) it covers prompts only" in (rep.out / "tables" / "winrates.md").read_text()


def test_best_is_bold_only_over_several_seeds():
    sep = [Cell(0.9, 0.8, 1.0), Cell(0.5, 0.4, 0.6)]
    assert best_separated(sep) == 0
    assert best_separated([Cell(0.9, 0.8, 1.0, seed_aware=False), Cell(0.5, 0.4, 0.6)]) is None
    assert best_separated([Cell(0.9, 0.55, 1.0), Cell(0.5, 0.4, 0.6)]) is None          # overlap


def test_leaderboard_columns(rep):
    lb = pd.read_csv(rep.out / "leaderboard.csv")
    assert len(lb) == 4                                                      # base, dpo x 2 configs, sft
    dpo = lb[lb.label == "dpo (beta=5000.0)"].iloc[0]
    assert dpo.gold_win_rate == pytest.approx(0.7) and dpo.gold_wtl == "28/0/12"
    assert dpo.seeds == "0,1" and dpo.n_jobs == 2 and dpo.budget_examples == 40
    assert dpo.n_seeds == 2 and dpo.ci_kind == "seeds x prompts" and dpo.gold_per_seed == "0.800 0.600"
    assert dpo.gold_seed_sd == pytest.approx(0.1414, abs=1e-4)
    assert dpo.gold_p == pytest.approx(2 * stats.t.sf(0.2 / np.sqrt(DPO_VAR), DPO_DF), abs=1e-4)
    assert dpo.aesthetic_p == 1.0 and "gold_sign_p" not in lb
    sft = lb[lb.label == "sft"].iloc[0]
    assert sft.n_seeds == 1 and sft.ci_kind == "one seed: prompts only" and np.isnan(sft.gold_seed_sd)
    # sft wins every aesthetic pair (p = 0) but on one seed: not a significant claim about the method
    assert sft.aesthetic_p == 0.0 and not sft.aesthetic_significant and dpo.gold_significant == (dpo.gold_p < 0.05)
    assert dpo.wall_s_mean == pytest.approx(10.5) and dpo.git_sha == "0123456789abcdef"
    assert dpo.aesthetic_wtl == "0/40/0" and dpo.mean_win_rate == pytest.approx(0.6)
    # HELM mean win rate: per scorer the fraction of other rows beaten (ties 1/2), averaged
    helm = dict(zip(lb.label, lb.helm_mean_win_rate))
    assert helm["base"] == pytest.approx(1 / 3, abs=1e-4)                     # the CSV keeps 4 decimals
    assert helm["dpo (beta=5000.0)"] == pytest.approx((2.5 / 3 + 1 / 3) / 2, abs=1e-4)
    assert helm["sft"] == pytest.approx(0.5)


def test_ablations_over_swept_axis_and_seeds(rep):
    abl = (rep.out / "tables" / "ablation-tiny-sd15-dpo.md").read_text()
    lines = [ln for ln in abl.splitlines() if ln.startswith("| 2500.0") or ln.startswith("| 5000.0")]
    assert [ln.split(" | ")[0] for ln in lines] == ["| 2500.0", "| 5000.0"]      # sorted by the swept value
    assert "| beta | seeds | gold | aesthetic | mean |" in abl
    seeds = (rep.out / "tables" / "seeds-tiny-sd15-dpo.md").read_text()
    assert re.search(r"\| dpo \(beta=5000.0\) \| 0 \| 0\.800 \[", seeds)
    assert re.search(r"\| dpo \(beta=5000.0\) \| 1 \| 0\.600 \[", seeds)
    assert re.search(r"\| dpo \(beta=5000.0\) \| between-seed sd \| 0\.141 ", seeds)   # sd(0.8, 0.6)
    lo = 0.7 - stats.t.ppf(0.975, DPO_DF) * np.sqrt(DPO_VAR)
    assert f"| dpo (beta=5000.0) | pooled (seed-aware) | 0.700 [{lo:.3f}, 1.000] |" in seeds


def test_attribute_table_and_figures(rep):
    rows = md_rows(rep.out / "tables" / "attributes.md")
    assert rows["base (reference)"][:2] == ["0.00", "1.00"]                     # +colour_ok, −blurred
    assert rows["sft"][:2] == ["0.30", "0.70"]
    # second table: paired fixed/broken per attribute. sft's model image is colour-correct and sharp
    # on the 3 won prompts x 2 eval seeds, its base image never: 6 fixed, 0 broken; one training seed,
    # so counts only (no test is shown for a single run)
    flips = md_rows(rep.out / "tables" / "attributes.md", table=1)
    assert set(flips) == {"dpo (beta=2500.0) (1 seed)", "dpo (beta=5000.0)", "sft (1 seed)"}
    assert flips["sft (1 seed)"] == ["6/0", "6/0", "12/0", "20"]
    # dpo beta 5000 over two seeds: the per-image change (+1 on won prompts) averaged in seed x prompt
    # cells is TWO_SEEDS again; tested against 0: t = 0.7 / se on 3.965 df
    p = 2 * stats.t.sf(0.7 / np.sqrt(DPO_VAR), DPO_DF)
    assert flips["dpo (beta=5000.0)"][:2] == [f"28/0 (p={p:.2g})"] * 2 and p == pytest.approx(0.0104, abs=1e-4)
    for stem in ("winrates", "attributes", "training", "sensitivity-tiny-sd15-dpo-beta"):
        for ext in ("png", "pdf"):
            assert (rep.out / "figures" / f"{stem}.{ext}").stat().st_size > 1000, stem
    assert (rep.out / "grids" / "grid-tiny-sd15.png").stat().st_size > 1000


def test_bad_result_files_named_in_one_line(results, rep, caplog):
    with caplog.at_level(logging.WARNING):
        runs = load_runs(results)                     # the loader `report` and the leaderboard use
    bad = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(bad) == 2 and all("\n" not in m for m in bad)
    assert any("tiny-sd15-dpo-corrupt/result.json" in m and "corrupt result.json" in m for m in bad)
    assert any("tiny-sd15-sft-noscores/scores.parquet" in m and "missing scores.parquet" in m for m in bad)
    assert len(runs) == 5
    assert rep.problems == [m for m in bad if m in rep.problems] and len(rep.problems) == 2
    assert len(pd.read_csv(rep.out / "leaderboard.csv")) == 4                      # the rest still reported
    page = (rep.out / "report.html").read_text()
    assert "tiny-sd15-dpo-corrupt" in page and "tiny-sd15-sft-noscores" in page


def test_cli_report_and_grid_note_without_samples(results, tmp_path, capsys):
    plain = tmp_path / "results"
    shutil.copytree(results, plain)
    for f in list(plain.rglob("samples.*")):
        f.unlink()
    assert main(["report", str(plain), "--out", str(tmp_path / "out")]) == 0
    cap = capsys.readouterr()
    assert cap.out.strip() == str(tmp_path / "out" / "report.html")
    notes = [ln for ln in cap.err.splitlines() if "image grids skipped" in ln]
    assert len(notes) == 1 and "samples.png" in notes[0]
    assert not (tmp_path / "out" / "grids").exists()
    with pytest.raises(SystemExit) as e:
        main(["report", str(tmp_path / "nowhere")])
    assert e.value.code == 2 and capsys.readouterr().err.strip().startswith("error: no results directory at")


def chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


CHECK = ("<pre id=\"img-check\"></pre><script>window.addEventListener('load', () => {"
         "document.getElementById('img-check').textContent = JSON.stringify("
         "[...document.images].map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight]));});</script>")


def test_report_html_in_headless_chromium(rep, tmp_path):
    exe = chromium()
    if not exe:
        pytest.skip("chromium not installed (Debian: apt-get install chromium; .ci/run installs it)")
    page = (rep.out / "report.html").read_text()
    assert "src=\"http" not in page and "<link" not in page                      # self-contained
    n_img = page.count("<img ")
    assert n_img == 5          # win-rate bars, attribute heatmap, sensitivity, training curves, image grid
    check = tmp_path / "report_check.html"                                     # the page + a probe script
    check.write_text(page.replace("</body>", CHECK + "</body>"))
    flags = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--virtual-time-budget=10000"]
    dom = subprocess.run(flags + ["--dump-dom", check.as_uri()], capture_output=True, text=True, timeout=120,
                         check=False)
    m = re.search(r'<pre id="img-check">(.*?)</pre>', dom.stdout, re.DOTALL)
    assert m and m.group(1), dom.stderr[-2000:]
    images = json.loads(m.group(1).replace("&quot;", '"'))
    assert len(images) == n_img
    assert all(done and w > 0 and h > 0 for _, done, w, h in images), images
    shot = tmp_path / "report.png"
    subprocess.run(flags + ["--window-size=1400,3000", f"--screenshot={shot}", (rep.out / "report.html").as_uri()],
                   capture_output=True, timeout=120, check=False)
    head = shot.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", head[16:24]) == (1400, 3000)

def test_saved_figures_are_byte_identical_when_regenerated(tmp_path, monkeypatch):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    blobs = []
    for d, epoch in (("a", "1000000000"), ("b", "1700000000")):
        monkeypatch.setenv("SOURCE_DATE_EPOCH", epoch)    # matplotlib dates PDFs from it
        fig, ax = plt.subplots()
        ax.plot([0, 1], [1, 0])
        paths = _save(fig, tmp_path / d / "fig")
        blobs.append([p.read_bytes() for p in paths])
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    assert blobs[0] == blobs[1]


def test_power_table_from_multi_seed_configs(rep):
    """Only dpo (beta=5000) has two seeds: its gold cells are the TWO_SEEDS matrix of
    tests/test_statistics.py (each prompt's two eval seeds agree, so the eval-seed variance is 0):
    seed (0.2 - 0.088889)/10, prompt (0.355556 - 0.088889)/2, seed x prompt 0.088889."""
    text = (rep.out / "tables" / "power.md").read_text()
    assert "| gold | 0.01111 | 0.13333 | 0.08889 | 0.00000 |" in text
    var3 = 0.0111111 / 3 + 0.1333333 / 10 + 0.0888889 / 30              # 3 seeds x 10 prompts x 2 eval seeds
    mde3 = (stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) * np.sqrt(var3)
    assert f"| 3 | 10 | 2 | 60 | {mde3:.3f} | 0.000 |" in text            # aesthetic: all ties, nothing varies
    assert f"gold {mde3:.3f}, aesthetic 0.000" in (rep.out / "tables" / "winrates.md").read_text()


def test_report_over_runs_with_different_scorer_sets(tmp_path):
    """Runs scored with different scorer sets (issue 19: `bench report` crashed with "'x' and 'y'
    must have the same size"): each scorer's column holds the runs that have it, the others show
    no number for it, and the numbers equal those of a report over the runs that have it."""
    root = tmp_path / "results"
    wins_a, wins_b = outcome_column(set(range(7))), outcome_column(set(range(4)))
    fake_job(root, "dpo", 0, wins_a, wins_b, samples=False)                  # gold + aesthetic
    fake_job(root, "dpo", 1, wins_b, wins_a, samples=False)
    only_gold = fake_job(root, "kto", 0, wins_b, wins_b, samples=False)      # then drop aesthetic
    res = json.loads((only_gold / "result.json").read_text())
    del res["scorers"]["aesthetic"]
    res["identity"]["eval"] = res["config"]["eval"] = {**EVAL, "scorers": ["gold"]}
    df = pd.read_parquet(only_gold / "scores.parquet").drop(columns=["aesthetic", "base_aesthetic"])
    shutil.rmtree(only_gold)
    write_job(only_gold, res, df, "{}\n")
    # and a seed of the same config as the dpo runs that lacks aesthetic: pooled over seeds, the
    # aesthetic win rate of that config uses the seeds that have it
    third = fake_job(root, "dpo", 2, wins_a, wins_a, samples=False)
    res = json.loads((third / "result.json").read_text())
    del res["scorers"]["aesthetic"]
    df = pd.read_parquet(third / "scores.parquet").drop(columns=["aesthetic", "base_aesthetic"])
    shutil.rmtree(third)
    write_job(third, res, df, "{}\n")

    out = report(root, tmp_path / "report")
    assert not out.problems
    assert (tmp_path / "report" / "report.html").is_file()
    assert list((tmp_path / "report").rglob("winrates*.png"))              # the figure that crashed
    lb = pd.read_csv(tmp_path / "report" / "leaderboard.csv")
    kto = lb[lb.label.str.startswith("kto")].iloc[0]
    dpo = lb[lb.label.str.startswith("dpo")].iloc[0]
    assert kto["gold_win_rate"] == pytest.approx(0.4) and np.isnan(kto["aesthetic_win_rate"])
    # gold pooled over the three dpo seeds (0.7, 0.4, 0.7); aesthetic over seeds 0 and 1 (0.4, 0.7)
    assert dpo["gold_win_rate"] == pytest.approx(0.6) and dpo["aesthetic_win_rate"] == pytest.approx(0.55)
    assert dpo["n_seeds"] == 3 and dpo["seeds"] == "0,1,2"


# ----------------------------------------------------------------------------- readable figures (issue 18)

FOUR_SCORERS = ["gold", "fidelity", "aesthetic", "preference"]


def many_configs(n: int = 14, seed: int = 0) -> pd.DataFrame:
    """A leaderboard with n configurations on one backbone (long ablation labels, as the paper specs'
    BalancedDPO ablations make on tiny-sd15) and a few on another, win rates seeded."""
    rng = np.random.default_rng(seed)
    rows = []
    for bb, k in (("tiny-sd15", n), ("tiny-sd21", 3)):
        for i in range(k):
            method = ["balanced_dpo", "dpo", "kto"][i % 3]
            label = (f"{method} (aggregation=majority, beta={5000.0 + i}, ref_refresh_every={25 * i}, "
                     f"voters=[\"fidelity\", \"aesthetic\", \"preference\"])") if bb == "tiny-sd15" else method
            r = {"backbone": bb, "method": method, "label": label, "n_seeds": 1 + (i % 3 > 0)}
            for s in FOUR_SCORERS:
                w = float(rng.uniform(0.35, 0.65))
                r |= {f"{s}_win_rate": w, f"{s}_ci_low": w - 0.04, f"{s}_ci_high": w + 0.04}
            rows.append(r)
    return pd.DataFrame(rows)


def _boxes(fig, artists):
    fig.canvas.draw()
    rend = fig.canvas.get_renderer()
    return [a.get_window_extent(rend) for a in artists if a.get_visible() and (not hasattr(a, "get_text") or a.get_text())]


def _disjoint(boxes) -> list:
    return [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:] if a.overlaps(b)]


def test_winrate_figure_with_14_configurations_is_faceted_and_nothing_covers_the_data():
    import matplotlib.pyplot as plt
    lb = many_configs(14)
    fig = winrate_figure(lb, FOUR_SCORERS)
    try:
        data_axes = [ax for ax in fig.axes if ax.get_visible()]
        assert len(data_axes) == 2 * len(FOUR_SCORERS)                  # one panel per (backbone, scorer)
        assert all(ax.get_legend() is None for ax in data_axes)    # no legend inside a panel
        panels = _boxes(fig, data_axes)
        legends = _boxes(fig, fig.legends)
        assert legends and not [1 for lg in legends for p in panels if lg.overlaps(p)]
        # every configuration is a labelled row; labels short, pairwise apart, spelled out in the key
        first = data_axes[0]
        ticks = [t for t in first.get_yticklabels() if t.get_text()]
        assert len(ticks) == 14
        assert max(len(t.get_text()) for t in ticks) <= SHORT_LABEL + 5
        assert not _disjoint(_boxes(fig, ticks))
        key = "\n".join(t.get_text() for t in fig.texts)
        assert all(lab in key for lab in lb.label if len(lab) > SHORT_LABEL)
        assert not [1 for k in _boxes(fig, fig.texts) for p in panels + legends if k.overlaps(p)]
        # titles of the panels and the figure title apart
        titles = [ax.title for ax in data_axes] + [fig._suptitle]
        assert not _disjoint(_boxes(fig, titles))
    finally:
        plt.close(fig)


def test_short_labels_number_the_same_config_alike_and_keep_short_ones():
    short, key = short_labels(["sft", "dpo (beta=5000.0, caption_dropout=0.2)", "sft",
                                 "dpo (beta=5000.0, caption_dropout=0.2)", "kto (beta=1000.0, desirable=0.8)"],
                                ["sft", "dpo", "sft", "dpo", "kto"])
    assert short == {"sft": "sft", "dpo (beta=5000.0, caption_dropout=0.2)": "dpo [1]",
                     "kto (beta=1000.0, desirable=0.8)": "kto [2]"}
    assert key == ["[1] dpo (beta=5000.0, caption_dropout=0.2)", "[2] kto (beta=1000.0, desirable=0.8)"]


def test_image_grid_with_14_configurations_wraps_and_titles_do_not_overlap():
    import matplotlib.pyplot as plt
    lb = many_configs(14)
    g = lb[lb.backbone == "tiny-sd15"]
    rng = np.random.default_rng(0)
    keys = [(f"p{i}", 0) for i in range(3)]
    tiles = lambda: {k: rng.random((16, 16, 3)) for k in keys}       # noqa: E731
    cols = [(r.label, tiles(), r.method) for r in g.itertuples()]
    fig = grid_figure("tiny-sd15", keys, {k: f"prompt {k[0]}" for k in keys}, tiles(), cols)
    try:
        titled = [ax for ax in fig.axes if ax.get_title()]
        # 14 configurations + base wrap into blocks of <= GRID_COLUMNS columns, each starting with base
        blocks = [ax.get_title() for ax in titled]
        assert blocks.count("base") == 2 and len(blocks) == 14 + 2
        assert all(len(chunk) <= GRID_COLUMNS for chunk in _split_at_base(blocks))
        assert len(fig.axes) == (14 + 2) * len(keys)
        titles = [ax.title for ax in titled] + [fig._suptitle]
        assert not _disjoint(_boxes(fig, titles))
        tiles_boxes = _boxes(fig, fig.axes)
        assert not [1 for t in _boxes(fig, titles) for a in tiles_boxes if t.overlaps(a)]
        key = "\n".join(t.get_text() for t in fig.texts)
        assert all(lab in key for lab in g.label)
        assert not [1 for k in _boxes(fig, fig.texts) for a in tiles_boxes if k.overlaps(a)]
    finally:
        plt.close(fig)


def _split_at_base(titles: list[str]) -> list[list[str]]:
    out = []
    for t in titles:
        if t == "base":
            out.append([])
        out[-1].append(t)
    return out
