"""One job, start to finish: config -> backbone -> preference data -> train -> sample -> score -> result.

    validate(cfg)           typed config; unknown keys, unknown names, bad values and paths,
                            empty prompt sets rejected (bench.config, before any work)
    load backbone           shipped / pretrained (cached by recipe hash) / real weights
    preference data         simulated annotators on base samples (cached), or a Pick-a-Pic file
    train(method)           bench.train, method-agnostic
    sample                  eval prompts x seeds, identical initial noise for base and policy;
                            base samples cached and shared by every method
    score                   every scorer per image, judge attributes, paired win rates vs base
    result                  <results>/runs/<backbone>-<method>-<hash>/{result.json, scores.parquet}
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file, save_file

from bench import world as W
# the config's schema and validation (importable without torch), re-exported for runner's users
from bench.config import (JobConfig, LaunchConfig, PathsConfig, RootSchema, check_writable,  # noqa: F401
                          WEIGHTS_KEY, compose_config, eval_prompts, first_job_overrides, precheck,
                          register_configs, resolve, typed, validate)
from bench.data.world_pairs import world_preferences
from bench.data.loaders import load_for_method
from bench.evaluate import attribute_summary, attribute_table, get_scorer, score_images, scorer_record, spread
from bench.statistics import win_rate
from bench.locks import exclusive, load_entry, making, shared_chunks
from bench.registry import BACKBONES, METHODS, BenchError
from bench.results import ResultRecord, is_complete, job_dir, job_hash, job_identity, provenance, write_job
from bench.results import write_sample_sheet
from bench.sample import generate
from bench.checkpoint import RESUME_DIR
from bench.devices import Precision, device_record, job_device, place
from bench.train import train
from bench.files import atomic, key

WORKER_RESULT = "worker_result.json"

log = logging.getLogger(__name__)


_key = key          # the short content hash of cache entries (bench.files.key)


def _save_images(images: torch.Tensor, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic(path) as tmp:
        save_file({"images": images.contiguous()}, str(tmp))


def cached_samples(path: Path, texts: list[str], seeds: list[int], sample, chunk: int) -> torch.Tensor:
    """uint8 images of sample(texts, seeds), cached as safetensors. Jobs running side by side
    that need the same entry share its chunks out (bench.locks.shared_chunks); `chunk` is a
    multiple of the sampling batch, so every image comes from the same batch as in one call."""
    return shared_chunks(path, len(texts), chunk, lambda lo, hi: sample(texts[lo:hi], seeds[lo:hi]),
                         lambda p: load_file(str(p))["images"], _save_images, torch.cat,
                         what=f"samples {path.name}")


def cached_table(path: Path, make) -> pd.DataFrame:
    """A DataFrame cached as parquet, made once under the entry's lock; a damaged entry is made
    again (bench.locks.load_entry)."""
    df = load_entry(path, pd.read_parquet)
    if df is None:
        with making(path, f"scores {path.name}"):
            df = load_entry(path, pd.read_parquet)
            if df is None:
                df = make()
                path.parent.mkdir(parents=True, exist_ok=True)
                with atomic(path) as tmp:
                    df.to_parquet(tmp, index=False)
    return df


def judge_table(images: torch.Tensor, texts: list[str], scorers: list[str], options: dict,
                progress: bool) -> pd.DataFrame:
    """Every scorer's score and every judge attribute of each image, one row per image (world
    scorers and the attribute table share one judgement per image: bench.world.judged)."""
    scores = score_images(images, texts, scorers, progress=progress, options=options)
    attrs = attribute_table(images, texts)
    return pd.concat([scores.reset_index(drop=True), attrs.reset_index(drop=True)], axis=1)


@dataclass
class Probe:
    """Intermediate evaluation while training (`bench tune`): after every `every`-th optimizer
    step, the policy's win rate vs base for `scorer` on `n_prompts` prompts spread over the eval
    set (eval.split; val when tuning; bench.evaluate.spread) is passed to `report(step, win_rate)`,
    which may raise to stop the job (optuna.TrialPruned). Runs only in-process
    (launch.num_processes=1)."""
    every: int
    n_prompts: int
    scorer: str
    report: Callable[[int, float], None]


def run_job(cfg: DictConfig, probe: Probe | None = None) -> Path:
    job, plain = resolve(cfg)
    out = job_dir(Path(job.paths.results), plain)
    if is_complete(out):
        log.info("skip: %s is complete", out)
        return out
    # one process computes a job; another run of the same sweep on the same results directory
    # waits, then finds it complete (bench.locks)
    with exclusive(out, f"job {out.name}", root=out.parent.parent):
        if is_complete(out):
            log.info("skip: %s was completed by another process", out)
            return out
        return _run_job(job, cfg, plain, out, probe)


def _run_job(job: JobConfig, cfg: DictConfig, plain: dict, out: Path, probe: Probe | None) -> Path:
    cache = Path(job.paths.cache)
    times, t0 = {}, time.time()
    method = METHODS.get(job.method.name)(job.method)
    backbone = BACKBONES.get(job.backbone.name)(job.backbone, job.world, cache)
    # every module of the job on this process's device, the frozen ones in the job's precision
    device = job_device()
    precision = Precision(job.train.mixed_precision, device)
    place(backbone, device, precision)
    weights_id = _key(dataclasses.asdict(job.backbone))
    if plain.get(WEIGHTS_KEY):                  # the files behind a path or hub id, as they are now
        weights_id = _key(weights_id, plain[WEIGHTS_KEY])
    if job.train.mixed_precision != "no":       # samples under autocast differ from float32 ones
        weights_id = _key(weights_id, job.train.mixed_precision)
    times["load"] = time.time() - t0

    prompts = eval_prompts(job)
    texts = [p.text for p in prompts for _ in range(job.eval.seeds_per_prompt)]
    seeds = [s for _ in prompts for s in range(job.eval.seeds_per_prompt)]

    if job.launch.compile:
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str((cache / "inductor").resolve()))

    def sample(tx, sd, unet=None, desc="sample", guidance=None, steps=None):
        return generate(backbone, tx, sd, unet=unet, batch_size=job.eval.batch_size,
                        progress=job.progress, desc=desc, compile=job.launch.compile,
                        guidance_scale=guidance, num_inference_steps=steps, autocast=precision.autocast)

    def base_samples(tx, sd, desc, guidance=None, steps=None):   # cached, shared by every job of these weights
        key = _key(weights_id, tx, sd) if guidance is None and steps is None else _key(weights_id, tx, sd, guidance, steps)
        return cached_samples(cache / "samples" / f"{backbone.name}-{key}.safetensors", tx, sd,
                              lambda a, b: sample(a, b, desc=desc, guidance=guidance, steps=steps),
                              chunk=4 * job.eval.batch_size)

    t = time.time()
    base_images = base_samples(texts, seeds, "sample base")
    times["sample_base"] = time.time() - t

    history, data_info, train_info = [], {}, {}
    if method.feedback == "none":
        images = base_images
    else:
        t = time.time()
        if job.data.source == "world":
            path = world_preferences(backbone, job.world, job.data, cache, weights_id,
                                     lambda tx, sd, g, s: base_samples(tx, sd, "sample pairs", g, s))
        else:
            path = Path(job.data.path)
        # the method's feedback kind (pairs, images, binary, votes, attributes) from that source
        data, data_info = load_for_method(method, path, job.data, cache, backbone.resolution,
                                          world=job.data.source == "world", scorer_options=job.eval.scorer_options)
        times["data"] = time.time() - t
        t = time.time()
        ckpt_dir = cache / "checkpoints" / out.name
        if job.launch.num_processes > 1:
            policy, history, info, train_info = train_distributed(job, plain, backbone, path, ckpt_dir)
            data_info.update(info)
        else:
            callbacks = [] if probe is None else [
                _probe_callback(job, probe, prompts, texts, seeds, base_images, sample)]
            policy, history = train(backbone, method, data, job.train, job.seed, ckpt_dir=ckpt_dir,
                                    progress=job.progress, callbacks=callbacks, ref_cache_dir=cache / "reference",
                                    info=train_info)
            data_info.update(getattr(method, "data_info", {}))   # what the method made of its feedback
        times["train"] = time.time() - t
        t = time.time()
        images = sample(texts, seeds, unet=policy, desc=f"sample {job.method.name}")
        times["sample"] = time.time() - t

    t = time.time()
    opts = job.eval.scorer_options
    # the base images are judged once per backbone weights, eval set and scorer set, and cached
    # beside the base samples; every job of that backbone reads them back
    records = [scorer_record(get_scorer(n, opts.get(n))) for n in job.eval.scorers]
    base_table = cached_table(
        cache / "samples" / f"{backbone.name}-{_key(weights_id, texts, seeds, job.eval.scorers, opts, records)}"
        f"-scores.parquet", lambda: judge_table(base_images, texts, job.eval.scorers, opts, job.progress))
    own = base_table if images is base_images else judge_table(images, texts, job.eval.scorers, opts, job.progress)
    table = {"prompt_id": [p.id for p in prompts for _ in range(job.eval.seeds_per_prompt)],
             "prompt": texts, "seed": seeds}
    df = pd.DataFrame(table)
    for name in job.eval.scorers:
        df[name], df[f"base_{name}"] = own[name].to_numpy(), base_table[name].to_numpy()
    attr_cols = [c for c in base_table.columns if c not in job.eval.scorers]
    attrs, base_attrs = own[attr_cols], base_table[attr_cols]
    for c in attr_cols:
        df[c], df[f"base_{c}"] = attrs[c].to_numpy(), base_attrs[c].to_numpy()
    scorer_info = {}
    for name in job.eval.scorers:
        sc = get_scorer(name, opts.get(name))
        st = win_rate(df[name], df[f"base_{name}"], df["prompt_id"], sc.tie_tolerance,
                      sc.higher_is_better, ci=job.eval.ci)
        scorer_info[name] = {**scorer_record(sc),
                             "mean": float(df[name].mean()), "std": float(df[name].std(ddof=0)),
                             "n": int(len(df)), "base_mean": float(df[f"base_{name}"].mean()),
                             "vs_base": st}
    times["score"] = time.time() - t
    times["total"] = time.time() - t0
    result = ResultRecord(
        job=job_hash(plain), backbone=backbone.name, method=job.method.name, identity=job_identity(plain),
        config=plain, provenance=provenance(device_record(device)), wall_s=times,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        budget={"steps": job.train.steps if method.feedback != "none" else 0, "batch_size": job.train.batch_size,
                "examples": job.train.steps * job.train.batch_size if method.feedback != "none" else 0},
        data=data_info, scorers=scorer_info,
        attributes={"model": attribute_summary(attrs), "base": attribute_summary(base_attrs)},
        train_history=history, training=train_info).to_dict()
    write_job(out, result, df, OmegaConf.to_yaml(cfg))
    # the job is complete: its resumable training state is no longer needed (the final policy
    # weights stay in the checkpoint directory)
    shutil.rmtree(cache / "checkpoints" / out.name / RESUME_DIR, ignore_errors=True)
    # a small PNG sheet (base vs this model, a few eval prompts) for the report's image grids
    write_sample_sheet(out, images, base_images, table["prompt_id"], texts, seeds)
    g = scorer_info.get("gold", {}).get("vs_base")
    log.info("done %s in %.0fs%s", out.name, times["total"],
             f"; gold win rate vs base {g['win_rate']:.3f} [{g['ci_low']:.3f}, {g['ci_high']:.3f}]" if g else "")
    return out


def _probe_callback(job: JobConfig, probe: Probe, prompts, texts, seeds, base_images, sample):
    """The trainer callback behind a Probe (samples and scores a small eval subset)."""
    per = job.eval.seeds_per_prompt
    rows = [i * per + s for i in spread(range(len(prompts)), probe.n_prompts) for s in range(per)]
    sub_texts, sub_seeds = [texts[r] for r in rows], [seeds[r] for r in rows]
    ids = [prompts[r // per].id for r in rows]
    opts = job.eval.scorer_options
    sc = get_scorer(probe.scorer, opts.get(probe.scorer))
    base = score_images(base_images[rows], sub_texts, [probe.scorer], progress=False, options=opts)[probe.scorer]

    class Callback:
        every = probe.every

        def __call__(self, step, unet):
            images = sample(sub_texts, sub_seeds, unet=unet, desc=f"probe step {step}")
            s = score_images(images, sub_texts, [probe.scorer], progress=False, options=opts)[probe.scorer]
            st = win_rate(s.to_numpy(), base.to_numpy(), ids, sc.tie_tolerance, sc.higher_is_better)
            log.info("probe at step %d: %s win rate vs base %.3f on %d images", step, probe.scorer,
                     st["win_rate"], len(rows))
            probe.report(step, st["win_rate"])
    return Callback()


def train_distributed(job: JobConfig, plain: dict, backbone, data_path: Path, ckpt_dir: Path):
    """The training stage on launch.num_processes processes: write the resolved config and
    `accelerate launch` bench.worker on it; the main worker writes the final policy weights and
    the history, which are read back here. Returns (policy unet, history, data info, training
    info with every rank's device and placement). `--mixed_precision no` for accelerate: the
    trainer applies train.mixed_precision itself (bench/devices.py), in one process or many."""
    from safetensors.torch import load_file as load
    from bench.train import setup_policy
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    spec = ckpt_dir / "worker.yaml"
    job_cfg = {k: v for k, v in plain.items() if k != WEIGHTS_KEY}      # the workers validate it again
    OmegaConf.save(OmegaConf.create({"job": job_cfg, "data_path": str(data_path), "ckpt_dir": str(ckpt_dir),
                                     "world": job.data.source == "world"}), spec)
    result = ckpt_dir / WORKER_RESULT
    result.unlink(missing_ok=True)
    n = job.launch.num_processes
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(n),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(job.launch.main_process_port), "-m", "bench.worker", str(spec)]
    log.info("training on %d processes: %s", n, " ".join(cmd))
    rc = subprocess.run(cmd).returncode
    if rc != 0 or not result.is_file():
        raise BenchError(f"the {n} training processes failed (exit status {rc}); their log is above, "
                         f"the worker config is {spec}")
    info = json.loads(result.read_text())
    policy, _ = setup_policy(backbone.unet, job.train, with_reference=False)
    lora = job.train.finetune == "lora"
    missing, unexpected = policy.load_state_dict(load(str(ckpt_dir / "unet.safetensors")), strict=not lora)
    if unexpected:
        raise BenchError(f"the workers' policy weights do not fit the model ({unexpected[0]}); delete {ckpt_dir}")
    policy.eval()
    return policy, info["history"], info["data_info"], info.get("training", {})


CORPUS_PROBE = {"n": 2048, "seed": 12345}   # corpus images judged to compare defect rates


def defects_vs_corpus(summary: dict, world_cfg: "W.WorldConfig") -> dict:
    """For each attribute, the share of images that fail it (a negative attribute present, a
    positive one missing) in the base's samples and in a fresh draw of the pretraining corpus, and
    their ratio: a defect the base learned from its data appears at about its corpus rate (ratio
    near 1); a ratio far above 1 is a failure of the model's capacity, not a learned mode."""
    from bench.backbones.pretraining import render_corpus
    images, texts = render_corpus(world_cfg, CORPUS_PROBE["n"], CORPUS_PROBE["seed"])
    corpus = attribute_summary(attribute_table(images, texts))
    out = {}
    for a in W.ATTRIBUTES:
        flip = a in W.POSITIVE_ATTRIBUTES
        s, c = (1 - summary[a], 1 - corpus[a]) if flip else (summary[a], corpus[a])
        out[a] = {"samples": round(s, 4), "corpus": round(c, 4), "ratio": round(s / c, 2) if c else None}
    return out


def pretrain_and_report(cfg: DictConfig, export: str | None = None) -> dict:
    """Pretrain the configured tiny backbone (cached), then measure the base model on the eval
    prompts: per-attribute accuracy and fully-correct rate (gold judge). `export` (--export[=DIR])
    ships it to bench/assets/[DIR/]<name>."""
    from bench.backbones import TinyBackboneConfig, load_pipeline_dir, make_backbone
    from bench.backbones.pretraining import pretrain
    from bench.backbones.shipped import export_shipped
    from bench.backbones.tiny import PIPELINE_DIR
    job = validate(cfg)
    if not isinstance(job.backbone, TinyBackboneConfig):
        raise BenchError(f"pretrain is for tiny backbones; {job.backbone.name} has pretrained weights")
    path = pretrain(job.backbone.name, job.backbone.arch, job.backbone.pretrain, job.world,
                    Path(job.paths.cache), progress=job.progress)
    # wall time of the last phase as trained (a cache hit costs nothing now)
    wall = json.loads((path.parent / "train_log.json").read_text())["wall_s"]
    if export is not None:
        path = export_shipped(path, job.backbone.name, export) / PIPELINE_DIR
    bb = make_backbone(job.backbone.name, load_pipeline_dir(path), job.world.image_size,
                       job.backbone.guidance_scale, job.backbone.num_inference_steps)
    prompts = eval_prompts(job)
    n = job.backbone.pretrain.eval_seeds
    texts = [p.text for p in prompts for _ in range(n)]
    images = generate(bb, texts, [s for _ in prompts for s in range(n)], batch_size=job.eval.batch_size,
                      progress=job.progress, desc="sample base")
    summary = attribute_summary(attribute_table(images, texts))
    report = {"weights": str(path), "last_phase_train_wall_s": wall, "eval_images": len(texts), **summary,
              "defects_vs_corpus": defects_vs_corpus(summary, job.world)}
    (path.parent / "base_quality.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return report
