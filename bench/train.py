"""One method-agnostic trainer.

The trainer owns data batching, noise and timestep sampling (shared inside a pair), the
prediction target (from the scheduler's prediction_type), LoRA or full fine-tuning, the reference
model (one mechanism, `Reference`: a frozen copy, or the policy with its adapters disabled, either
optionally refreshed from the policy every N steps by copy or EMA), caption dropout, the
optimizer, logging and checkpoints. A method only turns per-sample denoising errors into a loss;
methods that need more use three hooks: `prepare` (turn feedback into training data, train an
auxiliary model), `condition` (extra conditioning tokens) and `batch_loss` (the batch's labels,
weights and a `StepContext` that evaluates other models on the same noised latents).

Training data the trainer batches (feedback kinds: bench/data/loaders.py):
    PairData   winner-first pairs (+ optional per-pair `weights` and `extra` tensors); pair
               methods draw non-tie pairs with weight > 0, `images` methods take the winners
    ImageData  single images (+ optional `labels`, `sampling_weights`, `extra`); drawn with
               replacement, proportionally to `sampling_weights` when given

Per-sample error, as in Diffusion-DPO's train.py: e(x) = mean over C, H, W of (pred - target)^2.
The step's random draws and that error (bench/objective.py) and the optimisation pieces
(bench/optim.py) are shared with the tiny backbones' pretraining.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import time

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from bench.checkpoint import RESUME_DIR, fingerprint, load_state, restore, save_state
# the schema lives in bench.config (importable without torch); imported here for bench.train's users
from bench.config import ERROR_WEIGHTINGS, MethodConfig, TrainConfig, check_config  # noqa: F401
from bench.registry import BenchError
# the method contract (bench/method.py), imported here for bench.train's users
from bench.method import Batch, Method, RefreshSpec  # noqa: F401
from bench.data.stream import rank_seed
from bench.objective import draw_examples, draw_noise, drop_captions, per_sample_error
from bench.optim import clip_and_step, ema_decay_at, ema_update, lr_schedule, make_optimizer
from bench.files import atomic

log = logging.getLogger(__name__)


def _rows(d: dict | None, i: torch.Tensor) -> dict:
    return {k: v[i] for k, v in (d or {}).items()}


def _batches(method: Method, data, cfg: TrainConfig, gen: torch.Generator):
    """Endless stream of batches in the shape the method's feedback asks for."""
    if method.feedback == "none":
        raise BenchError(f"method feedback {method.feedback!r} cannot be trained on")
    paired_data = hasattr(data, "winners")
    if method.feedback in ("pairs", "votes", "attributes") and not paired_data:
        raise BenchError(f"{type(method).__name__} trains on pairs but got {type(data).__name__}; "
                         "its prepare() must return PairData")
    if method.feedback == "binary" and (paired_data or getattr(data, "labels", None) is None):
        raise BenchError(f"{type(method).__name__} trains on labelled single images, got {type(data).__name__}")
    if not paired_data:                                    # ImageData: single images
        n = len(data.captions)
        if n == 0:
            raise BenchError("no images to train on; add data")
        w = data.sampling_weights
        while True:
            i = draw_examples(n, cfg.batch_size, gen, w)
            yield Batch(data.images[i], [data.captions[k] for k in i.tolist()], False,
                        labels=None if data.labels is None else data.labels[i],
                        extra=_rows(data.extra, i), groups=i)
    usable = ~data.ties
    weights = getattr(data, "weights", None)
    if weights is not None:
        usable = usable & (weights > 0)
    keep = torch.nonzero(usable).flatten()
    if method.feedback == "images":
        # The preferred image of every non-tie pair (the Diffusion-DPO paper's SFT baseline).
        while True:
            i = keep[draw_examples(len(keep), cfg.batch_size, gen)]
            yield Batch(data.winners[i], [data.captions[k] for k in i.tolist()], False, groups=i)
    if len(keep) == 0:
        raise BenchError("no non-tie pairs to train on; set data.keep_ties=false or add data")
    while True:
        i = keep[draw_examples(len(keep), cfg.batch_size, gen)]
        caps = [data.captions[k] for k in i.tolist()]
        yield Batch(torch.cat([data.winners[i], data.losers[i]]), caps + caps, True,
                    weights=None if weights is None else weights[i],
                    extra=_rows(getattr(data, "extra", None), i), groups=i)


