"""The job config: its schema, composition and validation, importable without torch.

Everything `python -m bench run` checks before any work lives here (bench.runner re-exports it):
`precheck` composes a sweep's first job in-process and `validate` turns a composed config into a
typed `JobConfig` or stops with one BenchError line. Neither this module nor what it imports at
module level imports torch, diffusers or transformers (bench.lazy), so a bad input is answered in
well under a second plus Hydra's composition.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
from dataclasses import dataclass, field
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from bench import world as W
from bench.data.config import DataConfig
from bench.data.world_pairs import generator_pool
from bench.devices import PRECISIONS
from bench.evaluate import EvalConfig, check_scorers, eval_set
from bench.registry import BACKBONES, METHODS, BenchError, MethodConfig  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)


OPTIMIZERS = ("adamw", "adamw8bit", "adafactor")


@dataclass
class TrainConfig:
    # Optimizer steps. null: the method's budget (its config class's `default_steps`: 1000 for
    # DPO, 300 for the others; `python -m bench list` shows them), set by bench.config.validate.
    steps: int | None = None
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
    # with (bench/backbones/pretraining.py loss_weight). Our option; applies to every method alike.
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
    # ---- paper-scale options (bench/devices.py; presets in sweeps/preset/ set the papers' values)
    # no | fp16 | bf16: forward passes under torch.autocast, the frozen parts (VAE, text encoders, a
    # frozen reference UNet) held in that dtype, fp16 with loss scaling; trainable weights and the
    # optimizer state stay float32. DiffusionDPO launchers: --mixed_precision fp16.
    mixed_precision: str = "no"
    # Recompute activations in the backward pass (diffusers `enable_gradient_checkpointing`): less
    # memory, ~30% more compute. DiffusionDPO forces it for SDXL.
    gradient_checkpointing: bool = False
    # adamw (torch) | adamw8bit (bitsandbytes, the `paper` extra; diffusers DPO LoRA example) |
    # adafactor (transformers; DiffusionDPO SDXL: relative_step=False, scale_parameter=False,
    # clip_threshold 1.0, with train.weight_decay)
    optimizer: str = "adamw"
    # DiffusionDPO train.py --scale_lr: the learning rate is train.lr x the global batch
    # (batch_size x grad_accum; batch_size is already global here): 1e-8 x 2048 = 2.048e-5.
    scale_lr: bool = False


ERROR_WEIGHTINGS = ("none", "v_cap")


def check_config(cfg: TrainConfig) -> None:
    """The training options' values, checked before any work (one line each)."""
    if cfg.steps is not None and cfg.steps < 1:
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
    if cfg.mixed_precision not in PRECISIONS:
        raise BenchError(f"unknown train.mixed_precision {cfg.mixed_precision!r}; valid: {', '.join(PRECISIONS)}")
    if cfg.optimizer not in OPTIMIZERS:
        raise BenchError(f"unknown train.optimizer {cfg.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
    if cfg.optimizer == "adamw8bit" and importlib.util.find_spec("bitsandbytes") is None:
        raise BenchError("train.optimizer=adamw8bit needs bitsandbytes; pip install -e '.[paper]' "
                         "or use train.optimizer=adamw")


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
    # the paper recipe applied with +preset=NAME (sweeps/preset/NAME.yaml sets it); not part of
    # the job identity: the values it sets are
    preset: str | None = None


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
        node = BACKBONES.config(name)(name=name)
        if hasattr(node, "model_id"):
            # a real backbone also turns the trainer's EMA off (the papers' scripts keep none);
            # train.ema_decay=<d> on the command line still sets one
            cs.store(group="backbone", name=name, package="_global_",
                     node={"backbone": node, "train": {"ema_decay": None}})
        else:
            cs.store(group="backbone", name=name, node=node)


def compose_config(overrides: list[str], return_hydra_config: bool = False):
    """The job config that `python -m bench run <overrides>` would get, composed without the CLI
    (for `bench tune` and tests). Hydra errors propagate."""
    from hydra import compose, initialize_config_module
    register_configs()
    with initialize_config_module("bench.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=return_hydra_config)


def _swept(overrides: list[str]) -> dict[str, list[str]]:
    """{key: one override line per value} of Hydra overrides `key=v` or sweeps `key=a,b,...`, in
    order; a later override of a key replaces an earlier one."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    out: dict[str, list[str]] = {}
    for o in OverridesParser.create().parse_overrides(list(overrides)):
        key = o.get_key_element()
        out.pop(key, None)
        if o.is_sweep_override():
            lhs = o.input_line.split("=", 1)[0]          # as typed: +/++ prefix and @package kept
            out[key] = [f"{lhs}={v}" for v in o.sweep_string_iterator()]
        else:
            out[key] = [o.input_line]
    return out


def first_job_overrides(overrides: list[str]) -> list[str]:
    """The overrides of a sweep's first job (the first value of every sweep `key=a,b,...`), without
    command-line flags."""
    return [lines[0] for lines in _swept([o for o in overrides if not o.startswith("-")]).values()]


def sweep_jobs(overrides: list[str], params: dict | None = None) -> list[list[str]]:
    """The jobs `precheck` validates for `python -m bench run <overrides>`: the sweep's first job,
    then, for every other value of each swept key, the first job with that value (as many jobs as
    values, not their product: a value that breaks a job breaks it with any other key's value).
    `params`: the suite's hydra.sweeper.params, which the command line overrides key by key."""
    lines = _swept([f"{k}={v}" for k, v in (params or {}).items()])
    lines.update(_swept([o for o in overrides if not o.startswith("-")]))
    first = [v[0] for v in lines.values()]
    jobs = [first]
    for i, values in enumerate(lines.values()):
        jobs += [first[:i] + [v] + first[i + 1:] for v in values[1:]]
    return jobs


def _swept_values(job: list[str], overrides: list[str], params: dict) -> str:
    """The swept keys' values of one of `sweep_jobs`' jobs, e.g. "method=base seed=0"."""
    lines = _swept([f"{k}={v}" for k, v in params.items()])
    lines.update(_swept([o for o in overrides if not o.startswith("-")]))
    return " ".join(line for line, values in zip(job, lines.values()) if len(values) > 1)


def _composition_error(e: Exception) -> BenchError:
    """Hydra's and OmegaConf's composition errors as one line: their first lines say what and why."""
    lines = [str(e).split("\n")[0]] + ([str(e.__cause__).split("\n")[0]] if e.__cause__ else []) + \
        str(e).split("\n")[1:2]
    msg = ": ".join(" ".join(x.split()) for x in lines if x.strip() and not x.startswith("See https"))
    return BenchError(f"{msg}; fix that override (python -m bench run --cfg job shows every key and type)")


def precheck(overrides: list[str]) -> None:
    """Compose and validate the jobs of `python -m bench run <overrides>` in this process, before
    Hydra launches anything or creates a directory: the first job, and each other value of every
    swept key (`sweep_jobs`; the command line's sweeps and a suite's). A bad type
    (`train.steps=abc`), an unknown key, a bad value or path is one line and exit 2 here, once,
    instead of Hydra's multi-line message (exit 1) or one error per parallel worker. Each job is
    validated again as it starts."""
    from hydra.types import RunMode
    try:
        hydra_cfg = compose_config(first_job_overrides(overrides), return_hydra_config=True).hydra
        multirun = any(o in ("-m", "--multirun") for o in overrides) or hydra_cfg.mode == RunMode.MULTIRUN
        params = hydra_cfg.sweeper.get("params")
        params = OmegaConf.to_container(params) if multirun and params is not None else {}
        jobs = sweep_jobs(overrides, params)
    except BenchError:
        raise
    except Exception as e:
        raise _composition_error(e) from None
    swept = [o for o in overrides if not o.startswith("-") and len(_swept([o]).popitem()[1]) > 1]
    if swept and not multirun:
        raise BenchError(f"{swept[0]} sweeps over values, which needs -m (--multirun); add -m to run one job per "
                         "value, or write key=[a,b] for a list value")
    for job in jobs:
        try:
            try:
                cfg = compose_config(job)
            except Exception as e:
                raise _composition_error(e) from None
            validate(cfg)
        except BenchError as e:
            if len(jobs) == 1:
                raise
            raise BenchError(f"{e} (in the sweep's job {_swept_values(job, overrides, params)})") from None


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
    preset: str | None = None


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
        launch=typed(cfg.get("launch", {}), LaunchConfig, "launch"), preset=cfg.get("preset"))
    if job.train.steps is None:
        job.train.steps = type(job.method).default_steps
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
    from bench.data.stream import STREAM_SOURCES, check_stream_source
    if job.data.source not in ("world", "file") + STREAM_SOURCES:
        raise BenchError(f"unknown data.source {job.data.source!r}; valid: world, file, {', '.join(STREAM_SOURCES)}")
    if job.data.source in STREAM_SOURCES:
        check_stream_source(job.data, job.method.name, job.train)   # layout, shards, columns, options
    if job.data.source == "file" and not job.data.path:
        raise BenchError("data.source=file needs data.path=<Pick-a-Pic-format parquet file>")
    if job.data.source == "file":
        check_preference_source(Path(job.data.path))
    attr_file = getattr(job.method, "attributes_file", None)      # CPO on real data (docs/methods.md)
    if attr_file and not Path(attr_file).is_file():
        raise BenchError(f"method.attributes_file {attr_file} not found; it holds the per-image attribute "
                         "annotations of data.path (format: docs/methods.md, 'CPO attribute file')")
    if (hasattr(job.method, "attributes_file") and not attr_file and job.data.source == "file"
            and not Path(job.data.path).is_dir()):
        raise BenchError(f"method={job.method.name} on {job.data.path} needs per-image attribute annotations: set "
                         "method.attributes_file=<attributes.json> (format: docs/methods.md, 'CPO attribute file')")
    check_backbone_paths(job.backbone)
    if hasattr(job.backbone, "model_id") and job.preset is None:
        log.warning("backbone %s without a preset: train.* are the embedded world's defaults unless set "
                    "(now lr=%g, %d steps x %d); +preset=NAME applies a paper's recipe (python -m bench list)",
                    job.backbone.name,
                    job.train.lr, job.train.steps, job.train.batch_size)
    for key, where in (("paths.results", job.paths.results), ("paths.cache", job.paths.cache)):
        check_writable(Path(where), key)
    prompts = eval_prompts(job)      # empty eval set -> BenchError
    # unknown scorers or scorer options, missing weights, world scorers on real prompts -> BenchError
    check_scorers(job.eval, [p.text for p in prompts])
    return job


WEIGHTS_KEY = "weights_fingerprint"   # top-level key of a resolved config (bench.results.job_identity)


def resolve(cfg: DictConfig) -> tuple[JobConfig, dict]:
    """The typed job and its resolved plain config, from which the job's identity, hash and
    directory are computed (bench.results.job_dir): every section as its typed dataclass, plus
    the fingerprint of weights named by a path or hub id (`weights_fingerprint`). The runner, the
    paper specs and tuning all name jobs through this function."""
    job = validate(cfg)
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain["backbone"], plain["method"] = dataclasses.asdict(job.backbone), dataclasses.asdict(job.method)
    for k in ("world", "data", "train", "eval"):
        plain[k] = dataclasses.asdict(getattr(job, k))
    fp = weights_fingerprint(job.backbone, Path(job.paths.cache))
    if fp:
        plain[WEIGHTS_KEY] = fp
    return job, plain


def weights_fingerprint(backbone, cache_dir: Path) -> dict:
    """{what: fingerprint} of the weight files a backbone config names (bench/fingerprint.py):
    a tiny backbone's `weights=<dir>`, a real one's `path` or its hub snapshot, and `vae_path`.
    Empty for the shipped and pretrained tiny weights: their recipe and checksums name them."""
    from bench.fingerprint import fingerprint, hub_snapshot
    out = {}
    weights = getattr(backbone, "weights", None)
    if weights not in (None, "shipped", "pretrain") and Path(weights).is_dir():
        out["weights"] = fingerprint(weights, cache_dir)
    if hasattr(backbone, "model_id"):
        root = Path(backbone.path) if backbone.path else hub_snapshot(backbone.model_id)
        if root is not None and root.is_dir():
            out["pipeline"] = fingerprint(root, cache_dir)
        if backbone.vae_path:
            vae = Path(backbone.vae_path) if Path(backbone.vae_path).is_dir() else hub_snapshot(backbone.vae_path)
            if vae is not None and vae.is_dir():
                out["vae"] = fingerprint(vae, cache_dir)
    return out


def check_backbone_paths(backbone) -> None:
    """A pipeline directory the backbone config names (tiny `backbone.weights=<dir>`, real
    `backbone.path=<dir>`) holds a saved pipeline; the message is the loader's
    (bench.backbones.load_pipeline_dir), here before any work instead of after the job started."""
    for key in ("weights", "path"):
        value = getattr(backbone, key, None)
        if not value or (key == "weights" and value in ("shipped", "pretrain")):
            continue
        if not (Path(value) / "model_index.json").is_file():
            raise BenchError(f"no pipeline at {value} (model_index.json missing); "
                             f"pass backbone.{key}=<dir saved with save_pretrained>")


def check_preference_source(path: Path) -> None:
    """data.path exists; a file there is a readable Pick-a-Pic-format parquet file (footer and
    columns: bench.data.pairs.open_pickapic) whose labelled rows carry valid labels (the label columns
    only, no image is decoded). A directory (KTO or attribute files) is read by its loader."""
    from bench.data.pairs import check_labels, open_pickapic
    if not path.exists():
        raise BenchError(f"preference file not found: {path}; set data.path to a Pick-a-Pic-format parquet file")
    if path.is_dir():
        return
    pf = open_pickapic(path)
    columns = ["label_0", "label_1"] + (["has_label"] if "has_label" in pf.schema_arrow.names else [])
    try:
        table = pf.read(columns=columns)
    except Exception as e:     # pyarrow: a damaged page, a truncated column chunk
        raise BenchError(f"{path}: not a readable parquet file ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
                         "replace it") from None
    import numpy as np
    l0, l1 = (np.asarray(table[c].to_numpy(zero_copy_only=False), dtype=float) for c in ("label_0", "label_1"))
    ok = ((l0 == 1) & (l1 == 0)) | ((l0 == 0) & (l1 == 1)) | ((l0 == 0.5) & (l1 == 0.5))
    if "has_label" in columns:         # rows without a choice are left out by every reader
        ok |= ~np.asarray(table["has_label"].to_numpy(zero_copy_only=False), dtype=bool)
    bad = np.flatnonzero(~ok)
    if bad.size:
        i = int(bad[0])
        check_labels(float(l0[i]), float(l1[i]), path, i)


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
