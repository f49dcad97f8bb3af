"""What every real-world scorer shares: finding weights, reading foreign checkpoints, preprocessing.

One mechanism for all of them (pickscore, clip_score, laion_aesthetic, hpsv2, hpsv21, imagereward):

* **Weights** are `Asset`s, each resolved by `resolve` to a local path: the configured path if set,
  else the HF cache with local files only. Nothing is downloaded; a missing asset stops with one
  line naming it and how to provide it. Resolution happens when the scorer is built (cheap, so
  `bench.runner.validate` finds missing weights before any training); the model itself is loaded
  on the first `score` call.
* **Foreign checkpoints** (HPSv2's open_clip `.pt`, ImageReward's BLIP `.pt`, the aesthetic MLP
  `.pth`) are read by `read_checkpoint` (safetensors, or `torch.load(weights_only=True)`: tensors
  only, no code runs) and renamed onto transformers modules by an explicit key map; `load_exact`
  rejects a checkpoint that lacks any tensor the model needs (the original loaders use
  `strict=False`, which would silently keep random weights).
* **Images** arrive as float (B, 3, H, W) in [0, 1] and are preprocessed as each source does:
  `pil_preprocess` (PIL bicubic resize of the uint8 image: torchvision's PIL transforms and
  transformers' CLIP image processor alike) or `tensor_preprocess` (bicubic resize of the float
  tensor: HPSv2's vendored open_clip transform). The suite's images are uint8/255, so converting
  back to uint8 for PIL is lossless.
* Every scorer runs in fp32 under `torch.inference_mode`, on a whole batch at once.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from bench.lazy import torch  # imported on first use: validating a config needs no torch
from PIL import Image

from bench.registry import BenchError

log = logging.getLogger(__name__)

# OpenAI CLIP normalisation (HPSv2 src/open_clip/constants.py; ImageReward/ImageReward.py _transform)
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class Asset:
    """One thing a scorer loads: `option` is its config key, `what` says what it is, and
    `repo_id` (+ `filename` for a single file) where it lives in the HF cache (None: nowhere)."""
    option: str
    what: str
    repo_id: str | None = None
    filename: str | None = None


def option_key(scorer: str, option: str) -> str:
    return f"eval.scorer_options.{scorer}.{option}"


def resolve(scorer: str, asset: Asset, value: str | None, cache_dir: str | None) -> Path:
    """The local path of `asset`: `value` if set, else the HF cache (local files only)."""
    key = option_key(scorer, asset.option)
    if value:
        path = Path(value).expanduser()
        if not path.exists():
            raise BenchError(f"{scorer}: {key}={value} does not exist; point it at {asset.what}")
        return path
    if asset.repo_id is None:
        raise BenchError(f"{scorer}: {asset.what} has no default location; set ++{key}=<local path>")
    found = _from_hf_cache(asset.repo_id, asset.filename, cache_dir)
    if found is None:
        name = f"{asset.repo_id} {asset.filename}" if asset.filename else asset.repo_id
        from huggingface_hub.constants import HF_HUB_CACHE
        cache = cache_dir or HF_HUB_CACHE
        raise BenchError(f"{scorer}: {asset.what} ({name}) is not in the HF cache ({cache}); run "
                         f"`hf download {name}` where the hub is reachable and copy the cache here, "
                         f"or set ++{key}=<local path>")
    return found


def _from_hf_cache(repo_id: str, filename: str | None, cache_dir: str | None) -> Path | None:
    from huggingface_hub import snapshot_download, try_to_load_from_cache
    from huggingface_hub.errors import LocalEntryNotFoundError
    if filename:
        hit = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir)
        return Path(hit) if isinstance(hit, str) else None
    try:
        return Path(snapshot_download(repo_id, cache_dir=cache_dir, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None


def describe(path: Path) -> str:
    """How result.json names a weight: `repo@commit` for an HF-cache path, else the local path."""
    m = re.search(r"models--(.+?)--(.+?)/snapshots/([0-9a-f]+)", str(path))
    return f"{m.group(1)}/{m.group(2)}@{m.group(3)}" if m else str(path)


def read_checkpoint(path: Path, scorer: str) -> dict:
    """Tensors of a .safetensors file or a torch checkpoint (weights_only: no code is unpickled)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling raises many types; the line names the file either way
        raise BenchError(f"{scorer}: cannot read {path} as a tensors-only checkpoint "
                         f"({type(e).__name__}); pass the published file, or convert it to "
                         ".safetensors on a trusted machine") from None
    if not isinstance(obj, dict):
        raise BenchError(f"{scorer}: {path} holds a {type(obj).__name__}, not a dict of tensors; "
                         "pass the published file")
    return obj


def load_tokenizer(scorer: str, path: Path):
    """A transformers tokenizer saved in `path` (local files only)."""
    from transformers import AutoTokenizer
    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
        raise BenchError(f"{scorer}: no tokenizer in {path} ({str(e).splitlines()[0]})") from None


