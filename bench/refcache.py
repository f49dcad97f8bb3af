"""Reference errors precomputed once for fixed draws (`train.ref_draws`), as TRL's
`precompute_ref_log_probs` does for language models.

Every method with a frozen reference evaluates it on the step's noised latents: a forward pass
without gradients, a quarter of a Diffusion-DPO step's FLOPs, and the same computation for every
job that shares the reference weights and the training data (the training seeds of one method,
the beta grid of a tuning study). With `train.ref_draws = K > 0` each training example (a pair,
or a single image) gets K fixed draws of (noise, timestep, caption dropout), each a pure function
of (`train.ref_draw_seed`, example index, draw index); the reference's per-image errors on all of
them are computed once in large batches, cached as safetensors under `<cache>/reference/` keyed
by the reference weights, the data, K and the draw settings, and every step looks its rows up
instead of running the reference. A step then picks, for each example it draws, one of that
example's K draws (uniformly, from the training generator).

This changes the training distribution: the noise of an example is one of K instead of a fresh
draw, so it is an option (0, the reference formulation's fresh draws, is the default) whose
effect on results is measured in docs/performance.md. The errors are the same as a live
reference's on the same draws (tests/test_refcache.py: to 1e-5).
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from bench.locks import load_entry, making
from bench.files import atomic, digest

log = logging.getLogger(__name__)


@dataclass
class Draws:
    """K fixed draws per training example: draw (g, k) is seeded by (seed, g, k) alone."""
    k: int
    seed: int
    latent_shape: tuple[int, ...]
    n_timesteps: int
    empty_prompt_prob: float

    def take(self, groups: torch.Tensor, ks: torch.Tensor):
        """noise (n, *latent_shape), timesteps (n,), caption dropped (list of n bools) of the draws
        (groups[j], ks[j])."""
        noise, t, drop = [], [], []
        for g, k in zip(groups.tolist(), ks.tolist()):
            gen = torch.Generator().manual_seed(self._seed(g, k))
            noise.append(torch.randn(self.latent_shape, generator=gen))
            t.append(int(torch.randint(0, self.n_timesteps, (1,), generator=gen)))
            drop.append(bool(torch.rand(1, generator=gen) < self.empty_prompt_prob))
        return torch.stack(noise), torch.tensor(t, dtype=torch.long), drop

    def _seed(self, g: int, k: int) -> int:
        return int(digest(f"{self.seed}|{g}|{k}", 15), 16)


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 of named tensors (sorted by name), for cache keys."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        h.update(name.encode())
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def cache_key(reference_weights: dict[str, torch.Tensor], images: torch.Tensor, captions: list[str],
              paired: bool, draws: Draws, extra: dict) -> str:
    blob = json.dumps({"weights": tensor_digest(reference_weights), "images": tensor_digest({"x": images}),
                       "captions": digest("\n".join(captions)),
                       "paired": paired, "draws": [draws.k, draws.seed, list(draws.latent_shape),
                                                   draws.n_timesteps, draws.empty_prompt_prob],
                       **extra}, sort_keys=True)
    return digest(blob, 16)


def compute_table(n_groups: int, draws: Draws, errors_of, batch_groups: int = 64,
                  progress: bool = True) -> torch.Tensor:
    """The (n_groups, K, images per group) table of reference errors, computed in batches of
    `batch_groups` examples with `errors_of(groups, ks) -> (len(groups), images per group)`."""
    groups = torch.arange(n_groups).repeat_interleave(draws.k)
    ks = torch.arange(draws.k).repeat(n_groups)
    rows = []
    for i in tqdm(range(0, len(groups), batch_groups), desc="reference errors",
                  disable=not progress, leave=False, mininterval=2):
        rows.append(errors_of(groups[i:i + batch_groups], ks[i:i + batch_groups]).float())
    return torch.cat(rows).reshape(n_groups, draws.k, -1).contiguous()


def reference_table(path: Path, n_groups: int, draws: Draws, errors_of, batch_groups: int = 64,
                    progress: bool = True) -> torch.Tensor:
    """compute_table, loaded from `path` or computed and written there (temp name, rename; under
    the entry's lock so concurrent jobs compute it once)."""
    def load(p):
        return load_file(str(p))["errors"]
    table = load_entry(path, load)             # a damaged entry is deleted and made again
    if table is None:
        with making(path, f"reference errors {path.name}"):
            table = load_entry(path, load)
            if table is None:
                table = compute_table(n_groups, draws, errors_of, batch_groups, progress)
                path.parent.mkdir(parents=True, exist_ok=True)
                with atomic(path) as tmp:
                    save_file({"errors": table}, str(tmp))
                log.info("reference errors for %d examples x %d draws written to %s", n_groups, draws.k, path)
                return table
    if table.shape[:2] != (n_groups, draws.k):
        raise RuntimeError(f"{path} holds {tuple(table.shape)} reference errors, expected ({n_groups}, {draws.k}, .); "
                           "delete it")
    return table
