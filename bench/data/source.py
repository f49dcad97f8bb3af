"""What a feedback loader reads, and the files it derives from it.

`FeedbackSource` is one loader call: the preference source (`path`: the world's annotated pairs or
data.path), the options the method declares (`Method.feedback_options()`), the data config, the
cache directory, how many items to read and whether the source is the shapes world's.

Derived files (KTO's per-image folders, scored votes, attribute folders, extra comparison rounds)
are cached under <cache>/feedback/, keyed by their source file and options (`source_key`),
written to a temp name then renamed into place (`write_dir`), and made once by concurrent jobs
under the entry's lock (`derive_once`, bench.locks).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from bench.files import atomic, digest
from bench.locks import intact, making, seal_path


@dataclass
class FeedbackSource:
    path: Path
    options: dict                      # Method.feedback_options(): the method's settings for its loader
    data: object                       # bench.data.config.DataConfig
    cache_dir: Path
    size: int
    world: bool                        # the shapes world made `path` (its judges and annotator exist)
    scorer_options: dict = field(default_factory=dict)   # eval.scorer_options (scorers that vote)

    @property
    def derived(self) -> Path:
        """The directory of files derived from feedback sources."""
        return Path(self.cache_dir) / "feedback"


def source_key(path: Path, *options) -> str:
    # a sealed cache entry is known by its content (bench.locks), so that one made again byte for
    # byte keeps the files derived from it; any other file by its size and modification time
    st, sealed = Path(path).stat(), seal_path(path)
    version = json.loads(sealed.read_text()) if sealed.is_file() else [st.st_size, st.st_mtime_ns]
    blob = json.dumps([str(Path(path).resolve()), version, *options], default=str)
    return digest(blob, 12)


def write_dir(out: Path, write) -> Path:
    """write(tmp_dir) fills a temp directory, which is then renamed to `out`."""
    with atomic(out) as tmp:
        tmp.mkdir(parents=True)
        write(tmp)
    return out


def derive_once(entry: Path, done: Path, make) -> None:
    """make() the cache entry `entry` unless `done` (its last file) exists and the entry matches
    its seal (a damaged entry is deleted and made again); under the entry's lock, so that
    concurrent jobs compute it once (bench.locks)."""
    if done.is_file() and intact(entry):
        return
    with making(entry, f"feedback file {entry.name}"):
        if not (done.is_file() and intact(entry)):
            make()
