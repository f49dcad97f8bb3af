"""The job config: its schema, composition and validation, importable without torch.

Everything `python -m bench run` checks before any work lives here (bench.runner re-exports it):
`precheck` composes a sweep's first job in-process and `validate` turns a composed config into a
typed `JobConfig` or stops with one BenchError line. Neither this module nor what it imports at
module level imports torch, diffusers or transformers (bench.lazy), so a bad input is answered in
well under a second plus Hydra's composition.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from bench import world as W
from bench.data import DataConfig
from bench.evaluate import EvalConfig, check_scorers, eval_set
from bench.registry import BACKBONES, METHODS, BenchError


@dataclass
class TrainConfig:
    steps: int = 300
    batch_size: int = 16               # pairs per micro-batch for pair methods, images for image methods
    # Micro-batches per optimizer step: the effective batch is batch_size x grad_accum (DiffusionDPO
    # reaches 2048 pairs per step as 1 x 128 accumulation x 16 GPUs, launchers/sd15.sh).
    grad_accum: int = 1
    # Measured on tiny-sd15 (full fine-tuning, 16 pairs x 300 steps): DPO at 1e-4 collapsed the
    # model (gold win rate 0.054); 1e-5 trains stably (0.506 [0.479, 0.532]). Official: 2.048e-5
    # at 2048 pairs per step.
    lr: float = 1e-5
    # AdamW betas/eps/weight decay as DiffusionDPO's SD1.5 launcher (argparse defaults in train.py)
    weight_decay: float = 1e-2
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    warmup: int = 20                   # constant_with_warmup, the official DPO schedule
    grad_clip: float = 1.0             # DiffusionDPO train.py max_grad_norm
    finetune: str = "full"             # full | lora
    lora_rank: int = 8                 # diffusers DPO LoRA example: r=8, alpha=r, to_q/k/v/out
    # auto | frozen_copy | adapters_disabled. auto: adapters_disabled for LoRA, else frozen_copy;
    # a method that refreshes its reference (method.ref_refresh_every > 0) gets a refreshed copy.
    reference: str = "auto"
    # 20% empty captions: DiffusionDPO train.py --proportion_empty_prompts default 0.2 (also
    # diffusion-kto); the diffusers port uses 0. Applied to every method alike.
    empty_prompt_prob: float = 0.2
    log_every: int = 25
    # Resumable state (policy, optimizer, LR schedule, RNG, step; bench/checkpoint.py) every N
    # optimizer steps and at the end, into the job's checkpoint directory; a requeued job (SLURM
    # time limit) resumes from it. 0: never. Not part of the job identity (bench.results).
    checkpoint_every: int = 100
    # Per-sample error weighting w(t), the omega(lambda_t) of the Diffusion-DPO objective (Wallace
    # et al. 2023, Eq. 14), which the reference sets constant: `none` (reference). `v_cap` weights
    # the epsilon error by min(1/abar_t, error_weight_cap) (x abar_t for v targets), i.e. the
    # v-prediction loss in epsilon units, capped: the weighting the tiny bases were pretrained
    # with (bench/backbones.py loss_weight). Our option; applies to every method alike.
    error_weighting: str = "none"
    error_weight_cap: float = 100.0
    # EMA of the trained weights, returned as the policy (diffusers EMAModel, as the text-to-image
    # fine-tuning example's --use_ema). Fixed decay from the first step, so the EMA starts at the
    # base weights. null: the last iterate, as DiffusionDPO train.py. Our choice, for every method
    # alike: DPO on tiny-sd15 (lr 1e-5, 300 x 16 pairs) reached gold win rates 0.520 and 0.515
    # (seeds 0, 1) with 0.99, against 0.506 (seed 0) without; docs/methods.md has the table.
    ema_decay: float | None = 0.99
    # Reference errors precomputed for K fixed (noise, timestep, caption-dropout) draws per
    # training example and shared by every job with the same reference and data (bench/refcache.py;
    # TRL's precompute_ref_log_probs for diffusion). 0: a fresh draw every step and a live
    # reference forward (DiffusionDPO train.py). Our option; its effect is in docs/performance.md.
    ref_draws: int = 0
    ref_draw_seed: int = 0


@dataclass
class MethodConfig:
    name: str = ""


ERROR_WEIGHTINGS = ("none", "v_cap")


def check_config(cfg: TrainConfig) -> None:
    """The training options' values, checked before any work (one line each)."""
    if cfg.steps < 1:
        raise BenchError(f"train.steps must be >= 1, got {cfg.steps}")
    if cfg.batch_size < 1:
        raise BenchError(f"train.batch_size must be >= 1, got {cfg.batch_size}")
    if not (math.isfinite(cfg.lr) and cfg.lr > 0):
        raise BenchError(f"train.lr must be a finite number > 0, got {cfg.lr}")
    if cfg.grad_accum < 1:
        raise BenchError(f"train.grad_accum must be >= 1, got {cfg.grad_accum}")
    if cfg.error_weighting not in ERROR_WEIGHTINGS:
        raise BenchError(f"unknown train.error_weighting {cfg.error_weighting!r}; valid: {', '.join(ERROR_WEIGHTINGS)}")
    if cfg.ema_decay is not None and not 0.0 < cfg.ema_decay < 1.0:
        raise BenchError(f"train.ema_decay must be in (0, 1) or null, got {cfg.ema_decay}")
    if cfg.ref_draws < 0:
        raise BenchError(f"train.ref_draws must be >= 0 (0: no precomputed reference), got {cfg.ref_draws}")


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
    import bench.backbones  # noqa: F401  (registers every backbone)
    import methods  # noqa: F401  (declares every method)
    cs = ConfigStore.instance()
    cs.store(name="root_schema", node=RootSchema)
    for name in METHODS.names():
        cs.store(group="method", name=name, node=METHODS.config(name)(name=name))
    for name in BACKBONES.names():
        cs.store(group="backbone", name=name, node=BACKBONES.config(name)(name=name))


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
    import methods  # noqa: F401  (declares every method)
    method_config, backbone_config = METHODS.config(cfg.method.name), BACKBONES.config(cfg.backbone.name)
    job = JobConfig(
        seed=int(cfg.seed), backbone=typed(cfg.backbone, backbone_config, "backbone"),
        method=typed(cfg.method, method_config, "method"),
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
