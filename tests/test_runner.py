"""The whole job path at toy size: result files, shared caches, skip-if-complete, leaderboard."""
import json

import pandas as pd
import pytest
import bench.runner as runner
from bench.results import leaderboard, write_leaderboard


def compose_cfg(*overrides):
    return runner.compose_config(list(overrides))


@pytest.fixture(scope="module")
def toy(tmp_path_factory, tiny_pipe_dir):
    root = tmp_path_factory.mktemp("suite")
    common = [f"backbone.weights={tiny_pipe_dir}", f"paths.results={root / 'results'}",
              f"paths.cache={root / 'cache'}", "data.n_pairs=12", "train.steps=2", "train.batch_size=4", "train.log_every=1",
              "eval.max_prompts=3", "eval.seeds_per_prompt=2", "eval.n_bootstrap=200", "progress=false"]
    dirs = {m: runner.run_job(compose_cfg(f"method={m}", *common)) for m in ("base", "sft", "dpo")}
    return root, common, dirs


def test_result_schema_and_scores(toy):
    root, _, dirs = toy
    res = json.loads((dirs["dpo"] / "result.json").read_text())
    for key in ("job", "identity", "config", "provenance", "wall_s", "scorers", "attributes", "budget",
                "train_history", "data"):
        assert key in res
    assert set(res["provenance"]) >= {"git_sha", "git_dirty", "versions", "device"}
    assert res["provenance"]["versions"]["torch"].startswith("2.13.0")
    assert set(res["wall_s"]) >= {"load", "sample_base", "data", "train", "sample", "score", "total"}
    gold = res["scorers"]["gold"]
    assert set(gold) >= {"mean", "std", "n", "higher_is_better", "tie_tolerance", "vs_base"}
    vs = gold["vs_base"]
    assert vs["wins"] + vs["ties"] + vs["losses"] == 6 and vs["n_prompts"] == 3
    assert vs["ci_low"] <= vs["win_rate"] <= vs["ci_high"]
    assert res["budget"] == {"steps": 2, "batch_size": 4, "examples": 8}
    assert res["train_history"][0]["loss"] == pytest.approx(0.6931, abs=1e-4)
    scores = pd.read_parquet(dirs["dpo"] / "scores.parquet")
    assert len(scores) == 6 and {"prompt_id", "seed", "gold", "base_gold", "fully_correct"} <= set(scores)


def test_base_row_is_its_own_baseline(toy):
    _, _, dirs = toy
    res = json.loads((dirs["base"] / "result.json").read_text())
    for sc in res["scorers"].values():
        assert sc["vs_base"]["win_rate"] == 0.5 and sc["vs_base"]["ties"] == 6
    assert res["attributes"]["model"] == res["attributes"]["base"]


def test_base_samples_and_preferences_are_shared(toy):
    root, _, _ = toy
    # one entry for the eval set's base samples, one for the base images the pairs are made of,
    # and the base samples' scores (judged once per backbone and eval set)
    assert len(list((root / "cache" / "samples").glob("*.safetensors"))) == 2
    assert len(list((root / "cache" / "samples").glob("*-scores.parquet"))) == 1
    assert len(list((root / "cache" / "preferences").glob("*.parquet"))) == 1
    assert not list(root.rglob("*.tmp*"))


def test_rerun_skips_complete_jobs(toy, monkeypatch):
    root, common, dirs = toy
    mtime = (dirs["dpo"] / "result.json").stat().st_mtime

    def no_training(*a, **k):
        raise AssertionError("a complete job was trained again")
    monkeypatch.setattr(runner, "train", no_training)
    monkeypatch.setattr(runner, "generate", no_training)
    assert runner.run_job(compose_cfg("method=dpo", *common)) == dirs["dpo"]
    assert (dirs["dpo"] / "result.json").stat().st_mtime == mtime


def test_job_hash_covers_identity_only():
    from bench.results import job_hash
    base = {"backbone": {"name": "tiny-sd15"}, "method": {"name": "dpo", "beta": 5000.0}, "data": {},
            "train": {"steps": 2}, "eval": {}, "world": {}, "seed": 0,
            "paths": {"results": "a"}, "progress": True}
    same = {**base, "paths": {"results": "elsewhere"}, "progress": False}
    assert job_hash(base) == job_hash(same)
    assert job_hash(base) != job_hash({**base, "seed": 1})
    assert job_hash(base) != job_hash({**base, "method": {"name": "dpo", "beta": 2500.0}})


def test_unset_train_steps_is_the_methods_budget_and_names_the_job_as_if_set():
    """train.steps left unset (null) becomes the method's budget: DPO's measured setting (1000 steps,
    beta 2500), 300 for the others; BalancedDPO keeps its own beta and budget though its config
    extends DPO's. The job is named as if the steps had been written on the command line."""
    from bench.config import compose_config, resolve
    from bench.results import job_hash

    def resolved(*overrides):
        job, plain = resolve(compose_config(list(overrides)))
        return job, job_hash(plain)

    assert compose_config(["method=dpo"]).train.steps is None
    dpo, h = resolved("method=dpo")
    assert (dpo.train.steps, dpo.method.beta) == (1000, 2500.0)
    assert h == resolved("method=dpo", "train.steps=1000", "method.beta=2500")[1]
    assert h != resolved("method=dpo", "train.steps=300")[1]
    assert resolved("method=dpo", "train.steps=7")[0].train.steps == 7
    bdpo, _ = resolved("method=balanced_dpo")
    assert (bdpo.train.steps, bdpo.method.beta) == (300, 5000.0)
    assert [resolved(f"method={m}")[0].train.steps for m in ("sft", "kto", "cpo", "base")] == [300] * 4



