"""A job's identity follows its weights (bench/fingerprint.py, bench.config.resolve)."""
import json
import os
import shutil

import torch

import bench.runner as runner
from bench.fingerprint import MEMO, fingerprint
from tests.test_runner import compose_cfg


def test_fingerprint_follows_content_and_hub_blobs(tmp_path):
    d = tmp_path / "pipe"
    (d / "unet").mkdir(parents=True)
    (d / "unet" / "w.safetensors").write_bytes(b"a" * 64)
    (d / "model_index.json").write_text("{}")
    fp = fingerprint(d, tmp_path / "cache")
    assert len(fp) == 16 and fingerprint(d, tmp_path / "cache") == fp
    memo = json.loads((tmp_path / "cache" / MEMO).read_text())
    assert len(memo) == 2                                   # one digest per file, memoised
    (d / "unet" / "w.safetensors").write_bytes(b"b" * 64)   # same size, new content
    assert fingerprint(d, tmp_path / "cache") != fp
    # an HF cache snapshot: files link to blobs named by their content hash; the name is used
    hub = tmp_path / "models--org--m"
    (hub / "blobs").mkdir(parents=True)
    (hub / "snapshots" / "rev1" / "unet").mkdir(parents=True)
    (hub / "blobs" / "sha-one").write_bytes(b"x")
    os.symlink("../../../blobs/sha-one", hub / "snapshots" / "rev1" / "unet" / "w.safetensors")
    one = fingerprint(hub / "snapshots" / "rev1")
    (hub / "blobs" / "sha-two").write_bytes(b"x")           # same bytes, another blob name
    os.remove(hub / "snapshots" / "rev1" / "unet" / "w.safetensors")
    os.symlink("../../../blobs/sha-two", hub / "snapshots" / "rev1" / "unet" / "w.safetensors")
    assert fingerprint(hub / "snapshots" / "rev1") != one


def test_weights_replaced_in_place_rename_the_job_and_resample_the_base(tmp_path, tiny_pipe_dir):
    weights = tmp_path / "weights"
    shutil.copytree(tiny_pipe_dir, weights)
    args = [f"backbone.weights={weights}", f"paths.cache={tmp_path / 'cache'}", f"paths.results={tmp_path / 'r'}",
            "method=base", "eval.max_prompts=2", "eval.seeds_per_prompt=1", "eval.n_bootstrap=100", "progress=false"]
    first = runner.run_job(compose_cfg(*args))
    rec = json.loads((first / "result.json").read_text())
    # the typed, versioned record (bench.results.ResultRecord); method=base trains nothing
    import dataclasses
    from bench.results import RESULT_SCHEMA, ResultRecord, load_runs
    assert rec["schema"] == RESULT_SCHEMA == 1
    assert set(rec) == {f.name for f in dataclasses.fields(ResultRecord)} - {"training"}
    newer = tmp_path / "newer" / "runs" / first.name
    shutil.copytree(first, newer)
    (newer / "result.json").write_text(json.dumps({**rec, "schema": 99}))
    problems = []
    assert load_runs(tmp_path / "newer", problems) == []
    assert len(problems) == 1 and "schema 99 is newer than this code's (1)" in problems[0]
    assert rec["config"]["weights_fingerprint"]["weights"] == fingerprint(weights)
    assert runner.run_job(compose_cfg(*args)) == first              # unchanged weights: complete, skipped
    # the UNet replaced in place (same file names and sizes, other values)
    from diffusers import UNet2DConditionModel
    unet = UNet2DConditionModel.from_pretrained(weights / "unet")
    with torch.no_grad():
        for p in unet.parameters():
            p.mul_(0.5)
    unet.save_pretrained(weights / "unet", safe_serialization=True)
    second = runner.run_job(compose_cfg(*args))
    assert second != first and (second / "result.json").is_file()
    samples = sorted((tmp_path / "cache" / "samples").glob("*.safetensors"))
    assert len(samples) == 2                                        # the base was sampled again
    assert json.loads((first / "result.json").read_text())["config"]["weights_fingerprint"] != \
        json.loads((second / "result.json").read_text())["config"]["weights_fingerprint"]
