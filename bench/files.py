"""Writing files so that a killed process never leaves half of one, and hashing what names them.

`atomic(path)` yields a temporary name beside `path` (same directory, so the rename is atomic on
POSIX); whatever the caller writes there (a file or a directory, by any writer: safetensors,
parquet, save_pretrained) replaces `path` in one rename when the block ends, and is removed if it
raises. `key(*parts)` is the short content hash the caches and job directories are named by;
`digest(data, n)` the SHA-256 of one string or byte string.
Imports no torch.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path


@contextlib.contextmanager
def atomic(path: str | Path, suffix: str = ""):
    """Yield `<path>.tmp<pid><suffix>`; on success it replaces `path` (an existing directory at
    `path` is removed first), on an exception it is deleted. `suffix` keeps an extension that a
    writer needs (e.g. '.png')."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}{suffix}")
    _remove(tmp)
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    if tmp.is_dir() and path.is_dir():
        shutil.rmtree(path)
    os.replace(tmp, path)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically, creating its directory."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic(path) as tmp:
        tmp.write_text(text)


def digest(data: str | bytes, n: int | None = None) -> str:
    """The SHA-256 of `data` (text as UTF-8) in hex, its first n digits when n is given."""
    h = hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()
    return h if n is None else h[:n]


def key(*parts, n: int = 12) -> str:
    """The first n hex digits of the SHA-256 of the parts as sorted JSON (str() for the rest)."""
    return digest(json.dumps(parts, sort_keys=True, default=str), n)
