"""Sweeps through Hydra's submitit launcher: a local 4-job sweep with skip-if-complete on rerun,
and the sbatch script of a sample SLURM config against a golden file."""
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli import main
from bench.slurm import render

GOLDEN = Path(__file__).parent / "golden" / "sbatch_full_suite.sh"
SAMPLE = ["+suite=full", "hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=2",
          "launch.num_processes=2", "hydra.launcher.timeout_min=120", "hydra.launcher.array_parallelism=6",
          "hydra.launcher.account=prefs", "hydra.sweep.dir=/shared/sweep"]


def normalised(text: str) -> str:
    return text.replace(sys.executable, "PYTHON")


def test_sbatch_script_matches_golden(monkeypatch):
    monkeypatch.setenv("DIFFPREF_CACHE", "/shared/cache")
    text = normalised(render(SAMPLE))
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()
    # what the golden file pins down: 54 jobs (3 backbones x 6 methods x 3 seeds), 6 at a time, requeue signal
    assert "#SBATCH --array=0-53%6\n" in text and "#SBATCH --signal=USR2@120\n" in text
    assert "#SBATCH --partition=gpu\n" in text and "#SBATCH --gpus-per-node=2\n" in text


def test_sbatch_needs_the_slurm_launcher(capsys):
    with pytest.raises(SystemExit) as e:
        main(["sbatch", "+suite=smoke"])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip() == \
        "error: sbatch: the launcher is not SLURM; add hydra/launcher=slurm (or submitit_slurm)"


def test_submitit_local_sweep_and_rerun_skips(tmp_path, tiny_pipe_dir):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    common = ["hydra/launcher=submitit_local", "method=base,dpo", "seed=0,1", f"backbone.weights={tiny_pipe_dir}",
              f"paths.results={tmp_path / 'results'}", f"paths.cache={tmp_path / 'cache'}", "data.n_pairs=12",
              "train.steps=2", "train.batch_size=4", "train.log_every=1", "eval.max_prompts=2",
              "eval.seeds_per_prompt=1", "eval.n_bootstrap=100", "progress=false",
              "hydra.launcher.timeout_min=10", "~hydra.callbacks.leaderboard"]

    def sweep(name):
        r = subprocess.run([sys.executable, "-m", "bench", "run", "-m", *common, f"hydra.sweep.dir={tmp_path / name}"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        return sorted((tmp_path / name).glob("[0-9]/bench.log"))
    logs = sweep("first")
    runs = sorted((tmp_path / "results" / "runs").glob("*/result.json"))
    assert len(logs) == 4 and len(runs) == 4
    assert sorted(json.loads(p.read_text())["method"] for p in runs) == ["base", "base", "dpo", "dpo"]
    mtimes = [p.stat().st_mtime_ns for p in runs]
    # the job that submitit pickled is small: configs and a reference to bench.cli.run, no model
    pkl = sorted((tmp_path / "first" / ".submitit").rglob("*_submitted.pkl"))
    assert len(pkl) == 4 and max(p.stat().st_size for p in pkl) < 200_000
    logs = sweep("second")
    assert len(logs) == 4 and all("skip: " in p.read_text() for p in logs)
    assert [p.stat().st_mtime_ns for p in runs] == mtimes
