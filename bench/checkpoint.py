"""Resumable training state (bench.train writes it every `train.checkpoint_every` steps).

A job that hits its SLURM time limit is resubmitted by Hydra's submitit launcher
(`BaseSubmititLauncher.checkpoint` returns a `DelayedSubmission` of the same job); the rerun has
the same job hash, so it finds this state in the job's checkpoint directory and continues from
the step it was saved at, reproducing the uninterrupted run exactly (tests/test_scaleout.py).

    <ckpt_dir>/resume/state.safetensors  tensors: the policy's trainable weights (LoRA: the
                                         adapters), a refreshed reference's weights, the method's
                                         extra parameters, AdamW moments and step counts, and
                                         the RNG states (trainer generator, torch global)
    <ckpt_dir>/resume/state.json         the rest: step, config fingerprint, logged history and
                                         the metrics window since the last log line, scheduler
                                         and optimizer hyper-parameters, reference refresh log

No pickle anywhere: tensors go through safetensors, everything else through JSON. The state is
written into a temporary directory and renamed into place, so a job killed while saving keeps
its previous checkpoint.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from bench.files import key

log = logging.getLogger(__name__)

RESUME_DIR = "resume"
STATE_TENSORS = "state.safetensors"
STATE_JSON = "state.json"
FORMAT = 1


def fingerprint(*parts) -> str:
    """Hash of what a resumable state must agree with (training config, seed, method config)."""
    return key(*parts, n=16)


def _policy_state(unet, lora: bool) -> dict[str, torch.Tensor]:
    return {k: v for k, v in unet.state_dict().items() if not lora or "lora_" in k}


def save_state(state_dir: Path, *, step: int, fp: str, unet, lora: bool, reference, extra_params,
               opt: torch.optim.Optimizer, sched, gen: torch.Generator, history: list, window: list,
               wall_s: float, ema=None, scaler=None) -> None:
    tensors = {f"policy.{k}": v for k, v in _policy_state(unet, lora).items()}
    meta: dict = {"format": FORMAT, "step": step, "fingerprint": fp, "lora": lora, "history": history,
                  "window": window, "wall_s": wall_s, "scheduler": sched.state_dict()}
    if reference is not None and getattr(reference, "refresh", None) is not None:
        tensors.update({f"reference.{k}": v for k, v in reference.ref.state_dict().items()})
        meta["reference"] = {"refreshed_at": reference.refreshed_at, "n_ema": reference._n_ema}
    for i, p in enumerate(extra_params):
        tensors[f"extra.{i}"] = p
    if ema is not None:                  # diffusers EMAModel of the trained weights (train.ema_decay)
        tensors.update({f"ema.{i}": p for i, p in enumerate(ema.shadow_params)})
        meta["ema_step"] = int(ema.optimization_step)
    if scaler is not None and scaler.is_enabled():       # fp16 loss scale (train.mixed_precision)
        meta["scaler"] = scaler.state_dict()
    osd = opt.state_dict()
    meta["optimizer"] = {"param_groups": osd["param_groups"], "scalars": {}}
    for i, st in osd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{i}.{k}"] = v
            else:
                meta["optimizer"]["scalars"][f"{i}.{k}"] = v
    tensors["rng.generator"] = gen.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    state_dir = Path(state_dir)
    tmp = state_dir.with_name(state_dir.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(tensors, str(tmp / STATE_TENSORS))
    (tmp / STATE_JSON).write_text(json.dumps(meta))
    old = state_dir.with_name(state_dir.name + f".old{os.getpid()}")
    if state_dir.exists():
        os.replace(state_dir, old)
    os.replace(tmp, state_dir)
    shutil.rmtree(old, ignore_errors=True)


def load_state(state_dir: Path, fp: str) -> tuple[dict, dict] | None:
    """(meta, tensors) of a saved state that matches the fingerprint; None when absent. A state
    of another config (or an unreadable one) is logged and ignored: training starts over."""
    state_dir = Path(state_dir)
    if not (state_dir / STATE_JSON).is_file() or not (state_dir / STATE_TENSORS).is_file():
        return None
    try:
        meta = json.loads((state_dir / STATE_JSON).read_text())
        tensors = load_file(str(state_dir / STATE_TENSORS))
    except (OSError, ValueError) as e:
        log.warning("ignoring unreadable checkpoint %s (%s); training starts over", state_dir, e)
        return None
    if meta.get("format") != FORMAT or meta.get("fingerprint") != fp:
        log.warning("ignoring checkpoint %s of another training config; training starts over", state_dir)
        return None
    return meta, tensors


def restore(meta: dict, tensors: dict, *, unet, reference, extra_params, opt, sched,
            gen: torch.Generator, ema=None, scaler=None) -> None:
    """Load a state from `load_state` into freshly set-up training objects."""
    def group(prefix):
        return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    missing, unexpected = unet.load_state_dict(group("policy."), strict=not meta["lora"])
    if unexpected or (meta["lora"] and any("lora_" in k for k in missing)):
        raise RuntimeError(f"checkpoint does not fit the policy: unexpected {unexpected[:3]}, missing {missing[:3]}")
    if "reference" in meta:
        reference.ref.load_state_dict(group("reference."))
        reference.refreshed_at = list(meta["reference"]["refreshed_at"])
        reference._n_ema = int(meta["reference"]["n_ema"])
    with torch.no_grad():
        for i, p in enumerate(extra_params):
            p.copy_(tensors[f"extra.{i}"])
        if ema is not None:
            for i, p in enumerate(ema.shadow_params):
                p.copy_(tensors[f"ema.{i}"])
            ema.optimization_step = meta["ema_step"]
    state: dict[int, dict] = {}
    for k, v in group("optim.").items():
        i, name = k.split(".", 1)
        state.setdefault(int(i), {})[name] = v
    for k, v in meta["optimizer"]["scalars"].items():
        i, name = k.split(".", 1)
        state.setdefault(int(i), {})[name] = v
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in meta["optimizer"]["param_groups"]]
    opt.load_state_dict({"state": state, "param_groups": groups})
    sched.load_state_dict(meta["scheduler"])
    if scaler is not None and "scaler" in meta:
        scaler.load_state_dict(meta["scaler"])
    gen.set_state(tensors["rng.generator"])
    torch.set_rng_state(tensors["rng.torch"])
