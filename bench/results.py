"""Job identity, result files and the leaderboard.

A job is (backbone, method + hyperparameters, data, training, eval set, world, seed). Its
directory `<results>/runs/<backbone>-<method>-<hash>` is named by a stable hash of exactly those
resolved values, so a rerun finds its finished work and skips it (HELM-style). A job directory
holds `result.json`, `scores.parquet` (per-image scores and attributes, model and base) and
`config.yaml`; it is written under a temporary name and renamed into place, so it is either
complete or absent. The leaderboard is a pure function of those files.
"""
from __future__ import annotations

import json
import logging
import platform
import subprocess
import sys
import dataclasses
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from bench import world as W
from bench.statistics import win_rate
from bench.files import atomic, digest

log = logging.getLogger(__name__)
IDENTITY_KEYS = ("backbone", "method", "data", "train", "eval", "world", "seed")
PACKAGES = ("torch", "diffusers", "transformers", "peft", "hydra-core", "numpy", "scipy", "pandas")


# Operational settings inside identity sections that do not change what a job computes: left
# out of its identity, so changing them neither renames a job nor makes a finished one rerun.
NOT_IDENTITY = {"train": ("checkpoint_every", "gradient_checkpointing")}
# Options added after jobs were committed, as (path, default): at their defaults they are left out
# of the identity, so adding an option renames no finished job; any other value is part of it.
ADDED_OPTIONS = [(("train", "ref_draws"), 0), (("train", "ref_draw_seed"), 0), (("data", "generators"), ["base"]),
                 (("train", "mixed_precision"), "no"), (("train", "optimizer"), "adamw"), (("train", "scale_lr"), False),
                 (("method", "attributes_file"), None)] + [
    (("data", k), v) for k, v in (("split", "train"), ("num_workers", 0), ("shuffle_buffer", 1000),
                                  ("random_crop", False), ("hflip", True), ("latent_cache", "none"),
                                  ("on_corrupt", "error"))] + [
    (("world", *path), value) for path, value in W.ADDED_OPTIONS]


def job_identity(cfg: dict) -> dict:
    ident = {k: cfg[k] for k in IDENTITY_KEYS}
    if cfg.get("weights_fingerprint"):      # weights named by a path or hub id (bench.config.resolve)
        ident["weights_fingerprint"] = cfg["weights_fingerprint"]
    for section, keys in NOT_IDENTITY.items():
        if isinstance(ident.get(section), dict):
            ident[section] = {k: v for k, v in ident[section].items() if k not in keys}
    return W.drop_added(ident, ADDED_OPTIONS)


def job_hash(cfg: dict) -> str:
    blob = json.dumps(job_identity(cfg), sort_keys=True, default=str)
    return digest(blob, 12)


def job_dir(results_dir: Path, cfg: dict) -> Path:
    return Path(results_dir) / "runs" / f"{cfg['backbone']['name']}-{cfg['method']['name']}-{job_hash(cfg)}"


def is_complete(path: Path) -> bool:
    return (path / "result.json").is_file() and (path / "scores.parquet").is_file()


# What the suite itself writes into the repository: committed results, each paper spec's output
# folder and measurements. A change there (a spec regenerating its table while a later spec's jobs
# run) is not a change to the code or configs a job ran with, so it does not make the job dirty.
GENERATED_PATHS = ("results", "paper/*/", "benchmarks/measured")


def _git(root: Path, *args) -> str:
    try:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def git_dirty(root: Path) -> bool:
    """Whether a tracked file outside GENERATED_PATHS differs from HEAD (untracked files ignored)."""
    excludes = [f":(exclude,glob){g.rstrip('/')}/**" for g in GENERATED_PATHS]
    return bool(_git(root, "status", "--porcelain", "--untracked-files=no", "--", ".", *excludes))