class Reference:
    """The reference model of every method, one mechanism chosen by config.

    mode `frozen_copy`: a frozen deep copy of the policy at the start; `adapters_disabled` (LoRA):
    the policy itself with its adapters switched off, i.e. the base model (diffusers DPO LoRA port;
    diffusion-kto `--use_lora`). A `RefreshSpec` (from the method config) makes the copy follow the
    policy: after optimizer step s with s % every == 0 the copy's trainable parameters (all of them
    for full fine-tuning, the adapters for LoRA) are set to the policy's (`copy`) or moved toward
    them (`ema`). A refreshed reference needs a copy, so `auto` picks frozen_copy then.
    `refreshed_at` lists the steps after which it was refreshed."""

    def __init__(self, unet, mode: str, refresh: RefreshSpec | None = None):
        self.unet, self.mode, self.refresh = unet, mode, refresh
        self.refreshed_at: list[int] = []
        self._n_ema = 0
        if refresh is not None:
            if refresh.every < 0 or refresh.kind not in ("copy", "ema"):
                raise BenchError(f"bad reference refresh {refresh}; every >= 0 and kind copy or ema")
            if mode == "adapters_disabled":
                raise BenchError("a refreshed reference needs train.reference=frozen_copy (or auto), "
                                 "not adapters_disabled")
        if mode == "frozen_copy":
            self.ref = copy.deepcopy(unet).requires_grad_(False).eval()
        elif mode == "adapters_disabled":
            self.ref = None
        else:
            raise BenchError(f"unknown train.reference {mode!r}; valid: auto, frozen_copy, adapters_disabled")

    def __call__(self, fn):
        """fn(model) under the reference weights."""
        if self.ref is not None:
            return fn(self.ref)
        self.unet.disable_adapters()
        try:
            return fn(self.unet)
        finally:
            self.unet.enable_adapters()

    @torch.no_grad()
    def after_step(self, step: int) -> bool:
        """Called after optimizer step `step` (1-based); refreshes when the spec says so."""
        r = self.refresh
        if r is None or r.every <= 0 or step % r.every:
            return False
        pairs = [(q, p) for q, p in zip(self.ref.parameters(), self.unet.parameters()) if p.requires_grad]
        if r.kind == "copy":
            for q, p in pairs:
                q.copy_(p)
        else:
            n, d = self._n_ema, r.ema_decay
            if r.ema_warmup:   # diffusers EMAModel.get_decay (use_ema_warmup=False): 0, then (1+n)/(10+n)
                d = 0.0 if n == 0 else ema_decay_at(d, n)
            ema_update([q for q, _ in pairs], [p for _, p in pairs], d)
            self._n_ema += 1
        self.refreshed_at.append(step)
        return True


