"""Scoring and paired statistics.

Win rate of A over B for one scorer (DESIGN.md, Statistics): images are paired by (prompt, seed)
with identical sampler, steps, guidance and resolution; a pair counts 1 if A scores higher, 0.5
within the scorer's tie tolerance, 0 otherwise; outcomes are averaged over seeds within a prompt,
then over prompts. The 95% CI is a percentile bootstrap over prompts (seeded); the p-value is a
two-sided sign test on W vs L (ties excluded).

Eval sets: the shapes world's held-out split (`prompt_set=world`, the default) or a real prompt
set read from `prompt_path` (bench.datasets.PROMPT_SETS: partiprompts, drawbench,
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
import torch
from scipy import stats
from tqdm.auto import tqdm

from bench import world as W
from bench.registry import SCORERS, BenchError


@dataclass
class EvalConfig:
    split: str = "eval"                 # eval prompts are held-out combinations; never tune on them
    prompt_set: str = "world"           # world: the split above; else a real prompt set (bench.datasets.PROMPT_SETS)
    prompt_path: str | None = None      # the prompt set's file or directory (for prompt_set != world)
    seeds_per_prompt: int = 8
    max_prompts: int | None = None      # None: the whole split; else that many, spread over it (spread())
    batch_size: int = 64
    scorers: list[str] = field(default_factory=lambda: ["gold", "fidelity", "aesthetic", "preference"])
    scorer_options: dict[str, Any] = field(default_factory=dict)   # {scorer: {Config field: value}}
    n_bootstrap: int = 10000
    bootstrap_seed: int = 0
    ci: float = 0.95


def outcomes(a: np.ndarray, b: np.ndarray, tie_tol: float, higher_is_better: bool = True) -> np.ndarray:
    """Per pair: 1 if A beats B, 0.5 within tie_tol, 0 otherwise."""
    d = (a - b) if higher_is_better else (b - a)
    return np.where(np.abs(d) <= tie_tol, 0.5, (d > 0).astype(float))


def win_rate(a, b, prompt_ids, tie_tol: float = 0.0, higher_is_better: bool = True,
             n_bootstrap: int = 10000, seed: int = 0, ci: float = 0.95) -> dict:
    """Paired win rate of A over B with W/T/L, a prompt-level bootstrap CI and a sign test."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or a.ndim != 1 or len(a) != len(prompt_ids):
        raise ValueError("a, b and prompt_ids must be 1-D and of equal length (paired samples)")
    if len(a) == 0:
        raise BenchError("no paired samples to compare; the eval prompt set is empty")
    o = outcomes(a, b, tie_tol, higher_is_better)
    per_prompt = pd.Series(o).groupby(np.asarray(prompt_ids)).mean().to_numpy()
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(per_prompt), size=(n_bootstrap, len(per_prompt)))
    boots = per_prompt[idx].mean(axis=1)
    alpha = (1 - ci) / 2
    wins, ties = int((o == 1).sum()), int((o == 0.5).sum())
    losses = len(o) - wins - ties
    p = stats.binomtest(wins, wins + losses, 0.5).pvalue if wins + losses else 1.0
    return {"win_rate": float(per_prompt.mean()), "ci_low": float(np.quantile(boots, alpha)),
            "ci_high": float(np.quantile(boots, 1 - alpha)), "wins": wins, "ties": ties,
            "losses": losses, "sign_test_p": float(p), "n_prompts": int(len(per_prompt)),
            "n_pairs": int(len(o))}


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
        from bench.datasets import load_prompt_set
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
        j = W.judge(img.permute(1, 2, 0).numpy().astype(np.float32) / 255.0, prompt)
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
