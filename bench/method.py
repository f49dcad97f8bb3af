"""The method contract: what an alignment method declares and what the trainer hands it.

A method (methods/<name>.py, registered by name) subclasses `Method`: it declares the feedback it
consumes (`feedback`: none, images, pairs, binary, votes, attributes) and whether it needs a
reference model, and turns per-sample denoising errors into a loss. Hooks for methods that need
more: `feedback_options` (what its feedback loader reads), `prepare` (turn feedback into training
data, train an auxiliary model), `reference_refresh`
(a `RefreshSpec`), `extra_parameters`, `condition` and `batch_loss` (with the `Batch` and the
trainer's `StepContext`, bench/train.py). The trainer (bench/train.py) owns everything else.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from bench.lazy import torch  # noqa: F401  (annotations only; imported on first use)
from bench.registry import MethodConfig


@dataclass
class RefreshSpec:
    """How a reference is refreshed from the policy: after every `every`-th optimizer step
    (0: never, a frozen reference), by `copy` or by `ema` (ref <- d*ref + (1-d)*policy).
    `ema_warmup`: diffusers EMAModel's schedule d_n = min(ema_decay, (1+n)/(10+n)) with n the
    number of earlier EMA updates, so the first update is a copy (diffusion-kto builds its
    `--reference_ema` reference as an EMAModel, train_kto_sd_v1.5.py @226bbd0)."""
    every: int = 0
    kind: str = "copy"
    ema_decay: float = 0.999
    ema_warmup: bool = False

    @classmethod
    def from_config(cls, cfg) -> "RefreshSpec | None":
        """From a method config with `ref_refresh_every`, `ref_refresh`, `ref_ema_decay` and
        `ref_ema_warmup` (KTO's and BalancedDPO's); None when ref_refresh_every <= 0."""
        if cfg.ref_refresh_every <= 0:
            return None
        return cls(int(cfg.ref_refresh_every), cfg.ref_refresh, float(cfg.ref_ema_decay), bool(cfg.ref_ema_warmup))


class Method:
    """Base class of alignment methods (methods/<name>.py registers subclasses by name)."""
    feedback: str = "pairs"            # none | images | pairs | binary | votes | attributes
    needs_reference: bool = False
    Config = MethodConfig

    def __init__(self, cfg):
        self.cfg = cfg

    def loss(self, err: torch.Tensor, ref_err: torch.Tensor | None) -> tuple[torch.Tensor, dict]:
        """err: per-sample policy errors; for pairs (2B,), winners first. Returns (loss, metrics)."""
        raise NotImplementedError

    # ---- hooks for methods that need more than per-sample errors (defaults: not needed)

    def prepare(self, backbone, data, cfg: "bench.config.TrainConfig", seed: int, progress: bool = True):
        """Turn the loaded feedback into training data (PairData or ImageData); may train an
        auxiliary model. Called once by `train` before the policy is set up."""
        return data

    def feedback_options(self) -> dict:
        """The settings this method's feedback loader reads (bench.data.loaders): e.g. KTO's
        comparison rounds and labelling policy, BalancedDPO's voters, CPO's attribute file."""
        return {}

    def reference_refresh(self) -> RefreshSpec | None:
        """Refresh of the reference model from the policy; None: a frozen reference."""
        return None

    def extra_parameters(self) -> list[torch.nn.Parameter]:
        """Trainable tensors besides the UNet's (e.g. conditioning tokens)."""
        return []

    def condition(self, cond: dict, batch: "Batch") -> dict:
        """The conditioning the policy (and reference) are evaluated under; default: captions."""
        return cond

    def batch_loss(self, err: torch.Tensor, ref_err: torch.Tensor | None, batch: "Batch",
                   ctx: "bench.train.StepContext") -> tuple[torch.Tensor, dict]:
        return self.loss(err, ref_err)


@dataclass
class Batch:
    images: torch.Tensor               # uint8 (N, 3, H, W); pairs: [winners; losers]
    captions: list[str]
    paired: bool
    labels: torch.Tensor | None = None     # per image (ImageData.labels), e.g. KTO desirable
    weights: torch.Tensor | None = None    # per pair / image loss weight (PairData.weights)
    extra: dict = field(default_factory=dict)   # per pair / image tensors (data.extra)
    groups: torch.Tensor | None = None          # index of each pair / image in the training data
    # a streamed batch (bench/data/stream.py): cached latents (`.get()`: scaled latents; None: encode
    # `images`), per-image conditioning (None: look the captions up in the trainer's encodings),
    # and `local`: the batch is this rank's own (draws for it alone, no slicing of a global batch)
    latents: object = None
    cond: dict | None = None
    local: bool = False