def test_world_v1_jobs_keep_their_hashes_under_the_world_v2_options():
    """A job names itself by hash: world v2's options at their neutral values (world v1) leave a
    world-v1 job's hash as it was before they existed; set, they are part of it. The v1 jobs kept
    in benchmarks/measured (DPO with pool pairs on the v1 world) are named by today's code."""
    import json
    from pathlib import Path
    from bench.results import job_hash
    root = Path(__file__).resolve().parent.parent / "benchmarks" / "measured" / "2026-11-30-generator-pool" / "v1"
    runs = sorted(root.glob("runs/*/result.json"))
    assert runs
    for path in runs:
        cfg = json.loads(path.read_text())["config"]
        assert cfg["world"]["modes"]["frame_rate"] == 0 and cfg["world"]["defects"]["frame"] == 0   # world v1
        assert path.parent.name.endswith(job_hash(cfg))
        before = {**cfg, "world": {k: v for k, v in cfg["world"].items() if k != "modes"}}
        before["world"]["defects"] = {k: v for k, v in cfg["world"]["defects"].items() if k not in ("frame", "hollow")}
        assert job_hash(before) == job_hash(cfg)            # as if the options had never existed
    assert job_hash({**cfg, "data": {**cfg["data"], "generators": ["base"]}}) != job_hash(cfg)
    assert job_hash({**cfg, "world": {**cfg["world"], "defects": {**cfg["world"]["defects"], "frame": 0.3}}}) != job_hash(cfg)


def test_leaderboard_from_result_files(toy):
    root, _, _ = toy
    path = write_leaderboard(root / "results")
    df = pd.read_csv(path)
    assert sorted(df["method"]) == ["base", "dpo", "sft"]
    assert {"gold_win_rate", "gold_ci_low", "gold_ci_high", "gold_wtl", "fully_correct",
            "budget_steps", "budget_examples"} <= set(df.columns)
    assert df.loc[df.method == "dpo", "budget_examples"].item() == 8
    assert df.loc[df.method == "base", "gold_win_rate"].item() == 0.5
    assert leaderboard(root / "results").shape[0] == 3


def test_probe_samples_prompts_spread_over_the_split():
    """bench tune's intermediate evaluation: n_prompts prompts spread over the split (every count),
    each with all its seeds, paired with the same rows of the base images."""
    import types
    import torch
    from bench import world as W
    from bench.evaluate import EvalConfig
    prompts = W.split_prompts(W.WorldConfig())["val"]
    per = 2
    texts = [p.text for p in prompts for _ in range(per)]
    seeds = [s for _ in prompts for s in range(per)]
    base = torch.zeros(len(texts), 3, 32, 32, dtype=torch.uint8)
    job = types.SimpleNamespace(eval=EvalConfig(seeds_per_prompt=per))
    seen, reports = [], []

    def sample(tx, sd, unet=None, desc=""):
        seen.append((tx, sd))
        return torch.zeros(len(tx), 3, 32, 32, dtype=torch.uint8)

    probe = runner.Probe(every=1, n_prompts=3, scorer="gold", report=lambda s, w: reports.append((s, w)))
    runner._probe_callback(job, probe, prompts, texts, seeds, base, sample)(7, None)
    tx, sd = seen[0]
    assert sorted({W.parse_prompt(t).count for t in tx}) == [1, 2, 3]
    assert tx == [prompts[i].text for i in (0, 7, 14) for _ in range(per)] and sd == [0, 1] * 3
    assert reports == [(7, 0.5)]                                # identical images: all ties


def test_git_dirty_ignores_what_the_suite_writes(tmp_path):
    """A spec regenerating paper/<spec>/ or results/ leaves later jobs clean; a code or spec change does not."""
    import subprocess
    from bench.results import git_dirty

    def git(*a):
        subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)
    files = {"bench/x.py": "a = 1\n", "paper/spec.yaml": "title: t\n", "paper/spec/summary.json": "{}\n",
             "results/leaderboard.csv": "a\n", "benchmarks/measured/m.json": "{}\n"}
    for f, text in files.items():
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text(text)
    git("init", "-q"); git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    assert not git_dirty(tmp_path)
    (tmp_path / "new_untracked.py").write_text("b = 2\n")
    assert not git_dirty(tmp_path)
    for f in ("paper/spec/summary.json", "results/leaderboard.csv", "benchmarks/measured/m.json"):
        (tmp_path / f).write_text("changed\n")
    assert not git_dirty(tmp_path)
    (tmp_path / "paper/spec.yaml").write_text("title: changed\n")
    assert git_dirty(tmp_path)
    git("checkout", "--", "paper/spec.yaml")
    assert not git_dirty(tmp_path)
    (tmp_path / "bench/x.py").write_text("a = 2\n")
    assert git_dirty(tmp_path)
