"""One computation per cache entry and per job, whatever the number of processes; entries that
verify themselves.

Jobs of a sweep run side by side (sweeps/hydra/launcher/parallel.yaml), and two users may start
the same suite on the same results and cache directories. Everything that is computed once and
shared (base samples, their scores, preference files, derived feedback files, reference errors)
and every job are therefore made under an exclusive file lock: the first process computes, the
others wait and then find the finished entry. The entry itself is still written under a
temporary name and renamed into place, so a reader without the lock never sees half a file.

Locks are the `filelock` package's: `flock(2)` on `<dir>/.locks/<name>.lock`. The kernel releases
such a lock when its holder exits, however it exits (`kill -9`, a crash, a lost SLURM node's
process on a local disk), so a lock cannot go stale: there is no holder that is dead but still
holds it, and nothing to break. (A file that outlives its holder is just a file; the next
process locks it again.) On filesystems without flock, filelock falls back to its own soft locks,
which record pid and host and break a dead holder's lock themselves. Beside each lock held here
`<name>.lock.owner` names the holder (pid, host, since when), so that a process that waits logs
whom it waits for; the owner file is diagnostics only, never consulted to decide who holds the lock.

Cache entries carry a seal, `<entry>.sha256`: the size and SHA-256 of the entry's file (or of
every file of a directory entry), written when the entry is made (`making`). An entry that does
not match its seal, or that its loader cannot read, is logged with its path, deleted and made
again (`load_entry`, `intact`), instead of failing every rerun or, worse, being used damaged.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
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
    lp = lock_path(path, root)
    if lock is None:
        t = time.time()
        log.info("waiting for another process to finish %s (%s held by %s)", what or Path(path).name, lp, owner(lp))
        lock = FileLock(str(lp))
        lock.acquire(poll_interval=poll_s)
        _write_owner(lp)
        log.info("... done waiting (%.0f s)", time.time() - t)
    try:
        yield
    finally:
        _release(lock, lp)


def _owner_path(lp: Path) -> Path:
    return lp.with_name(lp.name + ".owner")


def _write_owner(lp: Path) -> None:
    """Name this process as the holder of lock file `lp` (diagnostics for waiters)."""
    tmp = lp.with_name(f"{lp.name}.owner.tmp{os.getpid()}")
    tmp.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}))
    tmp.replace(_owner_path(lp))


def owner(lp: Path) -> str:
    """'pid N on host H' of the process that holds lock file `lp`, as it wrote it."""
    try:
        o = json.loads(_owner_path(lp).read_text())
        return f"pid {o['pid']} on host {o['host']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not named itself"


def _release(lock: FileLock, lp: Path) -> None:
    _owner_path(lp).unlink(missing_ok=True)          # before the lock: the next holder writes its own
    lock.release()


def seal_path(entry: Path) -> Path:
    return Path(entry).with_name(Path(entry).name + ".sha256")


def _digest(entry: Path) -> dict[str, list]:
    """{file (relative to a directory entry; "" for a file entry): [size, sha256]}."""
    entry = Path(entry)
    files = [entry] if entry.is_file() else sorted(p for p in entry.rglob("*") if p.is_file())
    out = {}
    for f in files:
        h = hashlib.sha256()
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        out["" if f == entry else str(f.relative_to(entry))] = [f.stat().st_size, h.hexdigest()]
    return out


def seal(entry: Path) -> None:
    """Write the seal of a finished cache entry (temp name, then rename)."""
    sp = seal_path(entry)
    tmp = sp.with_name(f"{sp.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(_digest(entry), sort_keys=True))
    tmp.replace(sp)


def _damage(entry: Path) -> str | None:
    """How the entry differs from its seal; None when it matches or has no seal (an entry made
    before seals existed is checked by its loader alone)."""
    sp = seal_path(entry)
    if not sp.is_file():
        return None
    try:
        sealed = json.loads(sp.read_text())
    except (OSError, ValueError):
        return f"its seal {sp.name} cannot be read"
    found = _digest(entry)
    for name in sorted(set(sealed) | set(found)):
        if name not in found:
            return f"{name or 'the file'} is missing"
        if name not in sealed:
            return f"{name} is not part of it"
        if found[name][0] != sealed[name][0]:
            return f"{name or 'the file'} has {found[name][0]} bytes, sealed with {sealed[name][0]}"
        if found[name][1] != sealed[name][1]:
            return f"{name or 'the file'} does not match its SHA-256"
    return None


def _discard(entry: Path, why: str) -> None:
    log.warning("cache entry %s is damaged (%s); deleting it and making it again", entry, why)
    if Path(entry).is_dir():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        Path(entry).unlink(missing_ok=True)
    seal_path(entry).unlink(missing_ok=True)


def intact(entry: Path) -> bool:
    """Whether the cache entry exists and matches its seal; a damaged one is logged, deleted and
    False is returned, so that the caller makes it again."""
    if not Path(entry).exists():
        return False
    why = _damage(entry)
    if why is not None:
        _discard(entry, why)
        return False
    return True


def load_entry(path: Path, load):
    """load(path) for a cache entry, or None when it is missing, does not match its seal or cannot
    be read: a damaged entry (a truncated file, a flipped byte, a disk error) is deleted with a
    warning naming it, so that it is made again instead of failing every rerun the same way."""
    if not Path(path).is_file() or not intact(path):
        return None
    try:
        value = load(path)
    except Exception as e:         # safetensors / pyarrow / torch raise their own types
        _discard(path, f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else 'cannot be read'}")
        return None
    if not seal_path(path).is_file():  # made before seals existed, and readable: seal it now
        seal(path)
    return value


@contextmanager
def making(entry: Path, what: str = ""):
    """Hold the lock of cache entry `entry` while the block makes it (when it is not already
    there); on leaving, an entry without a seal gets one."""
    with exclusive(entry, what):
        yield
        if Path(entry).exists() and not seal_path(entry).is_file():
            seal(entry)


def try_exclusive(path: Path, root: Path | None = None) -> FileLock | None:
    """The lock of `path` if no other process holds it (released by the caller), else None."""
    lp = lock_path(path, root)
    lp.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lp))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return None
    _write_owner(lp)
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
            _release(lock, lock_path(p))
    with making(path, what or path.name):
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
