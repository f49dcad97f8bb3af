"""One computation per cache entry and per job across processes (bench/locks.py), and jobs side
by side through the parallel launcher (sweeps/hydra/launcher/parallel.yaml)."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from bench.locks import lock_path, shared_chunks

HOLD = """
import sys, time
from pathlib import Path
from filelock import FileLock
lock = FileLock(sys.argv[1]); lock.acquire()
print("held", flush=True)
time.sleep(float(sys.argv[2]))
if sys.argv[3]:
    Path(sys.argv[3]).parent.mkdir(parents=True, exist_ok=True)
    exec(sys.argv[4])
lock.release()
"""


def hold(lock: Path, seconds: float, write: Path | None = None, code: str = "") -> subprocess.Popen:
    """Another process that holds `lock` for `seconds`, then runs `code` (writing `write`)."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(lock), str(seconds), str(write or ""), code],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def _io():
    def save(v, p):
        p.parent.mkdir(parents=True, exist_ok=True)
        torch.save(v, p)    # test-local files; the suite's entries are safetensors

    def load(p):
        return torch.load(p, weights_only=True)
    return save, load


def test_chunks_another_process_is_making_are_waited_for_not_remade(tmp_path):
    path = tmp_path / "entry.pt"
    save, load = _io()
    made = []

    def make(lo, hi):
        made.append((lo, hi))
        return torch.arange(lo, hi)
    part0 = path.with_name(path.name + ".parts") / "00000-0-4"
    other = hold(lock_path(part0), 2.0, part0, f"import torch; torch.save(torch.arange(0, 4), {str(part0)!r})")
    value = shared_chunks(path, 10, 4, make, load, save, torch.cat)
    other.wait()
    assert made == [(4, 8), (8, 10)]                  # chunk 0 came from the other process
    assert torch.equal(value, torch.arange(10)) and torch.equal(load(path), torch.arange(10))
    assert not path.with_name(path.name + ".parts").exists()
    assert shared_chunks(path, 10, 4, lambda lo, hi: 1 / 0, load, save, torch.cat).tolist() == list(range(10))


def test_a_chunk_whose_maker_died_is_made_here(tmp_path):
    path = tmp_path / "entry.pt"
    save, load = _io()
    made = []
    part0 = path.with_name(path.name + ".parts") / "00000-0-4"
    other = hold(lock_path(part0), 1.0)                # holds the lock, then exits without the part
    value = shared_chunks(path, 6, 4, lambda lo, hi: made.append((lo, hi)) or torch.arange(lo, hi), load, save,
                          torch.cat)
    other.wait()
    assert sorted(made) == [(0, 4), (4, 6)] and torch.equal(value, torch.arange(6))


def test_a_job_another_process_is_computing_is_waited_for_then_skipped(tmp_path, tiny_pipe_dir):
    from bench.results import job_dir
    from bench.runner import compose_config, run_job
    overrides = [f"backbone.weights={tiny_pipe_dir}", "method=base", f"paths.results={tmp_path / 'r'}",
                 f"paths.cache={tmp_path / 'c'}", "eval.max_prompts=2", "eval.seeds_per_prompt=1", "progress=false"]
    cfg = compose_config(overrides)
    # the directory run_job will use (its identity); the other process finishes the job there
    from bench.config import resolve
    job, plain = resolve(cfg)
    out = job_dir(tmp_path / "r", plain)
    code = (f"from pathlib import Path; d = Path({str(out)!r}); d.mkdir(parents=True); "
            "(d / 'result.json').write_text('{}'); (d / 'scores.parquet').write_text('x')")
    other = hold(lock_path(out, root=tmp_path / "r"), 2.0, out, code)
    t = time.time()
    assert run_job(cfg) == out
    other.wait()
    assert time.time() - t > 0.5                       # it waited for the lock ...
    # ... and computed nothing: no cache entry, only the weights' memoised digests (bench/fingerprint.py)
    assert [p.name for p in (tmp_path / "c").iterdir()] == ["fingerprints.json"]
    assert (out / "result.json").read_text() == "{}"


