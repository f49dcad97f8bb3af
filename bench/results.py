"""Job identity, result files and the leaderboard.

A job is (backbone, method + hyperparameters, data, training, eval set, world, seed). Its
directory `<results>/runs/<backbone>-<method>-<hash>` is named by a stable hash of exactly those
resolved values, so a rerun finds its finished work and skips it (HELM-style). A job directory
holds `result.json`, `scores.parquet` (per-image scores and attributes, model and base) and
`config.yaml`; it is written under a temporary name and renamed into place, so it is either
complete or absent. The leaderboard is a pure function of those files.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
from hydra.experimental.callback import Callback

from bench.evaluate import win_rate

log = logging.getLogger(__name__)
IDENTITY_KEYS = ("backbone", "method", "data", "train", "eval", "world", "seed")
PACKAGES = ("torch", "diffusers", "transformers", "peft", "hydra-core", "numpy", "scipy", "pandas")


def job_identity(cfg: dict) -> dict:
    return {k: cfg[k] for k in IDENTITY_KEYS}


def job_hash(cfg: dict) -> str:
    blob = json.dumps(job_identity(cfg), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def job_dir(results_dir: Path, cfg: dict) -> Path:
    return Path(results_dir) / "runs" / f"{cfg['backbone']['name']}-{cfg['method']['name']}-{job_hash(cfg)}"


def is_complete(path: Path) -> bool:
    return (path / "result.json").is_file() and (path / "scores.parquet").is_file()


def provenance() -> dict:
    root = Path(__file__).resolve().parent.parent

    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    versions = {}
    for p in PACKAGES:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            versions[p] = None
    import torch
    return {"git_sha": git("rev-parse", "HEAD") or None,
            "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
            "versions": versions, "python": sys.version.split()[0], "platform": platform.platform(),
            "device": "cuda:" + torch.cuda.get_device_name(0) if torch.cuda.is_available() else
            f"cpu ({torch.get_num_threads()} threads)"}


def write_job(path: Path, result: dict, scores: pd.DataFrame, config_yaml: str) -> None:
    """Write the job directory atomically: all files into a temp dir, then one rename."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    scores.to_parquet(tmp / "scores.parquet", index=False)
    (tmp / "config.yaml").write_text(config_yaml)
    (tmp / "result.json").write_text(json.dumps(result, indent=2, default=_json_default))
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


def _json_default(o):
    if isinstance(o, (np.integer, np.floating, np.bool_)):
        return o.item()
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


# ----------------------------------------------------------------------------- leaderboard

def load_results(results_dir: Path) -> list[tuple[Path, dict]]:
    out = []
    for f in sorted(Path(results_dir).glob("runs/*/result.json")):
        try:
            out.append((f.parent, json.loads(f.read_text())))
        except (OSError, json.JSONDecodeError) as e:
            log.warning("skipping unreadable result %s: %s", f, e)
    return out


def _config_key(res: dict) -> str:
    """Identity without the seed: jobs that differ only by seed pool into one leaderboard row."""
    ident = {k: v for k, v in res["identity"].items() if k != "seed"}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]


def leaderboard(results_dir: Path) -> pd.DataFrame:
    """One row per (backbone, method, config), seeds pooled: each scorer's win rate vs base with
    its 95% CI and W/T/L over all (seed, eval seed) pairs, averaged within prompt first."""
    groups: dict[str, list[tuple[Path, dict]]] = {}
    for path, res in load_results(results_dir):
        groups.setdefault(_config_key(res), []).append((path, res))
    rows = []
    for key, members in sorted(groups.items(), key=lambda kv: (kv[1][0][1]["backbone"], kv[1][0][1]["method"])):
        first = members[0][1]
        frames = [pd.read_parquet(p / "scores.parquet") for p, _ in members]
        df = pd.concat(frames, ignore_index=True)
        ev = first["identity"]["eval"]
        row = {"backbone": first["backbone"], "method": first["method"], "config": key,
               "seeds": ",".join(str(s) for s in sorted(r["identity"]["seed"] for _, r in members)),
               **{f"budget_{k}": v for k, v in first["budget"].items()},
               "git_sha": first["provenance"]["git_sha"]}
        for name, sc in first["scorers"].items():
            st = win_rate(df[f"{name}"], df[f"base_{name}"], df["prompt_id"], sc["tie_tolerance"],
                          sc["higher_is_better"], ev["n_bootstrap"], ev["bootstrap_seed"], ev["ci"])
            row.update({f"{name}_win_rate": st["win_rate"], f"{name}_ci_low": st["ci_low"],
                        f"{name}_ci_high": st["ci_high"],
                        f"{name}_wtl": f"{st['wins']}/{st['ties']}/{st['losses']}",
                        f"{name}_mean": float(df[name].mean())})
        if "fully_correct" in df:
            row["fully_correct"] = float(df["fully_correct"].mean())
            row["n_negative_mean"] = float(df["n_negative"].mean())
        row["wall_s_mean"] = float(np.mean([r["wall_s"]["total"] for _, r in members]))
        rows.append(row)
    return pd.DataFrame(rows)


def write_leaderboard(results_dir: Path) -> Path | None:
    df = leaderboard(results_dir)
    if df.empty:
        return None
    out = Path(results_dir) / "leaderboard.csv"
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    df.to_csv(tmp, index=False, float_format="%.4f")
    os.replace(tmp, out)
    log.info("leaderboard: %s (%d rows)", out, len(df))
    return out


class LeaderboardCallback(Callback):
    """Regenerates <paths.results>/leaderboard.csv after a run or a sweep."""

    def on_run_end(self, config, **kwargs) -> None:
        write_leaderboard(Path(config.paths.results))

    def on_multirun_end(self, config, **kwargs) -> None:
        write_leaderboard(Path(config.paths.results))
