"""Every kind of cache entry a job makes is sealed when made; a damaged one is detected, logged with
its path, made again (byte for byte the same), and the job's result equals a clean run's.

Entries depend on one another (the preference file on the pair images' base samples, the KTO
files on the comparisons, ...): a damaged entry upstream is made again byte for byte, so the
entries derived from it keep their names (bench.data.source keys them by content) and are checked
and made again in turn."""
import json
import logging
import shutil

import pandas as pd

import bench.runner as runner
from bench.locks import intact, seal_path

JOBS = {"dpo": ["method=dpo", "train.ref_draws=2"], "kto": ["method=kto"],
        "balanced_dpo": ["method=balanced_dpo"], "cpo": ["method=cpo", "method.aux_steps=1"]}
# what the four jobs cache, by kind: (directory under the cache, how an entry's name ends)
KINDS = {"base samples": ("samples", ".safetensors"), "base scores": ("samples", "-scores.parquet"),
         "preference pairs": ("preferences", ".parquet"), "KTO comparisons": ("feedback", "comparisons-"),
         "KTO files (directory)": ("feedback", "kto-"), "votes": ("feedback", "votes-"),
         "attribute files (directory)": ("feedback", "attributes-"), "reference errors": ("reference", ".safetensors")}


def kind_of(entry, cache):
    rel = entry.relative_to(cache)
    return [k for k, (d, part) in KINDS.items()
            if rel.parts[0] == d and (entry.name.endswith(part) or entry.name.startswith(part))
            and not (k == "base samples" and entry.name.endswith("-scores.parquet"))]


def run_all(root, tiny_pipe_dir):
    common = [f"backbone.weights={tiny_pipe_dir}", f"paths.results={root / 'results'}", f"paths.cache={root / 'cache'}",
              "backbone.num_inference_steps=4", "data.n_pairs=8", "train.steps=1", "train.batch_size=2", "eval.max_prompts=2", "eval.seeds_per_prompt=1",
              "eval.batch_size=2", "progress=false"]
    out = {}
    for name, extra in JOBS.items():
        d = runner.run_job(runner.compose_config(extra + common))
        res = json.loads((d / "result.json").read_text())
        history = [{k: v for k, v in h.items() if k != "wall_s"} for h in res["train_history"]]
        out[name] = (pd.read_parquet(d / "scores.parquet"), res["scorers"], history)
    return out


def flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_each_damaged_cache_entry_is_detected_logged_and_made_again(tmp_path, tiny_pipe_dir, caplog):
    cache = tmp_path / "cache"
    clean = run_all(tmp_path, tiny_pipe_dir)
    entries = sorted(p.with_name(p.name[:-len(".sha256")]) for p in cache.rglob("*.sha256"))
    kinds = {e: kind_of(e, cache) for e in entries}
    assert all(len(k) == 1 for k in kinds.values()), kinds
    assert sorted({k[0] for k in kinds.values()}) == sorted(KINDS)      # every kind is made, and sealed
    seals = {e: seal_path(e).read_text() for e in entries}

    for e in entries:                   # a flipped byte: most loaders would read it without noticing
        flip_a_byte(e if e.is_file() else max((p for p in e.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size))
    shutil.rmtree(tmp_path / "results")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        again = run_all(tmp_path, tiny_pipe_dir)
    damaged = [r.getMessage() for r in caplog.records if "is damaged" in r.getMessage()]
    for e in entries:
        assert sum(f"cache entry {e} is damaged" in m for m in damaged) == 1, (e, damaged)
        assert seal_path(e).read_text() == seals[e]                      # made again, byte for byte
        assert intact(e)                                                  # and left as sealed
    assert len(damaged) == len(entries)
    for name, (scores, scorers, history) in clean.items():
        pd.testing.assert_frame_equal(again[name][0], scores)
        assert again[name][1:] == (scorers, history)