def take(state: dict, key: str, scorer: str, path: Path) -> torch.Tensor:
    """Pop one tensor of a foreign checkpoint; a missing key names the file and the key."""
    if key not in state:
        raise BenchError(f"{scorer}: {path} has no tensor {key!r}; is it the right checkpoint?")
    return state.pop(key)


def count_blocks(state: dict, pattern: str) -> int:
    """Number of numbered blocks, e.g. pattern r'visual\\.transformer\\.resblocks\\.(\\d+)\\.'."""
    found = {int(m.group(1)) for k in state for m in [re.match(pattern, k)] if m}
    return max(found) + 1 if found else 0


def load_exact(module: torch.nn.Module, state: dict, scorer: str, path: Path) -> None:
    """Load converted tensors strictly: a missing, extra or mis-shaped tensor is an error."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:300]
        raise BenchError(f"{scorer}: {path} does not fit the model ({detail}); is it the right checkpoint?") from None


def warn_unused(state: dict, scorer: str, path: Path) -> None:
    """Tensors left in a foreign checkpoint after conversion (e.g. ImageReward's unused ITC heads)."""
    if state:
        log.warning("%s: %d tensor(s) of %s are not used (first: %s)", scorer, len(state), path, next(iter(state)))


# ----------------------------------------------------------------------------- the MLP head

MLP_LINEARS = (0, 2, 4, 6, 7)   # nn.Sequential positions of the Linear layers (dropout at 1, 3, 5)


def mlp_head(state: dict, prefix: str, scorer: str, path: Path) -> torch.nn.Sequential:
    """The improved-aesthetic-predictor MLP, also ImageReward's head: Linear layers with dropout
    between and no nonlinearity (the ReLUs are commented out in christophschuhmann/
    improved-aesthetic-predictor simple_inference.py and in ImageReward/ImageReward.py MLP).
    Layer sizes are read from the checkpoint; dropout is inactive in eval mode."""
    sd = {f"{i}.{kind}": take(state, f"{prefix}{i}.{kind}", scorer, path)
          for i in MLP_LINEARS for kind in ("weight", "bias")}
    linears = [torch.nn.Linear(sd[f"{i}.weight"].shape[1], sd[f"{i}.weight"].shape[0]) for i in MLP_LINEARS]
    seq = torch.nn.Sequential(linears[0], torch.nn.Dropout(0.2), linears[1], torch.nn.Dropout(0.2),
                              linears[2], torch.nn.Dropout(0.1), linears[3], linears[4])
    load_exact(seq, sd, scorer, path)
    return seq.eval()


# ----------------------------------------------------------------------------- preprocessing

def _crop_box(h: int, w: int, crop: int, torchvision: bool = True) -> tuple[int, int]:
    """Top-left of a centre crop: torchvision CenterCrop rounds (h - crop) / 2, transformers'
    image processors floor it; they differ only for an odd margin (never for square images)."""
    if torchvision:
        return int(round((h - crop) / 2.0)), int(round((w - crop) / 2.0))
    return (h - crop) // 2, (w - crop) // 2


def _resized(h: int, w: int, size: int) -> tuple[int, int]:
    # shortest side to `size`, aspect kept, long side truncated (torchvision Resize(int); CLIP processor)
    return (size, int(size * w / h)) if h <= w else (int(size * h / w), size)


def _normalise(x: torch.Tensor, mean, std) -> torch.Tensor:
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


def pil_preprocess(images: torch.Tensor, size: int, crop: int, mean, std,
                   resample: int = Image.Resampling.BICUBIC, torchvision: bool = True) -> torch.Tensor:
    """Shortest side to `size` by PIL on the uint8 image, centre crop (torchvision's or
    transformers' rounding), [0, 1], normalise."""
    arr = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = []
    for a in arr:
        im = Image.fromarray(a)
        h, w = _resized(im.height, im.width, size)
        im = im.resize((w, h), resample=resample)
        top, left = _crop_box(h, w, crop, torchvision)
        out.append(np.asarray(im.crop((left, top, left + crop, top + crop)), dtype=np.float32) / 255.0)
    x = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).to(images.device)
    return _normalise(x, mean, std)


def tensor_preprocess(images: torch.Tensor, size: int, mean, std, antialias: bool = True) -> torch.Tensor:
    """HPSv2's eval transform (src/open_clip/transform.py image_transform): ToTensor, then
    Resize(size, BICUBIC) on the float tensor (no clamping), CenterCrop(size), Normalize."""
    x = images.float()
    h, w = _resized(x.shape[-2], x.shape[-1], size)
    x = torch.nn.functional.interpolate(x, size=(h, w), mode="bicubic", align_corners=False, antialias=antialias)
    top, left = _crop_box(h, w, size)
    return _normalise(x[..., top:top + size, left:left + size], mean, std)


# ----------------------------------------------------------------------------- the base class

def pick_device(name: str) -> torch.device:
    if name == "auto":
        from bench.devices import job_device     # the device accelerate picks for this process
        return job_device()
    return torch.device(name)


