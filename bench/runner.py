"""One job, start to finish: config -> backbone -> preference data -> train -> sample -> score -> result.

    validate(cfg)           typed config; unknown keys, unknown names, empty prompt sets rejected
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
import hashlib
import json
import logging
import math
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError
from safetensors.torch import load_file, save_file

from bench import world as W
from bench.data import DataConfig, generator_pool, world_preferences
from bench.feedback import load_for_method
from bench.evaluate import (EvalConfig, attribute_summary, attribute_table, check_scorers, eval_set, get_scorer,
                            score_images, scorer_record, spread)
from bench.statistics import win_rate
from bench.locks import exclusive, load_entry, shared_chunks
from bench.registry import BACKBONES, METHODS, BenchError
from bench.results import is_complete, job_dir, job_hash, job_identity, provenance, write_job
from bench.results import write_sample_sheet
from bench.sample import generate
from bench.checkpoint import RESUME_DIR
from bench.train import TrainConfig, check_config, train

WORKER_RESULT = "worker_result.json"

log = logging.getLogger(__name__)


@dataclass
class PathsConfig:
    results: str = "results"
    cache: str = ".cache/diffpref"


@dataclass
class LaunchConfig:
    """How the training stage runs (not part of the job identity). num_processes=1: in this
    process. N > 1: the job writes its resolved config and starts `accelerate launch
    --num_processes N -m bench.worker` (DDP; gloo on CPU); train.batch_size stays the *global*
    micro-batch (bench.train.train). main_process_port: 0 lets torch pick a free port."""
    num_processes: int = 1
    main_process_port: int = 0
    # Sample through torch.compile'd UNets (inductor; its kernels cached on disk under
    # <paths.cache>/inductor). Not part of the job identity: the images equal eager sampling's up
    # to float rounding (docs/performance.md has the measured speed and pixel differences).
    compile: bool = False


@dataclass
class RootSchema:
    """The composed config's schema as Hydra sees it (defaults for every overridable key).
    backbone and method come from their config groups, one dataclass per registry entry."""
    seed: int = 0
    progress: bool = True
    backbone: Any = None
    method: Any = None
    world: W.WorldConfig = field(default_factory=W.WorldConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    launch: LaunchConfig = field(default_factory=LaunchConfig)


def register_configs() -> None:
    """Store the root schema and one group option per registered method and backbone."""
    from hydra.core.config_store import ConfigStore
    import bench.backbones  # noqa: F401
    import methods  # noqa: F401
    cs = ConfigStore.instance()
    cs.store(name="root_schema", node=RootSchema)
    for name in METHODS.names():
        cs.store(group="method", name=name, node=METHODS.get(name).Config(name=name))
    for name in BACKBONES.names():
        cs.store(group="backbone", name=name, node=BACKBONES.get(name).Config(name=name))


def compose_config(overrides: list[str]):
    """The job config that `python -m bench run <overrides>` would get, composed without the CLI
    (for `bench tune` and tests). Hydra errors propagate."""
    from hydra import compose, initialize_config_module
    register_configs()
    with initialize_config_module("bench.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides))


def first_job_overrides(overrides: list[str]) -> list[str]:
    """The overrides of a sweep's first job (the first value of every sweep `key=a,b,...`), without
    command-line flags."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    parsed = OverridesParser.create().parse_overrides([o for o in overrides if not o.startswith("-")])
    out = []
    for o in parsed:
        if o.is_sweep_override():
            key = o.get_key_element()
            out.append(f"{key}={next(iter(o.sweep_string_iterator()))}")
        else:
            out.append(o.input_line)
    return out


