"""Scoring and paired statistics.

Win rate of A over B for one scorer (DESIGN.md, Statistics): images are paired by (prompt, seed)
with identical sampler, steps, guidance and resolution; a pair counts 1 if A scores higher, 0.5
within the scorer's tie tolerance, 0 otherwise; outcomes are averaged over seeds within a prompt,
then over prompts. The interval and the test come from bench.statistics (one job is one training
seed: a prompt-level t interval and test; pooled seeds get the seed-aware ones in the leaderboard).

Eval sets: the shapes world's held-out split (`prompt_set=world`, the default) or a real prompt
set read from `prompt_path` (bench.data.real.PROMPT_SETS: partiprompts, drawbench,
hpsv2_benchmark, pickapic_test_unique). Any mix of registered scorers scores them; a scorer that
only reads shapes-world prompts rejects a real prompt set up front. Real scorers take options
(`scorer_options.<name>.<field>`, fields of the scorer's Config dataclass) and are built once per
process and option set (`get_scorer`), so a job loads each model once.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from bench import world as W
from bench.lazy import torch
from bench.registry import SCORERS, BenchError


@dataclass
class EvalConfig:
    split: str = "eval"                 # eval prompts are held-out combinations; never tune on them
    prompt_set: str = "world"           # world: the split above; else a real prompt set (bench.data.real.PROMPT_SETS)
    prompt_path: str | None = None      # the prompt set's file or directory (for prompt_set != world)
    seeds_per_prompt: int = 8
    max_prompts: int | None = None      # None: the whole split; else that many, spread over it (spread())
    batch_size: int = 64
    scorers: list[str] = field(default_factory=lambda: ["gold", "fidelity", "aesthetic", "preference"])
    scorer_options: dict[str, Any] = field(default_factory=dict)   # {scorer: {Config field: value}}
    # n_bootstrap and bootstrap_seed set the prompt bootstrap of the CIs before bench.statistics; no
    # interval reads them now (the CI is the t interval: docs/statistics.md). They stay because they
    # are part of every committed job's identity hash, and removing them would rename every job.
    n_bootstrap: int = 10000
    bootstrap_seed: int = 0
    ci: float = 0.95


_BUILT: dict[str, object] = {}


def get_scorer(name: str, options: dict | None = None):
    """The scorer `name` built with `options` (fields of its Config dataclass); built once per
    process and option set. A scorer without a Config takes no options."""
    import scorers  # noqa: F401  (registers every scorer)
    cls = SCORERS.get(name)
    options = dict(options or {})
    key = json.dumps([name, options], sort_keys=True, default=str)
    if key not in _BUILT:
        _BUILT[key] = _build(name, cls, options)
    return _BUILT[key]


def _build(name: str, cls, options: dict):
    if not hasattr(cls, "Config"):
        if options:
            raise BenchError(f"scorer {name!r} takes no options; remove eval.scorer_options.{name}")
        return cls()
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise BenchError(f"unknown option(s) {unknown} for scorer {name!r}; valid: {', '.join(sorted(fields))}")
    return cls(cls.Config(**options))


def scorer_record(sc) -> dict:
    """What result.json states about a scorer: direction, tie tolerance, scale convention, version
    of its implementation and the weights it loaded."""
    return {"higher_is_better": sc.higher_is_better, "tie_tolerance": sc.tie_tolerance,
            "convention": sc.convention, "version": sc.version, "weights": dict(getattr(sc, "weights", {}))}


def check_scorers(cfg: EvalConfig, prompts: list[str]) -> None:
    """Build every configured scorer (unknown names, unknown options and missing weights stop
    here, before any work) and let each check that it can read the eval prompts."""
    stray = sorted(set(cfg.scorer_options) - set(cfg.scorers))
    if stray:
        raise BenchError(f"eval.scorer_options names scorer(s) {stray} that are not in eval.scorers {cfg.scorers}")
    for name in cfg.scorers:
        sc = get_scorer(name, cfg.scorer_options.get(name))
        if hasattr(sc, "check_prompts"):
            sc.check_prompts(prompts)


def eval_set(cfg: EvalConfig, world_cfg: W.WorldConfig) -> list:
    """The eval prompts (objects with .id and .text): the world split, or a real prompt set."""
    if cfg.prompt_set == "world":
        splits = W.split_prompts(world_cfg)
        if cfg.split not in splits:
            raise BenchError(f"unknown eval.split {cfg.split!r}; valid: {', '.join(splits)}")
        prompts = splits[cfg.split]
    else:
        from bench.data.real import load_prompt_set
        prompts = load_prompt_set(cfg.prompt_set, cfg.prompt_path)
    return prompts if cfg.max_prompts is None else spread(prompts, cfg.max_prompts)


def spread(items: list, n: int) -> list:
    """`n` items evenly spaced over `items`, in order (all of them when n >= len(items)).

    A subset is taken this way, not as a prefix, because prompt lists are ordered: the world's
    splits list every one-object prompt before the two-object ones, so a prefix of a split tests
    one count only."""
    if n >= len(items):
        return list(items)
    return [items[(i * len(items)) // n] for i in range(max(n, 0))]


def score_images(images: torch.Tensor, prompts: list[str], names: list[str],
                 batch_size: int = 64, progress: bool = True, options: dict | None = None) -> pd.DataFrame:
    """Score uint8 images (N, 3, H, W) with each named scorer; one column per scorer.
    `options`: {scorer: {Config field: value}} for the real scorers."""
    out = {}
    for name in names:
        sc = get_scorer(name, (options or {}).get(name))
        vals = []
        for i in tqdm(range(0, len(images), batch_size), desc=f"score {name}", disable=not progress,
                      leave=False):
            x = images[i:i + batch_size].float() / 255.0
            vals.append(sc.score(x, prompts[i:i + batch_size]).detach().float().cpu())
        out[name] = torch.cat(vals).numpy() if vals else np.zeros(0)
    return pd.DataFrame(out)


def attribute_table(images: torch.Tensor, prompts: list[str]) -> pd.DataFrame:
    """Shapes-world attributes of every image, measured from pixels by the judges; no columns
    when the prompts are not shapes-world prompts (a real prompt set has no judges)."""
    try:
        parsed = [W.parse_prompt(text) for text in prompts]
    except ValueError:
        return pd.DataFrame(index=range(len(prompts)))
    rows = []
    for img, prompt in zip(images, parsed):
        j = W.judged(img.permute(1, 2, 0).numpy().astype(np.float32) / 255.0, prompt)
        rows.append({**j.attributes(), "fully_correct": j.fully_correct, "n_negative": j.n_negative})
    return pd.DataFrame(rows)


def attribute_summary(attrs: pd.DataFrame) -> dict:
    """Rate of each attribute, fully-correct rate and mean count of negative attributes ({} when
    there are none: a real prompt set)."""
    if attrs.columns.empty:
        return {}
    out = {k: float(attrs[k].mean()) for k in W.ATTRIBUTES + ("fully_correct",)}
    out["n_negative_mean"] = float(attrs["n_negative"].mean())
    return out
