"""Fingerprints of model weights on disk, so that a job's identity follows its weights.

A job names its backbone by a path or a hub id; the files behind the name can change (a UNet
replaced in place, a newer hub revision). The fingerprint enters the job hash and the base-sample
cache key, and result.json records it:

- a directory in the HF hub cache (`.../models--org--name/snapshots/<revision>/`): its files are
  links to blobs named by their content hash (SHA-256 for LFS files, the git blob id otherwise),
  so the fingerprint is a hash of (relative path, blob name) per file: no weights are read;
- any other directory: a hash of (relative path, size, SHA-256 of the content) per file. Hashing
  an SDXL checkpoint reads ~7 GB, so each file's digest is memoised in `<cache>/fingerprints.json`
  by (absolute path, size, mtime_ns), as git's index does: a changed file is hashed again.

Imports no torch.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from bench.files import atomic

MEMO = "fingerprints.json"
SKIP_SUFFIXES = (".lock", ".sha256", ".tmp")


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")
                  and not p.name.endswith(SKIP_SUFFIXES))


def _hub_blob(p: Path) -> str | None:
    """The blob name a hub-cache snapshot file links to (its content hash), else None."""
    if not p.is_symlink():
        return None
    target = Path(os.readlink(p))
    return target.name if target.parent.name == "blobs" else None


def _digest(p: Path, memo: dict) -> str:
    st = p.stat()
    key = f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    if key not in memo:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                h.update(block)
        memo[key] = h.hexdigest()
    return memo[key]


def fingerprint(root: str | Path, cache_dir: str | Path | None = None) -> str:
    """16 hex digits identifying the files under `root` (see the module docstring)."""
    root = Path(root)
    memo_path = Path(cache_dir) / MEMO if cache_dir is not None else None
    memo: dict = {}
    if memo_path is not None and memo_path.is_file():
        try:
            memo = json.loads(memo_path.read_text())
        except (OSError, ValueError):
            memo = {}
    before = len(memo)
    h = hashlib.sha256()
    for p in _files(root):
        rel = str(p.relative_to(root))
        blob = _hub_blob(p)
        h.update(f"{rel}\0{blob}\n".encode() if blob else f"{rel}\0{p.stat().st_size}\0{_digest(p, memo)}\n".encode())
    if memo_path is not None and len(memo) != before:
        memo_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic(memo_path) as tmp:
            tmp.write_text(json.dumps(memo))
    return h.hexdigest()[:16]


def hub_snapshot(model_id: str) -> Path | None:
    """The local snapshot directory of a hub model id in the HF cache (no download), or None."""
    try:
        from huggingface_hub import snapshot_download
        return Path(snapshot_download(model_id, local_files_only=True))
    except Exception:        # not cached (LocalEntryNotFoundError), offline, malformed id
        return None