def test_parallel_launcher_runs_jobs_side_by_side_and_shares_cache_entries(tmp_path, tiny_pipe_dir):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DIFFPREF_JOBS": "2"}
    r = subprocess.run(
        [sys.executable, "-m", "bench", "run", "-m", "hydra/launcher=parallel", "method=sft,dpo",
         f"backbone.weights={tiny_pipe_dir}", f"paths.results={tmp_path / 'results'}",
         f"paths.cache={tmp_path / 'cache'}", "data.n_pairs=12", "train.steps=2", "train.batch_size=4",
         "eval.max_prompts=2", "eval.seeds_per_prompt=1", "eval.batch_size=2", "progress=false",
         f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in r.stdout + r.stderr
    runs = sorted((tmp_path / "results" / "runs").glob("*/result.json"))
    assert sorted(json.loads(p.read_text())["method"] for p in runs) == ["dpo", "sft"]
    samples = sorted(p.name for p in (tmp_path / "cache" / "samples").glob("*.safetensors"))
    # one base-sample entry for the eval set and one for the pair images, each made once
    assert len(samples) == 2 and not list((tmp_path / "cache" / "samples").glob("*.parts"))
    assert len(list((tmp_path / "cache" / "preferences").glob("*.parquet"))) == 1


def test_a_damaged_entry_is_made_again_not_failed_on(tmp_path, caplog):
    path = tmp_path / "entry.pt"
    save, load = _io()
    path.write_bytes(b"truncated")
    value = shared_chunks(path, 3, 4, lambda lo, hi: torch.arange(lo, hi), load, save, torch.cat)
    assert torch.equal(value, torch.arange(3)) and torch.equal(load(path), torch.arange(3))
    assert f"cache entry {path} is damaged (" in caplog.text and "making it again" in caplog.text


def test_a_damaged_preference_file_in_the_cache_is_made_again(tmp_path, caplog):
    from types import SimpleNamespace
    from bench import world as W
    from bench.data.config import DataConfig
    from bench.data.pairs import load_pickapic
    from bench.data.world_pairs import world_preferences
    calls = []

    def sample(texts, seeds, *settings):
        calls.append(len(texts))
        return torch.randint(0, 256, (len(texts), 3, 32, 32), generator=torch.Generator().manual_seed(0),
                             dtype=torch.uint8)
    bb, cfg = SimpleNamespace(name="tiny"), DataConfig(n_pairs=4, generators=["base"])
    path = world_preferences(bb, W.WorldConfig(), cfg, tmp_path, "w", sample)
    good = path.read_bytes()
    path.write_bytes(good[:100])                      # a partial copy / disk error
    assert world_preferences(bb, W.WorldConfig(), cfg, tmp_path, "w", sample) == path
    assert calls == [8, 8] and path.read_bytes() == good and len(load_pickapic(path, keep_ties=True)) == 4
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0xFF                   # one flipped byte, caught by the seal
    path.write_bytes(bytes(flipped))
    caplog.clear()
    assert world_preferences(bb, W.WorldConfig(), cfg, tmp_path, "w", sample) == path
    assert calls == [8, 8, 8] and path.read_bytes() == good
    assert f"cache entry {path} is damaged (the file does not match its SHA-256)" in caplog.text


def test_two_runs_of_one_sweep_on_one_directory_compute_every_job_once(tmp_path, tiny_pipe_dir):
    """Two users start the same sweep on the same results and cache directories at once: every
    job is computed by exactly one of them, the other waits for it and skips it, and the results
    equal those of one run alone on fresh directories."""
    import pandas as pd
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}

    def cmd(root, i):
        return [sys.executable, "-m", "bench", "run", "-m", "method=base,sft,dpo", f"backbone.weights={tiny_pipe_dir}",
                f"paths.results={root / 'results'}", f"paths.cache={root / 'cache'}", "data.n_pairs=12",
                "train.steps=2", "train.batch_size=4", "eval.max_prompts=2", "eval.seeds_per_prompt=1",
                "progress=false", "~hydra.callbacks.leaderboard", f"hydra.sweep.dir={root / f'sweep{i}'}"]
    alone = subprocess.run(cmd(tmp_path / "alone", 0), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert alone.returncode == 0, alone.stderr[-2000:]
    procs = [subprocess.Popen(cmd(tmp_path, i), cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs[0][-2000:] + logs[1][-2000:]
    done = [line for log in logs for line in log.splitlines() if "][bench.runner][INFO] - done " in line]
    jobs = sorted(line.split(" - done ")[1].split(" in ")[0] for line in done)
    assert len(jobs) == 3 and len(set(jobs)) == 3          # each of the 3 jobs computed once, by one run
    skipped = sum(log.count("is complete") + log.count("was completed by another process") for log in logs)
    assert skipped == 3                                     # ... and skipped by the other
    runs = sorted((tmp_path / "results" / "runs").glob("*/result.json"))
    assert len(runs) == 3 and not list((tmp_path / "results").rglob("*.tmp*"))
    for run in runs:                    # the same job directories, with the same scores, as one run alone
        ref = tmp_path / "alone" / "results" / "runs" / run.parent.name
        pd.testing.assert_frame_equal(pd.read_parquet(run.parent / "scores.parquet"),
                                      pd.read_parquet(ref / "scores.parquet"))
        got, want = json.loads(run.read_text()), json.loads((ref / "result.json").read_text())
        def history(r):          # every logged number but the steps' wall times
            return [{k: v for k, v in h.items() if k != "wall_s"} for h in r["train_history"]]
        assert (got["scorers"], history(got)) == (want["scorers"], history(want))


HOLD_EXCLUSIVE = """
import sys, time
from pathlib import Path
from bench.locks import exclusive
with exclusive(Path(sys.argv[1]), "the test entry"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_a_waiter_logs_the_holders_pid_and_host(tmp_path, caplog):
    import logging
    import socket
    from bench.locks import exclusive
    entry = tmp_path / "entry"
    other = subprocess.Popen([sys.executable, "-c", HOLD_EXCLUSIVE, str(entry), "1.5"], stdout=subprocess.PIPE,
                             text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert other.stdout.readline().strip() == "held"
    with caplog.at_level(logging.INFO), exclusive(entry, "the test entry"):
        pass
    other.wait()
    waiting = [r.getMessage() for r in caplog.records if r.getMessage().startswith("waiting for")]
    assert waiting == [f"waiting for another process to finish the test entry ({lock_path(entry)} held by "
                       f"pid {other.pid} on host {socket.gethostname()})"]
    assert not list(lock_path(entry).parent.glob("*.owner"))      # each holder removes its name when done