class RealScorer:
    """Base of the real-world scorers. A subclass sets `name`, `Config` (a dataclass with at least
    `cache_dir`, `device` and `tie_tolerance`), `assets()`, `load()`, `forward()` and `convention`.

    `tie_tolerance`: a difference below it counts as a tie in win rates. The defaults are a
    choice of this suite (no source gives one): a floor just above fp32 noise across batch
    compositions (openai/CLIP #198), far below any difference a rater could see. Set
    `tie_tolerance` in the scorer's options to use a perceptual threshold instead.
    """
    name = ""
    higher_is_better = True
    version = "1"                    # bump when this suite's implementation changes the numbers
    base_tie_tolerance = 1e-5        # in the unscaled unit of the score

    def __init__(self, cfg):
        self.cfg = cfg
        # weights first: a missing one is reported before anything imports torch (bench.lazy)
        self.paths = {a.option: resolve(self.name, a, getattr(cfg, a.option), cfg.cache_dir)
                      for a in self.assets()}
        self.device = pick_device(cfg.device)
        self._model = None

    # -- to implement
    def assets(self) -> list[Asset]:
        raise NotImplementedError

    def load(self):
        raise NotImplementedError

    def forward(self, model, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        raise NotImplementedError

    @property
    def convention(self) -> str:
        raise NotImplementedError

    # -- shared
    @property
    def scale(self) -> float:
        """Factor between the score and its unscaled unit (for the default tie tolerance)."""
        return 1.0

    @property
    def tie_tolerance(self) -> float:
        if self.cfg.tie_tolerance is not None:
            return float(self.cfg.tie_tolerance)
        return self.base_tie_tolerance * self.scale

    @property
    def weights(self) -> dict[str, str]:
        return {k: describe(p) for k, p in self.paths.items()}

    def score(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """images (B, 3, H, W) in [0, 1], one prompt each; returns (B,) float32 on the CPU."""
        if images.ndim != 4 or images.shape[1] != 3 or len(prompts) != len(images):
            raise BenchError(f"{self.name}: expected images (B, 3, H, W) and B prompts, got "
                             f"{tuple(images.shape)} and {len(prompts)} prompts")
        if self._model is None:
            self._model = self.load()
        with torch.inference_mode():
            out = self.forward(self._model, images.to(self.device, torch.float32), list(prompts))
        return out.float().cpu()


# ----------------------------------------------------------------------------- transformers CLIP

@dataclass
class HFClip:
    """A transformers CLIPModel with the image settings of its processor and its tokenizer."""
    model: object
    tokenizer: object
    size: int
    crop: int
    mean: tuple
    std: tuple
    resample: int


def load_hf_clip(scorer: str, model_dir: Path, processor_dir: Path, device: torch.device) -> HFClip:
    """CLIPModel (fp32) from a save_pretrained directory and the processor's image settings and
    tokenizer from another (they may be the same directory); local files only."""
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel
    try:
        model = CLIPModel.from_pretrained(model_dir, local_files_only=True, dtype=torch.float32)
        proc = AutoImageProcessor.from_pretrained(processor_dir, local_files_only=True)
        tok = AutoTokenizer.from_pretrained(processor_dir, local_files_only=True)
    except (OSError, ValueError) as e:
        raise BenchError(f"{scorer}: cannot load a CLIP model from {model_dir} with the processor in "
                         f"{processor_dir} ({str(e).splitlines()[0]})") from None
    return HFClip(model.to(device).eval(), tok, int(proc.size.shortest_edge), int(proc.crop_size.height),
                  tuple(proc.image_mean), tuple(proc.image_std), int(proc.resample))


def unit(x: torch.Tensor) -> torch.Tensor:
    """L2-normalise rows; a zero row stays zero (improved-aesthetic-predictor `normalized`)."""
    n = x.norm(dim=-1, keepdim=True)
    return x / n.masked_fill(n == 0, 1.0)


def _pooled(out) -> torch.Tensor:
    # transformers >= 5 returns BaseModelOutputWithPooling (PR #42564); the projection is pooler_output
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def clip_image_embeds(clip: HFClip, images: torch.Tensor) -> torch.Tensor:
    """L2-normalised image embeddings, images preprocessed as the processor does (PIL bicubic)."""
    px = pil_preprocess(images, clip.size, clip.crop, clip.mean, clip.std, clip.resample, torchvision=False)
    return unit(_pooled(clip.model.get_image_features(pixel_values=px)))


def clip_text_embeds(clip: HFClip, prompts: list[str], max_length: int = 77) -> torch.Tensor:
    """L2-normalised text embeddings; each distinct prompt is encoded once (PickScore README:
    padding=True, truncation=True, max_length=77)."""
    row = {p: i for i, p in enumerate(dict.fromkeys(prompts))}
    enc = clip.tokenizer(list(row), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    enc = {k: v.to(clip.model.device) for k, v in enc.items()}
    emb = unit(_pooled(clip.model.get_text_features(**enc)))
    return emb[[row[p] for p in prompts]]