def setup_policy(unet, cfg: TrainConfig, refresh: RefreshSpec | None = None, with_reference: bool = True):
    """Returns (policy, reference) where reference(fn) runs fn under the reference weights
    (None when with_reference is False)."""
    refreshing = refresh is not None and refresh.every > 0
    mode = cfg.reference if cfg.reference != "auto" else (
        "adapters_disabled" if cfg.finetune == "lora" and not refreshing else "frozen_copy")
    if cfg.finetune == "lora":
        from peft import LoraConfig
        unet.requires_grad_(False)
        unet.add_adapter(LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_rank, init_lora_weights="gaussian",
                                    target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    elif cfg.finetune == "full":
        unet.requires_grad_(True)
    else:
        raise BenchError(f"unknown train.finetune {cfg.finetune!r}; valid: full, lora")
    if mode == "adapters_disabled" and cfg.finetune != "lora":
        raise BenchError("train.reference=adapters_disabled needs train.finetune=lora")
    if not with_reference:
        if mode not in ("frozen_copy", "adapters_disabled"):
            raise BenchError(f"unknown train.reference {cfg.reference!r}; valid: auto, frozen_copy, adapters_disabled")
        return unet, None
    return unet, Reference(unet, mode, refresh if refreshing else None)


class StepContext:
    """What a method may evaluate besides the policy's and reference's errors: any model on the
    same noised latents (same noise and timesteps) of this step, optionally on a subset of rows
    (`index`) and under other conditioning (a dict of batch-first tensors for those rows)."""

    def __init__(self, backbone, unet, reference, latents, noise, t, cond, step: int, weights=None):
        self.backbone, self.unet, self.reference = backbone, unet, reference
        self.latents, self.noise, self.t, self.cond, self.step = latents, noise, t, cond, step
        self.weights = weights             # w(t) per sample (TrainConfig.error_weighting) or None

    def cond_rows(self, index: torch.Tensor | None) -> dict:
        return dict(self.cond) if index is None else {k: v[index] for k, v in self.cond.items()}

    def errors(self, model, cond: dict | None = None, index: torch.Tensor | None = None) -> torch.Tensor:
        cond = self.cond_rows(index) if cond is None else cond
        lat, noise, t, w = self.latents, self.noise, self.t, self.weights
        if index is not None:
            lat, noise, t = lat[index], noise[index], t[index]
            w = None if w is None else w[index]
        return per_sample_error(self.backbone, model, lat, noise, t, cond, w)

    @torch.no_grad()
    def policy_errors(self, cond: dict | None = None, index: torch.Tensor | None = None) -> torch.Tensor:
        return self.errors(self.unet, cond, index)

    @torch.no_grad()
    def reference_errors(self, cond: dict | None = None, index: torch.Tensor | None = None) -> torch.Tensor:
        if self.reference is None:
            raise BenchError("this method asked for reference errors but declared needs_reference=False")
        return self.reference(lambda m: self.errors(m, cond, index))


def error_weights(backbone, t: torch.Tensor, cfg: TrainConfig) -> torch.Tensor | None:
    """w(t) per sample for `cfg.error_weighting` (None: constant 1; check_config has checked it)."""
    if cfg.error_weighting == "none":
        return None
    abar = backbone.noise_scheduler.alphas_cumprod.to(t.device)[t]
    w = torch.clamp(1 / abar, max=cfg.error_weight_cap)
    return w * abar if backbone.prediction_type == "v_prediction" else w


def learning_rate(cfg: TrainConfig) -> float:
    """train.lr, times the global batch (batch_size x grad_accum) with train.scale_lr."""
    return cfg.lr * cfg.batch_size * cfg.grad_accum if cfg.scale_lr else cfg.lr


def train(backbone, method: Method, data, cfg: TrainConfig, seed: int, ckpt_dir: Path | None = None,
          progress: bool = True, unet=None, callbacks=(), accelerator=None, ref_cache_dir: Path | None = None,
          info: dict | None = None):
    """Fine-tune backbone.unet (or `unet`) with the method; returns (policy unet, history of
    logged metrics).

    ckpt_dir: the final policy weights go to <ckpt_dir>/unet.safetensors; with
    cfg.checkpoint_every > 0 a resumable state goes to <ckpt_dir>/resume every that many steps
    and at the end, and training resumes from it when it is there (bench/checkpoint.py).
    callbacks: objects with `every` (steps) and `__call__(step, unet)`, called after every
    `every`-th optimizer step under a forked RNG (they cannot change the training run); an
    exception they raise (e.g. optuna.TrialPruned) stops training, after the checkpoint.
    accelerator: an `accelerate.Accelerator` for data-parallel training (bench/worker.py).
    ref_cache_dir: where the reference errors of `cfg.ref_draws` fixed draws are cached (None:
    computed in memory for this run only; bench/refcache.py).
    `cfg.batch_size` is the *global* micro-batch: every process draws the same global batch
    from the shared generator (same noise, timesteps and caption dropout as one process would)
    and computes its loss on its 1/num_processes of the pairs or images; DDP averages the
    gradients. So the global batch per optimizer step is batch_size x grad_accum whatever the
    number of processes, and the run follows the 1-process run up to floating-point reduction
    order (for losses that are means over the batch; KTO's batch-mean reference point is taken
    per process). Only the main process writes checkpoints.
    Device and precision (bench/devices.py): everything runs on this process's accelerate device,
    under train.mixed_precision; random draws are made on the CPU generator and moved there, so a
    run draws the same noise on any device. `info` (a dict) receives the device, the effective
    learning rate and where every module's parameters and buffers were during training."""
    check_config(cfg)
    world = accelerator.num_processes if accelerator is not None else 1
    rank = accelerator.process_index if accelerator is not None else 0
    main_process = rank == 0
    if cfg.batch_size % world:
        raise BenchError(f"train.batch_size={cfg.batch_size} (the global micro-batch) must be divisible by "
                         f"launch.num_processes={world}")
    from bench.devices import Precision, job_device, place, placement, frozen_modules, device_record
    device = job_device(accelerator)
    precision = Precision(cfg.mixed_precision, device)
    place(backbone, device, precision)
    data = method.prepare(backbone, data, cfg, seed, progress)
    streamed = getattr(data, "streamed", False)     # bench/data/stream.py: each rank draws for its own pairs
    gen = torch.Generator().manual_seed(seed if not streamed else rank_seed(seed, rank))
    torch.manual_seed(seed if not streamed else rank_seed(seed, rank))
    unet = backbone.unet if unet is None else unet.to(device=device, dtype=torch.float32)
    unet, reference = setup_policy(unet, cfg, refresh=method.reference_refresh(),
                                   with_reference=method.needs_reference)
    if reference is not None and reference.ref is not None and reference.refresh is None:
        reference.ref.to(precision.dtype)        # a frozen reference is held in the frozen parts' dtype
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    extra = list(method.extra_parameters())
    for p in extra:
        p.data = p.data.to(device)
    policy_params = [p for p in unet.parameters() if p.requires_grad]
    params = policy_params + extra
    lr = learning_rate(cfg)
    opt = make_optimizer(params, cfg.optimizer, lr, cfg.weight_decay, (cfg.adam_beta1, cfg.adam_beta2), cfg.adam_eps)
    scaler = precision.scaler()
    sched = lr_schedule(opt, cfg.warmup)
    ema = None
    if cfg.ema_decay is not None:
        from diffusers.training_utils import EMAModel
        ema = EMAModel(policy_params, decay=cfg.ema_decay, min_decay=cfg.ema_decay)
        ema.optimization_step = 1      # get_decay(step) returns 0 (a copy) for the first step otherwise
    if info is not None:
        where = {"policy": unet, **frozen_modules(backbone),
                 "reference": None if reference is None else reference.ref,
                 "ema": None if ema is None else ema.shadow_params, "extra": extra or None}
        info.update({"device": device_record(device), "mixed_precision": cfg.mixed_precision,
                     "optimizer": cfg.optimizer, "lr": lr, "placement": placement(where)})
    captions = sorted(set(data.captions) | {""})
    enc = backbone.encode_prompts(captions)      # flat dict of per-caption tensors (SDXL: 3 keys)
    caption_row = {c: i for i, c in enumerate(captions)}
    n_t = backbone.noise_scheduler.config.num_train_timesteps
    draws = None
    if cfg.ref_draws > 0 and reference is not None:
        draws = _reference_draws(backbone, method, data, reference, enc, caption_row, cfg, n_t,
                                 ref_cache_dir, progress and main_process, precision.autocast)
    batches = data.batches(method, backbone, cfg, rank, world) if streamed else _batches(method, data, cfg, gen)
    history, window, start, wall0 = [], [], 0, 0.0
    state_dir = Path(ckpt_dir) / RESUME_DIR if ckpt_dir is not None and cfg.checkpoint_every > 0 else None
    fp = fingerprint({k: v for k, v in dataclasses.asdict(cfg).items() if k != "checkpoint_every"}, seed,
                     dataclasses.asdict(method.cfg) if dataclasses.is_dataclass(method.cfg) else repr(method.cfg),
                     len(data.captions))
    if state_dir is not None:
        saved = load_state(state_dir, fp)
        if saved is not None:
            meta, tensors = saved
            restore(meta, tensors, unet=unet, reference=reference, extra_params=extra, opt=opt,
                    sched=sched, gen=gen, ema=ema, scaler=scaler)
            start, history, window, wall0 = meta["step"], meta["history"], meta["window"], meta["wall_s"]
            log.info("resumed training from %s at step %d of %d", state_dir, start, cfg.steps)
    # the batch stream is a pure function of `gen`, so the restored generator continues it
    model = accelerator.prepare_model(unet) if world > 1 else unet     # DDP on more than one process
    t0 = time.time() - wall0
    bar = tqdm(range(start, cfg.steps), total=cfg.steps, initial=start, desc=f"train {type(method).__name__}",
               disable=not progress or not main_process, mininterval=2)
    for step in bar:
        opt.zero_grad(set_to_none=True)
        micro = []
        for j in range(cfg.grad_accum):
            sync = world == 1 or j == cfg.grad_accum - 1          # all-reduce once per optimizer step
            with contextlib.nullcontext() if sync else accelerator.no_sync(model):
                with precision.autocast():
                    loss, metrics = _micro_step(backbone, method, unet, reference, next(batches), enc,
                                                caption_row, cfg, n_t, gen, step, model=model, rank=rank,
                                                world=world, draws=draws)
                scaler.scale(loss / cfg.grad_accum).backward()
            micro.append({"loss": loss.item(), **{k: float(v) for k, v in metrics.items()}})
        if world > 1:
            for p in extra:                       # not inside the DDP module: average by hand
                if p.grad is not None:
                    p.grad.copy_(accelerator.reduce(p.grad, "mean"))
            keys = list(micro[0])
            vals = accelerator.reduce(torch.tensor([[m[k] for k in keys] for m in micro], dtype=torch.float64), "mean")
            micro = [dict(zip(keys, row.tolist())) for row in vals]
        clip_and_step(opt, sched, params, cfg.grad_clip, scaler)   # fp16: unscaled before clipping
        if ema is not None:
            ema.step(policy_params)
        if reference is not None:
            reference.after_step(step + 1)
        window.append({k: float(np.mean([m[k] for m in micro])) for k in micro[0]})
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            row = {"step": step + 1, **{k: float(np.mean([w[k] for w in window])) for k in window[0]},
                   "wall_s": time.time() - t0}
            history.append(row)
            window = []
            bar.set_postfix(loss=f"{row['loss']:.4f}")
            log.info("step %d %s", step + 1, {k: round(v, 4) for k, v in row.items() if k != "step"})
        if state_dir is not None and ((step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps):
            if main_process:
                save_state(state_dir, step=step + 1, fp=fp, unet=unet, lora=cfg.finetune == "lora",
                           reference=reference, extra_params=extra, opt=opt, sched=sched, gen=gen,
                           history=history, window=window, wall_s=time.time() - t0, ema=ema, scaler=scaler)
            if world > 1:
                accelerator.wait_for_everyone()
        for cb in callbacks:
            if (step + 1) % cb.every == 0:
                with torch.random.fork_rng(devices=[]):
                    cb(step + 1, unet)
                unet.train()
    if ema is not None:
        ema.copy_to(policy_params)
    unet.eval()
    if ckpt_dir is not None and main_process:
        save_checkpoint(unet, Path(ckpt_dir) / "unet.safetensors", lora=cfg.finetune == "lora")
    return unet, history


def _shard(b: Batch, rank: int, world: int) -> tuple[Batch, torch.Tensor]:
    """This process's part of a global micro-batch: groups (pairs, or single images) rank*k to
    (rank+1)*k with k = groups / world; returns the local batch and its image rows."""
    n = len(b.captions) // 2 if b.paired else len(b.captions)
    k = n // world
    g = torch.arange(rank * k, (rank + 1) * k)
    rows = torch.cat([g, g + n]) if b.paired else g
    return Batch(b.images[rows], [b.captions[i] for i in rows.tolist()], b.paired,
                 labels=None if b.labels is None else b.labels[rows],
                 weights=None if b.weights is None else b.weights[g],
                 extra={k_: v[g] for k_, v in b.extra.items()}), rows


class ReferenceDraws:
    """`cfg.ref_draws` fixed draws per training example with the reference's errors on each
    (bench/refcache.py): `take` gives a micro-batch's noise, timesteps, caption dropout and the
    reference's (unweighted) errors without running the reference."""

    def __init__(self, draws, table: torch.Tensor):
        self.draws, self.table = draws, table

    def take(self, b: Batch, gen: torch.Generator):
        groups = b.groups
        ks = torch.randint(0, self.draws.k, (len(groups),), generator=gen)
        noise, t, drop = self.draws.take(groups, ks)
        cached = self.table[groups, ks]                    # (n, images per example)
        if b.paired:                                       # winners first, then losers
            return noise.repeat(2, 1, 1, 1), t.repeat(2), drop + drop, torch.cat([cached[:, 0], cached[:, 1]])
        return noise, t, drop, cached[:, 0]


def _reference_draws(backbone, method: Method, data, reference, enc: dict, caption_row: dict,
                     cfg: TrainConfig, n_t: int, cache_dir: Path | None, progress: bool,
                     autocast=contextlib.nullcontext) -> ReferenceDraws:
    """The fixed draws and the reference's errors on them (cached under cache_dir)."""
    from bench.refcache import Draws, cache_key, reference_table
    if reference.refresh is not None:
        raise BenchError("train.ref_draws needs a frozen reference, but this method refreshes its reference "
                         "(method.ref_refresh_every > 0); set train.ref_draws=0")
    if type(method).condition is not Method.condition:
        raise BenchError(f"train.ref_draws: {type(method).__name__} conditions the reference on more than the "
                         "caption, so its errors cannot be precomputed; set train.ref_draws=0")
    paired = hasattr(data, "winners")
    images = torch.cat([data.winners, data.losers]) if paired else data.images
    n = len(data.captions)
    shape = tuple(backbone.encode_images(images[:1].float() / 255.0).shape[1:])
    draws = Draws(cfg.ref_draws, cfg.ref_draw_seed, shape, n_t, cfg.empty_prompt_prob)

    def errors_of(groups: torch.Tensor, ks: torch.Tensor) -> torch.Tensor:
        noise, t, drop = draws.take(groups, ks)
        caps = [data.captions[g] for g in groups.tolist()]
        if paired:
            imgs, caps = torch.cat([data.winners[groups], data.losers[groups]]), caps + caps
            noise, t, drop = noise.repeat(2, 1, 1, 1), t.repeat(2), drop + drop
        else:
            imgs = data.images[groups]
        rows = torch.tensor([caption_row["" if d else c] for c, d in zip(caps, drop)])
        cond = {k: v[rows] for k, v in enc.items()}
        latents = backbone.encode_images(imgs.float() / 255.0)
        noise, t = noise.to(latents.device), t.to(latents.device)
        cond = {k: v.to(latents.device) for k, v in cond.items()}
        with torch.no_grad(), autocast():
            err = reference(lambda m: per_sample_error(backbone, m, latents, noise, t, cond)).cpu()
        return err.view(2, -1).T if paired else err[:, None]

    path = None
    if cache_dir is not None:
        weights = reference(lambda m: {k: v for k, v in m.state_dict().items()})
        key = cache_key(weights, images, list(data.captions), paired, draws,
                        {"backbone": backbone.name, "prediction_type": backbone.prediction_type})
        path = Path(cache_dir) / f"{backbone.name}-{key}.safetensors"
    # batches of the training micro-batch's shape: the reference then runs on the same input
    # shapes as a live reference would, which keeps its errors equal to the bit on this CPU
    per = cfg.batch_size
    if path is None:
        from bench.refcache import compute_table
        table = compute_table(n, draws, errors_of, batch_groups=per, progress=progress)
    else:
        table = reference_table(path, n, draws, errors_of, batch_groups=per, progress=progress)
    return ReferenceDraws(draws, table)


def _micro_step(backbone, method: Method, unet, reference, b: Batch, enc: dict, caption_row: dict,
                cfg: TrainConfig, n_t: int, gen: torch.Generator, step: int, model=None, rank: int = 0,
                world: int = 1, draws: ReferenceDraws | None = None):
    """The method's loss on one micro-batch (caption dropout, shared noise and timesteps). With
    world > 1 the random draws are made for the whole global batch (as one process would), then
    this process keeps its rows. `model` is what the policy's forward goes through (DDP).
    `draws`: noise, timesteps, dropout and reference errors from the fixed draws (train.ref_draws)."""
    caps = list(b.captions)
    n_groups = len(caps) // 2 if b.paired else len(caps)
    cached_ref = None
    if draws is not None:
        noise, t, drop, cached_ref = draws.take(b, gen)
    else:
        drop = drop_captions(n_groups, cfg.empty_prompt_prob, gen)
        if b.paired:
            drop = drop + drop                # a pair keeps or drops its caption together
    cond = method.condition(_conditioning(b, caps, drop, enc, caption_row), b)
    mine = None
    if world > 1 and not b.local:        # this rank encodes and computes its own rows only
        b, mine = _shard(b, rank, world)
    latents = backbone.encode_images(b.images.float() / 255.0) if b.latents is None else b.latents.get()
    if draws is None:                    # drawn for the whole global batch, as one process draws them
        shape = (len(caps),) + tuple(latents.shape[1:])
        noise, t = draw_noise(torch.empty(shape, device="meta"), b.paired, n_t, gen)
    if mine is not None:
        cond = {k: v[mine.to(v.device)] for k, v in cond.items()}
        noise, t = noise[mine], t[mine]
        cached_ref = None if cached_ref is None else cached_ref[mine]
    # random draws are made on the CPU (the trainer's generator, the stream's cache) and moved here
    device = next(iter(enc.values())).device
    latents, noise, t = latents.to(device), noise.to(device), t.to(device)
    cond = {k: v.to(device) for k, v in cond.items()}
    if cached_ref is not None:
        cached_ref = cached_ref.to(device)
    w = error_weights(backbone, t, cfg)
    err = per_sample_error(backbone, unet if model is None else model, latents, noise, t, cond, w)
    ctx = StepContext(backbone, unet, reference, latents, noise, t, cond, step, w)
    if cached_ref is not None:
        ref_err = cached_ref if w is None else cached_ref * w
    else:
        ref_err = ctx.reference_errors() if method.needs_reference else None
    loss, metrics = method.batch_loss(err, ref_err, b, ctx)
    if not torch.isfinite(loss):
        raise BenchError(f"loss became {loss.item()} at step {step}; lower train.lr or the method's beta")
    return loss, metrics


def _conditioning(b: Batch, caps: list[str], drop: list[bool], enc: dict, caption_row: dict) -> dict:
    """Each image's conditioning: its caption's row of `enc`, or the empty caption's where
    dropped; a streamed batch brings its own rows (b.cond), the empty caption's still from `enc`."""
    if b.cond is None:
        rows = torch.tensor([caption_row["" if d else c] for c, d in zip(caps, drop)])
        return {k: v[rows.to(v.device)] for k, v in enc.items()}
    keep = torch.tensor([not d for d in drop])
    empty = caption_row[""]
    return {k: torch.where(keep.view(-1, *[1] * (v.dim() - 1)).to(enc[k].device), v.to(enc[k].device),
                           enc[k][empty].to(v.dtype)) for k, v in b.cond.items()}


def save_checkpoint(unet, path: Path, lora: bool) -> None:
    state = {k: v.detach().contiguous().cpu() for k, v in unet.state_dict().items()
             if not lora or "lora_" in k}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic(path) as tmp:
        save_file(state, str(tmp))