def provenance(device: str | None = None) -> dict:
    """git sha and dirty flag (bench.results.git_dirty), package versions, python, platform and
    `device`: the device the job ran on (bench.devices.device_record); None: the one torch would pick."""
    root = Path(__file__).resolve().parent.parent
    versions = {}
    for p in PACKAGES:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            versions[p] = None
    import torch
    return {"git_sha": _git(root, "rev-parse", "HEAD") or None,
            "git_dirty": git_dirty(root),
            "versions": versions, "python": sys.version.split()[0], "platform": platform.platform(),
            "device": device if device is not None else "cuda:" + torch.cuda.get_device_name(0)
            if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"}


def write_job(path: Path, result: dict, scores: pd.DataFrame, config_yaml: str) -> None:
    """Write the job directory atomically: all files into a temp dir, then one rename."""
    with atomic(path) as tmp:
        tmp.mkdir(parents=True)
        scores.to_parquet(tmp / "scores.parquet", index=False)
        (tmp / "config.yaml").write_text(config_yaml)
        (tmp / "result.json").write_text(json.dumps(result, indent=2, default=_json_default))


def _json_default(o):
    if isinstance(o, (np.integer, np.floating, np.bool_)):
        return o.item()
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


SAMPLE_SHEET = "samples.png"
SAMPLE_INDEX = "samples.json"


def write_sample_sheet(path: Path, images, base_images, prompt_ids, prompts, seeds,
                       n_prompts: int = 8, max_tile: int = 128) -> None:
    """A small PNG beside result.json for the report's image grids: row 0 base, row 1 this
    job's model, one column per chosen eval prompt at eval seed 0 (prompts evenly spaced over
    the eval set, so every job of the same eval config shows the same ones), plus samples.json
    naming each column. Images are uint8 (N, 3, H, W); tiles larger than max_tile are shrunk."""
    from PIL import Image
    idx = [i for i, s in enumerate(seeds) if s == 0] or list(range(len(seeds)))
    if not idx:
        return
    pick = sorted({idx[int(round(j))] for j in np.linspace(0, len(idx) - 1, min(n_prompts, len(idx)))})

    def tile(img) -> Image.Image:
        im = Image.fromarray(np.asarray(img).transpose(1, 2, 0).astype(np.uint8))
        if max(im.size) > max_tile:
            im.thumbnail((max_tile, max_tile), Image.Resampling.LANCZOS)
        return im
    tiles = [[tile(base_images[i]) for i in pick], [tile(images[i]) for i in pick]]
    w, h = tiles[0][0].size
    sheet = Image.new("RGB", (w * len(pick), h * 2))
    for r, row in enumerate(tiles):
        for c, im in enumerate(row):
            sheet.paste(im, (c * w, r * h))
    index = {"tile_width": w, "tile_height": h, "rows": ["base", "model"],
             "items": [{"prompt_id": str(prompt_ids[i]), "prompt": str(prompts[i]), "seed": int(seeds[i])}
                       for i in pick]}
    path = Path(path)
    for name, write in ((SAMPLE_SHEET, lambda f: sheet.save(f, format="PNG", optimize=True)),
                        (SAMPLE_INDEX, lambda f: f.write_text(json.dumps(index, indent=1)))):
        with atomic(path / name) as tmp:
            write(tmp)


# ----------------------------------------------------------------------------- leaderboard

def load_results(results_dir: Path) -> list[tuple[Path, dict]]:
    out = []
    for f in sorted(Path(results_dir).glob("runs/*/result.json")):
        try:
            out.append((f.parent, json.loads(f.read_text())))
        except (OSError, json.JSONDecodeError) as e:
            log.warning("skipping unreadable result %s: %s", f, e)
    return out


def config_key(res: dict) -> str:
    """Identity without the seed: jobs that differ only by seed pool into one leaderboard row."""
    ident = {k: v for k, v in res["identity"].items() if k != "seed"}
    return digest(json.dumps(ident, sort_keys=True), 12)


@dataclass
class Run:
    """One finished job as the report and the paper specs see it: its directory, result.json and scores.parquet."""
    path: Path
    result: dict
    scores: pd.DataFrame

    @property
    def seed(self) -> int:
        return self.result["identity"]["seed"]


RESULT_KEYS = ("backbone", "method", "identity", "scorers", "budget", "provenance", "wall_s")
# result.json's schema version. 1: `schema` itself, `training` (device, precision, optimizer,
# effective lr, placement) and `config.weights_fingerprint` where weights come from a path.
# Files without `schema` (version 0, every job committed before it) have the same other fields.
RESULT_SCHEMA = 1


@dataclass
class ResultRecord:
    """What one job writes to result.json (bench.runner), field by field."""
    job: str                       # the job hash (bench.results.job_hash)
    backbone: str
    method: str
    identity: dict                 # the hashed part of the config
    config: dict                   # the fully resolved config
    provenance: dict               # git sha + dirty flag, package versions, python, platform, device
    wall_s: dict                   # seconds per stage
    peak_rss_mb: float
    budget: dict                   # optimizer steps x batch
    data: dict                     # what the method trained on
    scorers: dict                  # per scorer: mean/std/n, base mean, vs_base win rate with CI
    attributes: dict               # judge attribute rates, model and base
    train_history: list
    training: dict = field(default_factory=dict)    # device, precision, optimizer, lr, placement
    schema: int = RESULT_SCHEMA

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        if not out["training"]:
            del out["training"]
        return out


def load_runs(results_dir: Path | None, problems: list[str] | None = None,
              dirs: list[Path] | None = None) -> list[Run]:
    """Every readable job under <results_dir>/runs (or the given job dirs). A missing or corrupt
    result file is named in one warning line (also appended to `problems`) and its job left out;
    the rest still load."""
    if dirs is None:
        root = Path(results_dir) / "runs"
        dirs = sorted(p for p in root.iterdir() if p.is_dir() and ".tmp" not in p.name) if root.is_dir() else []
    runs = []
    for d in dirs:
        try:
            runs.append(_load_run(d))
        except _BadRun as e:
            line = f"skipping {e.path}: {e.reason}"
            log.warning("%s", line)
            if problems is not None:
                problems.append(line)
    return runs


class _BadRun(Exception):
    def __init__(self, path: Path, reason: str):
        super().__init__(reason)
        self.path, self.reason = path, " ".join(str(reason).split())[:300]   # always one line


def _load_run(d: Path) -> Run:
    rj, sp = d / "result.json", d / "scores.parquet"
    if not rj.is_file():
        raise _BadRun(rj, "missing result.json")
    try:
        res = json.loads(rj.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _BadRun(rj, f"corrupt result.json ({e})") from None
    if isinstance(res, dict) and int(res.get("schema", 0)) > RESULT_SCHEMA:
        raise _BadRun(rj, f"result.json schema {res['schema']} is newer than this code's ({RESULT_SCHEMA}); "
                          "update diffpref-bench")
    if not isinstance(res, dict) or any(k not in res for k in RESULT_KEYS):
        missing = [k for k in RESULT_KEYS if not isinstance(res, dict) or k not in res]
        raise _BadRun(rj, f"result.json lacks {', '.join(missing)}")
    if not sp.is_file():
        raise _BadRun(sp, "missing scores.parquet")
    try:
        scores = pd.read_parquet(sp)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise _BadRun(sp, f"corrupt scores.parquet ({type(e).__name__}: {e})") from None
    need = ["prompt_id"] + [c for n in res["scorers"] for c in (n, f"base_{n}")]
    lacking = [c for c in need if c not in scores.columns]
    if lacking:
        raise _BadRun(sp, f"scores.parquet lacks column(s) {', '.join(lacking)}")
    return Run(d, res, scores)


def flat_identity(res: dict, seed: bool = False) -> dict:
    """The job identity as dotted keys ('method.beta', 'train.finetune', ...); list values as JSON."""
    out = {}

    def walk(prefix, node):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            out[prefix] = json.dumps(node) if isinstance(node, (list, tuple)) else node
    walk("", {k: v for k, v in res["identity"].items() if seed or k != "seed"})
    return out


def varying_keys(identities: list[dict]) -> list[str]:
    """Dotted keys whose values differ between the given flat identities (a swept axis)."""
    keys = sorted({k for ident in identities for k in ident})
    return [k for k in keys if len({json.dumps(ident.get(k), sort_keys=True) for ident in identities}) > 1]


def short_keys(keys: list[str]) -> dict[str, str]:
    """'method.beta' -> 'beta' where the last component is unambiguous among keys."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (t if last.count(t) == 1 else k) for k, t in zip(keys, last)}


def _labels(groups: dict[str, list[Run]]) -> dict[str, str]:
    """A readable row label: the method name, plus the config keys that tell its rows apart."""
    by_method: dict[tuple, list[str]] = {}
    for key, members in groups.items():
        r = members[0].result
        by_method.setdefault((r["backbone"], r["method"]), []).append(key)
    labels = {}
    for (_, method), keys in by_method.items():
        idents = {k: flat_identity(groups[k][0].result) for k in keys}
        vary = varying_keys(list(idents.values()))
        names = short_keys(vary)
        for k in keys:
            parts = [f"{names[v]}={idents[k].get(v)}" for v in vary]
            labels[k] = f"{method} ({', '.join(parts)})" if parts else method
    return labels


def helm_mean_win_rate(df: pd.DataFrame, scorers: list[str]) -> pd.Series:
    """HELM-style mean win rate: per scorer, the fraction of the other rows of the same backbone
    that this row beats on its win rate vs base (a tie counts one half), averaged over scorers."""
    out = pd.Series(np.nan, index=df.index)
    for _, g in df.groupby("backbone"):
        if len(g) < 2:
            continue
        per = []
        for name in scorers:
            col = f"{name}_win_rate"
            if col not in g:
                continue
            v = g[col].to_numpy(float)
            beats = (v[:, None] > v[None, :]).sum(1) + 0.5 * ((v[:, None] == v[None, :]).sum(1) - 1)
            per.append(beats / (len(v) - 1))
        if per:
            out.loc[g.index] = np.mean(per, axis=0)
    return out


def pooled_scores(runs: list[Run]) -> pd.DataFrame:
    """The per-image scores of several jobs of one config, with their training seed (`train_seed`)."""
    return pd.concat([r.scores.assign(train_seed=r.seed) for r in sorted(runs, key=lambda r: r.seed)],
                     ignore_index=True)


def vs_base(runs: list[Run], name: str, df: pd.DataFrame | None = None) -> dict:
    """Win rate vs base on one scorer over the given jobs of one config (`df`: their pooled scores,
    if already built), seed-aware when they hold several training seeds (bench.statistics)."""
    df = pooled_scores(runs) if df is None else df
    sc, ev = runs[0].result["scorers"][name], runs[0].result["identity"]["eval"]
    return win_rate(df[name], df[f"base_{name}"], df["prompt_id"], sc["tie_tolerance"], sc["higher_is_better"],
                    df["train_seed"], ev.get("ci", 0.95))


def leaderboard(results_dir: Path | None = None, runs: list[Run] | None = None) -> pd.DataFrame:
    """One row per (backbone, method, config), seeds pooled: each scorer's win rate vs base with its
    95% CI (seed-aware where the config ran with >= 2 training seeds; bench.statistics), the test's
    p-value, each seed's own estimate and their spread, and W/T/L over all (seed, eval seed) pairs;
    mean scores; the mean win rate across scorers and the HELM-style mean win rate; budget, wall
    time and git sha. Reads result files only (`runs`, or every readable job under results_dir)."""
    if runs is None:
        runs = load_runs(results_dir)
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(config_key(run.result), []).append(run)
    labels = _labels(groups)
    rows, all_scorers = [], []
    for key, members in sorted(groups.items(), key=lambda kv: (kv[1][0].result["backbone"],
                                                               kv[1][0].result["method"], labels[kv[0]])):
        members = sorted(members, key=lambda r: r.seed)
        first = members[0].result
        df = pooled_scores(members)
        row = {"backbone": first["backbone"], "method": first["method"], "config": key,
               "seeds": ",".join(str(m.seed) for m in members),
               **{f"budget_{k}": v for k, v in first["budget"].items()},
               "git_sha": first["provenance"]["git_sha"]}
        extra = {}
        # runs may have been scored with different scorer sets: each scorer's numbers come from the
        # seeds that have it (the others do not enter its pooled estimate)
        names = list(dict.fromkeys(n for m in members for n in m.result["scorers"]))
        for name in names:
            if name not in all_scorers:
                all_scorers.append(name)
            have = [m for m in members if name in m.result["scorers"]]
            sdf = df if len(have) == len(members) else pooled_scores(have)
            st = vs_base(have, name, sdf)
            row.update({f"{name}_win_rate": st["win_rate"], f"{name}_ci_low": st["ci_low"],
                        f"{name}_ci_high": st["ci_high"],
                        f"{name}_wtl": f"{st['wins']}/{st['ties']}/{st['losses']}",
                        f"{name}_mean": float(sdf[name].mean())})
            extra.update({f"{name}_base_mean": float(sdf[f"base_{name}"].mean()),
                          f"{name}_p": st["p"],
                          # a claim about the method: p < .05 over >= 2 training seeds (one seed never is)
                          f"{name}_significant": st["significant"],
                          f"{name}_per_seed": " ".join(f"{x:.3f}" for x in st["per_seed"]),
                          f"{name}_seed_sd": st["seed_sd"]})
        if "fully_correct" in df:
            row["fully_correct"] = float(df["fully_correct"].mean())
            row["n_negative_mean"] = float(df["n_negative"].mean())
        row["wall_s_mean"] = float(np.mean([m.result["wall_s"]["total"] for m in members]))
        # columns added by the analysis issue (after the original ones, so old readers still work)
        row.update(extra)
        row["label"] = labels[key]
        row["n_jobs"] = len(members)
        row["wall_s_total"] = float(np.sum([m.result["wall_s"]["total"] for m in members]))
        wr = [row[f"{n}_win_rate"] for n in names]
        row["mean_win_rate"] = float(np.mean(wr)) if wr else np.nan
        row["git_dirty"] = any(bool(m.result["provenance"].get("git_dirty")) for m in members)
        row["job_dirs"] = ";".join(m.path.name for m in members)
        # seed-aware statistics (issue 15): how many training seeds the CI covers, and what it is
        row["n_seeds"] = len({m.seed for m in members})
        row["ci_kind"] = "seeds x prompts" if row["n_seeds"] > 1 else "one seed: prompts only"
        rows.append(row)
    out = pd.DataFrame(rows)
    if not out.empty:
        out["helm_mean_win_rate"] = helm_mean_win_rate(out, all_scorers)
    return out


def write_leaderboard(results_dir: Path, out: Path | None = None,
                      runs: list[Run] | None = None) -> Path | None:
    df = leaderboard(results_dir, runs=runs)
    if df.empty:
        return None
    out = Path(out) if out is not None else Path(results_dir) / "leaderboard.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic(out) as tmp:
        df.to_csv(tmp, index=False, float_format="%.4f")
    log.info("leaderboard: %s (%d rows)", out, len(df))
    return out


