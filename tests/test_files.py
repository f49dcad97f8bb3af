"""bench.files: the atomic write and the hashes that name caches, checkpoints and jobs."""
import json
import os

import pytest

from bench.files import atomic, digest, key, write_text


def test_digest_is_sha256_of_text_or_bytes():
    # FIPS 180-2 appendix B.1 test vector: SHA-256("abc")
    abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert digest("abc") == abc and digest(b"abc") == abc
    assert digest("abc", 12) == abc[:12]


def test_key_hashes_the_parts_as_sorted_json():
    assert key({"b": 1, "a": [2, 3]}, "x") == digest(json.dumps([{"a": [2, 3], "b": 1}, "x"]), 12)
    assert key(1, n=16) == digest("[1]", 16)
    assert key({"b": 1, "a": 2}) == key({"a": 2, "b": 1})


def test_atomic_write_replaces_on_success_and_leaves_nothing_on_failure(tmp_path):
    path = tmp_path / "d" / "f.txt"
    write_text(path, "one")
    with pytest.raises(RuntimeError):
        with atomic(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert path.read_text() == "one"
    assert sorted(os.listdir(path.parent)) == ["f.txt"]
