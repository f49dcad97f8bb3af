"""Resumable training state: an interrupted run resumed from its checkpoint is the uninterrupted run."""
import json

import pytest
import torch

from bench.backbones import Backbone
from bench.backbones.tiny import build_tiny
from bench.checkpoint import RESUME_DIR, STATE_JSON, STATE_TENSORS
from bench.data.pairs import PairData
from bench.train import RefreshSpec, TrainConfig, train
from methods.dpo import DPO, DPOConfig


def pairs(n=8):
    g = torch.Generator().manual_seed(0)
    w = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    l = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    return PairData(w, l, [f"{k} red circle on a blue background" for k in ("one", "two")] * (n // 2),
                    torch.zeros(n, dtype=torch.bool))


class EmaDPO(DPO):
    """DPO with a reference refreshed by EMA every 2 steps (state that must be checkpointed too)."""
    def reference_refresh(self):
        return RefreshSpec(every=2, kind="ema", ema_decay=0.9, ema_warmup=True)


class Interrupt(Exception):
    pass


class StopAt:
    """A callback that kills training after optimizer step `at` (like a SLURM time limit)."""
    def __init__(self, at):
        self.every = at

    def __call__(self, step, unet):
        raise Interrupt(step)


def policy_state(unet):
    return {k: v.clone() for k, v in unet.state_dict().items()}


@pytest.mark.parametrize("method_cls,finetune,opts", [
    (DPO, "full", {}), (DPO, "lora", {}), (EmaDPO, "full", {}),
    # paper-scale options: Adafactor's factored moments; fp16's loss scale (GradScaler state)
    (DPO, "full", {"optimizer": "adafactor"}), (DPO, "lora", {"mixed_precision": "fp16"})])
def test_resumed_run_equals_uninterrupted_run(tiny_arch, tmp_path, method_cls, finetune, opts):
    cfg = TrainConfig(steps=6, batch_size=2, grad_accum=2, lr=1e-3, warmup=4, log_every=1,
                      checkpoint_every=2, finetune=finetune, **opts)

    def run(ckpt, callbacks=()):
        bb = Backbone("x", build_tiny(tiny_arch, 32), 32, 3.0, 2)
        return train(bb, method_cls(DPOConfig()), pairs(), cfg, seed=3, ckpt_dir=ckpt, progress=False,
                     callbacks=callbacks)
    unet_a, hist_a = run(tmp_path / "a")
    with pytest.raises(Interrupt):
        run(tmp_path / "b", callbacks=[StopAt(3)])          # dies after step 3; last checkpoint: step 2
    state = tmp_path / "b" / RESUME_DIR
    assert json.loads((state / STATE_JSON).read_text())["step"] == 2
    unet_b, hist_b = run(tmp_path / "b")                    # the requeued job
    assert [h["loss"] for h in hist_b] == [h["loss"] for h in hist_a]
    assert [h["step"] for h in hist_b] == list(range(1, 7))
    a, b = policy_state(unet_a), policy_state(unet_b)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((state / STATE_JSON).read_text())["step"] == 6
    assert ("scaler" in json.loads((state / STATE_JSON).read_text())) == (opts.get("mixed_precision") == "fp16")
    assert not list(tmp_path.rglob("*.tmp*"))


def test_finished_state_skips_training_and_a_foreign_state_is_ignored(tiny_arch, tmp_path, caplog):
    cfg = TrainConfig(steps=2, batch_size=2, lr=1e-3, log_every=1, checkpoint_every=1)
    bb = Backbone("x", build_tiny(tiny_arch, 32), 32, 3.0, 2)
    _, hist = train(bb, DPO(DPOConfig()), pairs(), cfg, seed=0, ckpt_dir=tmp_path, progress=False)
    calls = []

    class Spy(DPO):
        def batch_loss(self, *a):
            calls.append(1)
            return super().batch_loss(*a)
    bb = Backbone("x", build_tiny(tiny_arch, 32), 32, 3.0, 2)
    _, again = train(bb, Spy(DPOConfig()), pairs(), cfg, seed=0, ckpt_dir=tmp_path, progress=False)
    assert again == hist and not calls                      # step 2 of 2 restored: nothing left to do
    bb = Backbone("x", build_tiny(tiny_arch, 32), 32, 3.0, 2)
    train(bb, Spy(DPOConfig(beta=100.0)), pairs(), cfg, seed=0, ckpt_dir=tmp_path, progress=False)
    assert len(calls) == 2 and "of another training config" in caplog.text


def test_checkpoint_files_are_safetensors_and_json(tiny_arch, tmp_path):
    from safetensors import safe_open
    cfg = TrainConfig(steps=1, batch_size=2, log_every=1, checkpoint_every=1)
    bb = Backbone("x", build_tiny(tiny_arch, 32), 32, 3.0, 2)
    train(bb, DPO(DPOConfig()), pairs(), cfg, seed=0, ckpt_dir=tmp_path, progress=False)
    with safe_open(str(tmp_path / RESUME_DIR / STATE_TENSORS), "pt") as f:
        keys = set(f.keys())
    assert {"rng.generator", "rng.torch"} <= keys
    assert any(k.startswith("policy.") for k in keys) and any(k.startswith("optim.") for k in keys)
    meta = json.loads((tmp_path / RESUME_DIR / STATE_JSON).read_text())
    assert meta["scheduler"]["last_epoch"] == 1 and meta["step"] == 1