def precheck(overrides: list[str]) -> None:
    """Compose and validate the first job of `python -m bench run <overrides>` in this process,
    before Hydra launches anything: a bad type (`train.steps=abc`), an unknown key or value is one
    line and exit 2 here, once, instead of Hydra's multi-line message (exit 1) or one error per
    parallel worker. The other jobs of a sweep are validated as they start."""
    try:
        cfg = compose_config(first_job_overrides(overrides))
    except BenchError:
        raise
    except Exception as e:     # hydra / omegaconf composition errors: the first lines say what and why
        lines = [str(e).split("\n")[0]] + ([str(e.__cause__).split("\n")[0]] if e.__cause__ else []) + \
            str(e).split("\n")[1:2]
        msg = ": ".join(" ".join(x.split()) for x in lines if x.strip() and not x.startswith("See https"))
        raise BenchError(f"{msg}; fix that override (python -m bench run --cfg job shows every key and type)") from None
    validate(cfg)


@dataclass
class JobConfig:
    seed: int
    backbone: Any
    method: Any
    world: W.WorldConfig
    data: DataConfig
    train: TrainConfig
    eval: EvalConfig
    paths: PathsConfig
    progress: bool = True
    launch: LaunchConfig = field(default_factory=LaunchConfig)


def _check_keys(node, cls, where: str) -> None:
    """Every key of node must be a field of the dataclass cls (recursively). Needed because a node
    composed by Hydra from a structured config accepts `+key=...` and merging drops it silently."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in node.keys():
        if key not in fields:
            raise BenchError(f"unknown key '{where}.{key}'; valid keys of {where}: {', '.join(fields)}")
        sub = node[key]
        default = fields[key].default_factory() if fields[key].default_factory is not dataclasses.MISSING else None
        if isinstance(sub, DictConfig) and dataclasses.is_dataclass(default):
            _check_keys(sub, type(default), f"{where}.{key}")


def typed(node, cls, where: str):
    """Merge a config node onto its dataclass schema; unknown keys and bad types are BenchErrors."""
    _check_keys(node, cls, where)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(cls), node)
    except ConfigKeyError as e:
        valid = ", ".join(f.name for f in dataclasses.fields(cls))
        raise BenchError(f"unknown key '{where}.{e.full_key}'; valid keys of {where}: {valid}") from None
    except ValidationError as e:
        raise BenchError(f"bad value for '{where}.{e.full_key}': {e.msg.splitlines()[0]}") from None
    return OmegaConf.to_object(merged)


def validate(cfg: DictConfig) -> JobConfig:
    """The typed job config. Hydra accepts `+method.typo=1` silently; this rejects it."""
    known = {f.name for f in dataclasses.fields(JobConfig)}
    extra = sorted(set(cfg.keys()) - known)
    if extra:
        raise BenchError(f"unknown top-level key(s) {extra}; valid: {', '.join(sorted(known))}")
    import bench.backbones  # noqa: F401  (registers every backbone)
    import methods  # noqa: F401  (registers every method)
    method_cls = METHODS.get(cfg.method.name)
    loader = BACKBONES.get(cfg.backbone.name)
    job = JobConfig(
        seed=int(cfg.seed), backbone=typed(cfg.backbone, loader.Config, "backbone"),
        method=typed(cfg.method, method_cls.Config, "method"),
        world=typed(cfg.world, W.WorldConfig, "world"), data=typed(cfg.data, DataConfig, "data"),
        train=typed(cfg.train, TrainConfig, "train"), eval=typed(cfg.eval, EvalConfig, "eval"),
        paths=typed(cfg.paths, PathsConfig, "paths"), progress=bool(cfg.get("progress", True)),
        launch=typed(cfg.get("launch", {}), LaunchConfig, "launch"))
    if job.launch.num_processes < 1:
        raise BenchError(f"launch.num_processes must be >= 1, got {job.launch.num_processes}")
    check_config(job.train)          # steps, batch, lr, ... before any sampling or data generation
    beta = getattr(job.method, "beta", None)
    if beta is not None and not (math.isfinite(beta) and beta > 0):
        raise BenchError(f"method.beta must be a finite number > 0, got {beta}")
    if job.data.source == "world" and job.data.n_pairs < 1:
        raise BenchError(f"data.n_pairs must be >= 1, got {job.data.n_pairs}")
    if job.data.source == "world":
        generator_pool(job.data)     # unknown or repeated generators -> BenchError
    if job.train.batch_size % job.launch.num_processes:
        raise BenchError(f"train.batch_size={job.train.batch_size} (the global micro-batch) must be divisible "
                         f"by launch.num_processes={job.launch.num_processes}")
    if job.data.source not in ("world", "file"):
        raise BenchError(f"unknown data.source {job.data.source!r}; valid: world, file")
    if job.data.source == "file" and not job.data.path:
        raise BenchError("data.source=file needs data.path=<Pick-a-Pic-format parquet file>")
    for key, where in (("paths.results", job.paths.results), ("paths.cache", job.paths.cache)):
        check_writable(Path(where), key)
    prompts = eval_prompts(job)      # empty eval set -> BenchError
    # unknown scorers or scorer options, missing weights, world scorers on real prompts -> BenchError
    check_scorers(job.eval, [p.text for p in prompts])
    return job


def check_writable(path: Path, key: str) -> None:
    """`path` is a directory this process can write, or can be created as one (checked before
    any work, creating nothing: a job must not run for minutes and then fail to write)."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        what = "is not a directory" if probe == path else f"cannot be created: {probe} is not a directory"
        raise BenchError(f"{key}={path} {what}; point {key} at a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise BenchError(f"{key}={path} is not writable ({probe} does not allow writing); point {key} at a "
                         "directory you can write")


