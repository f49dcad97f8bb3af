"""One computation per cache entry and per job, whatever the number of processes.

Jobs of a sweep run side by side (sweeps/hydra/launcher/parallel.yaml), and two users may start
the same suite on the same results and cache directories. Everything that is computed once and
shared (base samples, preference files, derived feedback files) and every job are therefore made
under an exclusive file lock (the `filelock` package: fcntl/msvcrt, released by the OS when the
holder dies, so `kill -9` leaves no stale lock): the first process computes, the others wait and
then find the finished entry. The entry itself is still written under a temporary name and
renamed into place, so a reader without the lock never sees half a file.
"""
from __future__ import annotations

import logging
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

log = logging.getLogger(__name__)


def lock_path(path: Path, root: Path | None = None) -> Path:
    """The lock file of `path`: `<root>/.locks/<name>.lock` (root defaults to the parent)."""
    path = Path(path)
    root = path.parent if root is None else Path(root)
    return root / ".locks" / f"{path.name}.lock"


@contextmanager
def exclusive(path: Path, what: str = "", root: Path | None = None, poll_s: float = 0.5):
    """Hold the lock of `path` for the block; logs once when another process holds it."""
    lock = try_exclusive(path, root)
    if lock is None:
        t = time.time()
        lp = lock_path(path, root)
        log.info("waiting for another process to finish %s (%s)", what or Path(path).name, lp)
        lock = FileLock(str(lp))
        lock.acquire(poll_interval=poll_s)
        log.info("... done waiting (%.0f s)", time.time() - t)
    try:
        yield
    finally:
        lock.release()


def load_entry(path: Path, load):
    """load(path) for a cache entry, or None when it is missing or cannot be read: a damaged
    entry (a truncated file, a disk error) is deleted with a warning, so that it is made again
    instead of failing every rerun the same way."""
    if not path.is_file():
        return None
    try:
        return load(path)
    except Exception as e:         # safetensors / pyarrow / torch raise their own types
        log.warning("cache entry %s cannot be read (%s: %s); deleting it and making it again", path,
                    type(e).__name__, str(e).splitlines()[0][:120] if str(e) else "")
        Path(path).unlink(missing_ok=True)
        return None


def try_exclusive(path: Path, root: Path | None = None) -> FileLock | None:
    """The lock of `path` if no other process holds it (released by the caller), else None."""
    lp = lock_path(path, root)
    lp.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lp))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return None
    return lock


def shared_chunks(path: Path, n: int, chunk: int, make, load, save, combine, what: str = ""):
    """An entry of `n` items (a batch of images) that several processes may need at once, made
    in chunks of `chunk` items that they share out: each process makes the chunks nobody else is
    making (`make(lo, hi)`, written with `save(value, part_path)`), then waits for the rest, and
    the first one done combines the parts (`combine(list)`, written with `save(value, path)`).
    So two jobs that both need the base samples or the preference images of one backbone split
    the work instead of one waiting for the other. `load(path)` reads an entry or a part back.
    Chunk boundaries are fixed (multiples of `chunk`), so the result does not depend on which
    process made which part."""
    value = load_entry(path, load)
    if value is not None:
        return value
    parts = path.with_name(path.name + ".parts")
    bounds = [(lo, min(lo + chunk, n)) for lo in range(0, n, chunk)]
    part = [parts / f"{i:05d}-{lo}-{hi}" for i, (lo, hi) in enumerate(bounds)]
    made = {}
    for p, (lo, hi) in zip(part, bounds):          # the parts nobody is making
        if path.is_file():
            return load(path)
        if p.is_file():
            continue
        lock = try_exclusive(p)
        if lock is None:
            continue
        try:
            if not p.is_file():
                made[p] = make(lo, hi)
                save(made[p], p)
        finally:
            lock.release()
    with exclusive(path, what or path.name):
        value = load_entry(path, load)
        if value is not None:
            return value
        values = []
        for p, (lo, hi) in zip(part, bounds):       # wait for the parts others are making
            if p not in made:
                with exclusive(p, f"part {p.name} of {what or path.name}"):
                    if not p.is_file():              # its maker died: make it here
                        save(make(lo, hi), p)
            values.append(made[p] if p in made else load(p))
        value = combine(values)
        save(value, path)
    shutil.rmtree(parts, ignore_errors=True)
    return value
