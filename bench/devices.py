"""Where a job's modules live and in which precision (train.mixed_precision).

One mechanism for every job, single- or multi-process: the device is the one `accelerate` picks
for this process (`PartialState().device`: the process's GPU under `accelerate launch`, else
CUDA / MPS when present, else the CPU; ACCELERATE_USE_CPU=1 forces the CPU), and `place` puts
everything the job holds there: the policy UNet (float32 master weights, as the diffusers training
scripts keep them), the VAE and text encoders (frozen: in the job's weight dtype). The trainer
puts the reference and the EMA beside the policy, and `placement` reports where every parameter
and buffer of every module ended up; result.json records it.

Precision follows the diffusers / DiffusionDPO training scripts (`--mixed_precision`,
`weight_dtype`): `no` keeps everything in float32; `fp16` and `bf16` run the forward passes under
`torch.autocast` and hold the frozen parts (VAE, text encoders, a frozen reference UNet) in that
half precision; `fp16` also scales the loss (torch.amp.GradScaler) so that small gradients do not
underflow. The trainable weights and the optimizer state stay float32 in every mode.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

from bench.lazy import torch
from bench.registry import BenchError

PRECISIONS = ("no", "fp16", "bf16")


def job_device(accelerator=None):
    """The device this process computes on (an accelerate `Accelerator`'s, when one is given)."""
    if accelerator is not None:
        return accelerator.device
    from accelerate import PartialState
    return PartialState().device


@dataclass
class Precision:
    """The autocast context, the frozen parts' dtype and the loss scaler of one mode."""
    mode: str
    device: "torch.device"

    def __post_init__(self):
        if self.mode not in PRECISIONS:
            raise BenchError(f"unknown train.mixed_precision {self.mode!r}; valid: {', '.join(PRECISIONS)}")

    @property
    def dtype(self):
        """The frozen parts' dtype (float32 when mode is `no`)."""
        return {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[self.mode]

    def autocast(self):
        if self.mode == "no":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def scaler(self):
        """A GradScaler, enabled for fp16 only (disabled it passes the loss and step through)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.mode == "fp16")


def frozen_modules(backbone) -> dict:
    """The backbone's modules that no method trains: the VAE and the text encoders."""
    pipe = backbone.pipe
    mods = {"vae": pipe.vae, "text_encoder": pipe.text_encoder}
    if getattr(pipe, "text_encoder_2", None) is not None:
        mods["text_encoder_2"] = pipe.text_encoder_2
    return mods


def place(backbone, device, precision: Precision | None = None) -> None:
    """Put the backbone on `device`: the UNet in float32, the frozen parts in the precision's dtype."""
    dtype = torch.float32 if precision is None else precision.dtype
    backbone.pipe.unet.to(device=device, dtype=torch.float32)
    for m in frozen_modules(backbone).values():
        m.to(device=device, dtype=dtype)


def placement(modules: dict) -> dict:
    """{module name: {"devices": [...], "dtypes": [...]}}: the devices of every parameter and
    buffer and the dtypes of the floating-point ones (integer buffers such as position ids keep
    their type), sorted and distinct, for result.json and the placement tests. A module may also
    be a list of tensors (the EMA's shadow weights); None entries are left out."""
    out = {}
    for name, m in modules.items():
        if m is None:
            continue
        tensors = list(m) if isinstance(m, (list, tuple)) else list(m.parameters()) + list(m.buffers())
        out[name] = {"devices": sorted({str(t.device) for t in tensors}),
                     "dtypes": sorted({str(t.dtype).replace("torch.", "") for t in tensors if t.is_floating_point()})}
    return out


def device_record(device) -> str:
    """The device as result.json states it: 'cuda:0 (NVIDIA H200)', 'cpu (2 threads)'."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return str(device)