def eval_prompts(job: JobConfig) -> list:
    """The eval prompts (.id, .text): the world's eval.split, or the real eval.prompt_set."""
    prompts = eval_set(job.eval, job.world)
    if not prompts or job.eval.seeds_per_prompt < 1:
        where = f"split {job.eval.split!r}" if job.eval.prompt_set == "world" else f"prompt_set {job.eval.prompt_set!r}"
        raise BenchError(f"the eval prompt set is empty ({where}: {len(prompts)} prompts, "
                         f"{job.eval.seeds_per_prompt} seeds each); raise eval.max_prompts, "
                         "eval.seeds_per_prompt or world.eval_fraction")
    return prompts


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _save_images(images: torch.Tensor, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    save_file({"images": images.contiguous()}, str(tmp))
    tmp.replace(path)


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
        with exclusive(path, f"scores {path.name}"):
            df = load_entry(path, pd.read_parquet)
            if df is None:
                df = make()
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(path.name + f".tmp{os.getpid()}")
                df.to_parquet(tmp, index=False)
                tmp.replace(path)
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
    job = validate(cfg)
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain["backbone"], plain["method"] = dataclasses.asdict(job.backbone), dataclasses.asdict(job.method)
    for k in ("world", "data", "train", "eval"):
        plain[k] = dataclasses.asdict(getattr(job, k))
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
    weights_id = _key(dataclasses.asdict(job.backbone))
    times["load"] = time.time() - t0

    prompts = eval_prompts(job)
    texts = [p.text for p in prompts for _ in range(job.eval.seeds_per_prompt)]
    seeds = [s for _ in prompts for s in range(job.eval.seeds_per_prompt)]

    if job.launch.compile:
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str((cache / "inductor").resolve()))

    def sample(tx, sd, unet=None, desc="sample", guidance=None, steps=None):
        return generate(backbone, tx, sd, unet=unet, batch_size=job.eval.batch_size,
                        progress=job.progress, desc=desc, compile=job.launch.compile,
                        guidance_scale=guidance, num_inference_steps=steps)

    def base_samples(tx, sd, desc, guidance=None, steps=None):   # cached, shared by every job of these weights
        key = _key(weights_id, tx, sd) if guidance is None and steps is None else _key(weights_id, tx, sd, guidance, steps)
        return cached_samples(cache / "samples" / f"{backbone.name}-{key}.safetensors", tx, sd,
                              lambda a, b: sample(a, b, desc=desc, guidance=guidance, steps=steps),
                              chunk=4 * job.eval.batch_size)

    t = time.time()
    base_images = base_samples(texts, seeds, "sample base")
    times["sample_base"] = time.time() - t

    history, data_info = [], {}
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
                                          world=job.data.source == "world")
        times["data"] = time.time() - t
        t = time.time()
        ckpt_dir = cache / "checkpoints" / out.name
        if job.launch.num_processes > 1:
            policy, history, info = train_distributed(job, plain, backbone, path, ckpt_dir)
            data_info.update(info)
        else:
            callbacks = [] if probe is None else [
                _probe_callback(job, probe, prompts, texts, seeds, base_images, sample)]
            policy, history = train(backbone, method, data, job.train, job.seed, ckpt_dir=ckpt_dir,
                                    progress=job.progress, callbacks=callbacks, ref_cache_dir=cache / "reference")
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
    result = {
        "job": job_hash(plain), "backbone": backbone.name, "method": job.method.name,
        "identity": job_identity(plain), "config": plain, "provenance": provenance(),
        "wall_s": times,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "budget": {"steps": job.train.steps if method.feedback != "none" else 0,
                   "batch_size": job.train.batch_size,
                   "examples": job.train.steps * job.train.batch_size if method.feedback != "none" else 0},
        "data": data_info, "scorers": scorer_info,
        "attributes": {"model": attribute_summary(attrs), "base": attribute_summary(base_attrs)},
        "train_history": history,
    }
    write_job(out, result, df, OmegaConf.to_yaml(cfg))
    # the job is complete: its resumable training state is no longer needed (the final policy
    # weights stay in the checkpoint directory)
    shutil.rmtree(cache / "checkpoints" / out.name / RESUME_DIR, ignore_errors=True)
    # a small PNG sheet (base vs this model, a few eval prompts) for the analysis' image grids
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
    the history, which are read back here. Returns (policy unet, history, data info)."""
    from safetensors.torch import load_file as load
    from bench.train import setup_policy
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    spec = ckpt_dir / "worker.yaml"
    OmegaConf.save(OmegaConf.create({"job": plain, "data_path": str(data_path), "ckpt_dir": str(ckpt_dir),
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
    return policy, info["history"], info["data_info"]


CORPUS_PROBE = {"n": 2048, "seed": 12345}   # corpus images judged to compare defect rates


def defects_vs_corpus(summary: dict, world_cfg: "W.WorldConfig") -> dict:
    """For each attribute, the share of images that fail it (a negative attribute present, a
    positive one missing) in the base's samples and in a fresh draw of the pretraining corpus, and
    their ratio: a defect the base learned from its data appears at about its corpus rate (ratio
    near 1); a ratio far above 1 is a failure of the model's capacity, not a learned mode."""
    from bench import backbones as B
    images, texts = B.render_corpus(world_cfg, CORPUS_PROBE["n"], CORPUS_PROBE["seed"])
    corpus = attribute_summary(attribute_table(images, texts))
    out = {}
    for a in W.ATTRIBUTES:
        flip = a in W.POSITIVE_ATTRIBUTES
        s, c = (1 - summary[a], 1 - corpus[a]) if flip else (summary[a], corpus[a])
        out[a] = {"samples": round(s, 4), "corpus": round(c, 4), "ratio": round(s / c, 2) if c else None}
    return out


def pretrain_and_report(cfg: DictConfig, export: bool = False) -> dict:
    """Pretrain the configured tiny backbone (cached), then measure the base model on the eval
    prompts: per-attribute accuracy and fully-correct rate (gold judge). --export ships it."""
    from bench import backbones as B
    job = validate(cfg)
    if not isinstance(job.backbone, B.TinyBackboneConfig):
        raise BenchError(f"pretrain is for tiny backbones; {job.backbone.name} has pretrained weights")
    path = B.pretrain(job.backbone.name, job.backbone.arch, job.backbone.pretrain, job.world,
                      Path(job.paths.cache), progress=job.progress)
    # wall time of the last phase as trained (a cache hit costs nothing now)
    wall = json.loads((path.parent / "train_log.json").read_text())["wall_s"]
    if export:
        path = B.export_shipped(path, job.backbone.name) / B.PIPELINE_DIR
    bb = B.make_backbone(job.backbone.name, B.load_pipeline_dir(path), job.world.image_size,
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
