"""Real-world preference datasets and prompt sets, read from local files in their published formats.

Preference pairs, streamed (never read whole) as winner-first `bench.data.Pair`s; ties dropped
unless keep_ties; an image that does not decode stops the read with its row index
(on_corrupt='error', the default) or is named in one warning line, recorded in `skipped` and left
out with nothing else (on_corrupt='skip'):

    pickapic_v2   yuvalkirstain/pickapic_v2 parquet shards (HF dataset card): columns caption,
                  jpg_0, jpg_1 (image bytes), label_0, label_1 (1/0, 0/1; 0.5/0.5 a tie), in
                  <root>/data/<split>-NNNNN-of-NNNNN-<hash>.parquet (or the parquet-converter's
                  <root>/<split>/NNNN.parquet); each shard memory-mapped and read a record batch at
                  a time. Row indices count across the split's shards in name order.
    hpdv2         HPD v2 (tgxs002/HPSv2 README "Data Structure"): <root>/train.json
                  [{prompt, file_path: [..], human_preference: [..]}] with 1 marking the preferred
                  image; <root>/test.json [{prompt, image_path: [..], rank: [..]}] with a lower rank
                  better (hpsv2/evaluation.py evaluate_rank); images under <root>/<split>/.
                  A record yields every pair of its images (the preferred one against each other;
                  test: every two images, equal ranks a tie); its pairs carry the record's index.

Prompt sets (`PROMPT_SETS`, for eval.prompt_set), each prompt with a stable id:

    partiprompts          PartiPrompts.tsv (HF nateraw/parti-prompts): columns Prompt, Category,
                          Challenge, Note; 1,632 prompts
    drawbench             DrawBench CSV (columns Prompts, Category; 200 prompts) or HPDv2's
                          benchmark/drawbench.json (a list of prompts)
    hpsv2_benchmark       the directory of HPDv2 benchmark/{anime,concept-art,paintings,photo}.json
                          (hpsv2/utils.py hps_prompt_files), each a list of prompts; ids
                          '<style>/<index:05d>' as HPSv2 names the images (README)
    pickapic_test_unique  Pick-a-Pic v2 test_unique shard(s) (with or without images): the captions

The suite samples every prompt itself, so the HPSv2 benchmark's silent skipping of missing images
(evaluation.py BenchmarkDataset prints "missing image for prompt") cannot happen here.
"""
from __future__ import annotations

import csv
import itertools
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from bench.data.pairs import (ON_CORRUPT, Pair, PairData, corrupt_image, decode_image, open_pickapic, read_pickapic,
                              stack_pairs)
from bench.registry import BenchError

log = logging.getLogger(__name__)

HPS_STYLES = ("anime", "concept-art", "paintings", "photo")     # hpsv2/utils.py hps_prompt_files
HPD_SPLITS = ("train", "test")


# ----------------------------------------------------------------------------- Pick-a-Pic v2

def pickapic_shards(root: str | Path, split: str) -> list[Path]:
    """The parquet shards of one split: `root` itself if it is a file, else the split's shards
    under it (HF layout <split>-*.parquet or the parquet-converter's <split>/*.parquet)."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise BenchError(f"Pick-a-Pic v2 not found at {root}; point it at the dataset directory or a shard")
    shards = sorted(set(root.rglob(f"{split}-*.parquet")) | set(root.rglob(f"{split}/*.parquet")))
    if not shards:
        raise BenchError(f"no {split!r} shards under {root} (expected data/{split}-*.parquet); "
                         "check the path and the split name")
    return shards


def pickapic_v2(root: str | Path, split: str = "train", keep_ties: bool = False, size: int | None = None,
                on_corrupt: str = "error", skipped: list | None = None):
    """Stream the winner-first pairs of a Pick-a-Pic v2 split, shard by shard."""
    offset = 0
    for shard in pickapic_shards(root, split):
        yield from read_pickapic(shard, keep_ties, size, on_corrupt, offset, skipped)
        offset += open_pickapic(shard).metadata.num_rows


# ----------------------------------------------------------------------------- HPD v2

def _hpd_record(rec, split: str) -> tuple[str, list[str], list[tuple[int, int, bool]]]:
    """(prompt, image paths, pairs (winner, loser, tie) as positions); ValueError if malformed."""
    files, key = (rec["file_path"], "human_preference") if split == "train" else (rec["image_path"], "rank")
    labels = rec[key]
    if not isinstance(rec["prompt"], str) or len(files) < 2 or len(labels) != len(files):
        raise ValueError
    if split == "train":
        ones = labels.count(1)
        if labels.count(0) + ones != len(labels) or 1 < ones < len(labels):
            raise ValueError
        if ones in (0, len(labels)):      # no image preferred over another: ties
            return rec["prompt"], files, [(a, b, True) for a, b in itertools.combinations(range(len(files)), 2)]
        w = labels.index(1)
        return rec["prompt"], files, [(w, j, False) for j in range(len(files)) if j != w]
    pairs = []
    for a, b in itertools.combinations(range(len(files)), 2):
        ra, rb = float(labels[a]), float(labels[b])
        pairs.append((a, b, True) if ra == rb else ((a, b, False) if ra < rb else (b, a, False)))
    return rec["prompt"], files, pairs


def hpdv2(root: str | Path, split: str = "train", keep_ties: bool = False, size: int | None = None,
          on_corrupt: str = "error", skipped: list | None = None, image_dir: str | Path | None = None):
    """Stream the winner-first pairs of HPD v2's train.json or test.json. Images are read from
    `image_dir` (default <root>/<split>) as each pair is produced."""
    if split not in HPD_SPLITS:
        raise BenchError(f"unknown HPD v2 split {split!r}; valid: {', '.join(HPD_SPLITS)}")
    if on_corrupt not in ON_CORRUPT:
        raise BenchError(f"unknown on_corrupt {on_corrupt!r}; valid: {', '.join(ON_CORRUPT)}")
    meta = Path(root) / f"{split}.json"
    if not meta.is_file():
        raise BenchError(f"HPD v2 annotations not found: {meta}; point it at the unpacked HPD directory")
    images = Path(image_dir) if image_dir else Path(root) / split
    for i, rec in enumerate(json.loads(meta.read_text())):
        try:
            prompt, files, pairs = _hpd_record(rec, split)
        except (ValueError, KeyError, TypeError):
            need = "prompt, file_path and human_preference (one 1, rest 0)" if split == "train" else \
                "prompt, image_path and rank of equal lengths"
            raise BenchError(f"{meta}: record {i} is malformed; each needs {need}") from None
        if not keep_ties and pairs and all(p[2] for p in pairs):
            log.info("%s: record %d prefers no image over another (%s); its %d pairs are ties, dropped "
                     "(data.keep_ties=true keeps them)", meta, i,
                     rec.get("human_preference", rec.get("rank")), len(pairs))
        pairs = [p for p in pairs if keep_ties or not p[2]]
        decoded = _decode_record(images, files, {k for p in pairs for k in p[:2]}, size, f"{meta} record {i}")
        bad = [k for k, img in decoded.items() if isinstance(img, Exception)]
        if bad:
            corrupt_image(f"{meta} ({files[bad[0]]})", i, decoded[bad[0]], on_corrupt, skipped)
        for w, lo, tie in pairs:
            if w not in bad and lo not in bad:
                yield Pair(i, prompt, decoded[w], decoded[lo], tie)


def _decode_record(images: Path, files: list[str], needed: set[int], size, where: str) -> dict:
    """Position -> decoded image, or the exception that decoding (or reading) raised."""
    out = {}
    for k in sorted(needed):
        try:
            out[k] = decode_image((images / files[k]).read_bytes(), size)
        except Exception as e:  # a missing file and a corrupt one are both this row's bad image
            out[k] = e
    return out


# ----------------------------------------------------------------------------- training subsets

PAIR_SOURCES = {"pickapic_v2": pickapic_v2, "hpdv2": hpdv2}


def load_pairs(source: str, root: str | Path, split: str = "train", max_pairs: int | None = None,
               keep_ties: bool = False, size: int | None = None, on_corrupt: str = "error",
               skipped: list | None = None) -> PairData:
    """The first `max_pairs` pairs of a source as in-memory PairData (what the trainer takes).
    Streaming stops there, so a subset of Pick-a-Pic's 335 GB costs only the shards it reads."""
    if source not in PAIR_SOURCES:
        raise BenchError(f"unknown preference source {source!r}; valid: {', '.join(PAIR_SOURCES)}")
    pairs = list(itertools.islice(PAIR_SOURCES[source](root, split, keep_ties, size, on_corrupt, skipped),
                                  max_pairs))
    if not pairs:
        raise BenchError(f"{source} at {root} (split {split!r}) gave no usable pairs")
    return stack_pairs(pairs)


# ----------------------------------------------------------------------------- prompt sets

@dataclass(frozen=True)
class PromptItem:
    """One eval prompt: a stable id (for pairing and per-prompt averaging), the text, a category."""
    id: str
    text: str
    category: str = ""


def _need_file(path: str | Path | None, what: str) -> Path:
    if not path:
        raise BenchError(f"eval.prompt_path is not set; point it at {what}")
    path = Path(path)
    if not path.exists():
        raise BenchError(f"prompt file not found: {path}; point eval.prompt_path at {what}")
    return path


def _table_prompts(path: Path, column: str, delimiter: str, prefix: str) -> list[PromptItem]:
    # A TSV has no quoting: PartiPrompts holds prompts such as `"G I G G L E" painted ...` whose
    # quotes are part of the text, and CSV quoting would strip them (or, on an unmatched quote,
    # merge the following rows into one prompt). CSV files (DrawBench) do quote.
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter=delimiter, quoting=quoting)
        if column not in (reader.fieldnames or []):
            raise BenchError(f"{path}: no {column!r} column (found {reader.fieldnames}); is it the published file?")
        out = []
        for i, row in enumerate(reader):
            text = (row[column] or "").strip()
            if not text:
                raise BenchError(f"{path}: row {i + 1} has an empty {column!r}; fix or drop that row")
            out.append(PromptItem(f"{prefix}{i:04d}", text, (row.get("Category") or "").strip()))
    return out


def _json_prompts(path: Path, prefix: str) -> list[PromptItem]:
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise BenchError(f"{path}: not readable JSON ({type(e).__name__}); expected a list of prompts") from None
    if not isinstance(items, list) or not all(isinstance(t, str) and t.strip() for t in items):
        raise BenchError(f"{path}: expected a JSON list of non-empty prompt strings")
    return [PromptItem(f"{prefix}{i:05d}", t.strip()) for i, t in enumerate(items)]


def partiprompts(path) -> list[PromptItem]:
    """PartiPrompts (1,632 prompts, 12 categories): PartiPrompts.tsv."""
    return _table_prompts(_need_file(path, "PartiPrompts.tsv"), "Prompt", "\t", "parti/")


def drawbench(path) -> list[PromptItem]:
    """DrawBench (200 prompts, 11 categories): its CSV, or HPDv2's drawbench.json."""
    path = _need_file(path, "the DrawBench CSV or HPDv2's drawbench.json")
    if path.suffix == ".json":
        return _json_prompts(path, "drawbench/")
    return _table_prompts(path, "Prompts", ",", "drawbench/")


def hpsv2_benchmark(path) -> list[PromptItem]:
    """HPSv2 benchmark prompts, four styles (anime, concept-art, paintings, photo): a directory."""
    root = _need_file(path, "the HPDv2 benchmark directory holding anime.json, concept-art.json, "
                            "paintings.json and photo.json")
    missing = [s for s in HPS_STYLES if not (root / f"{s}.json").is_file()]
    if missing:
        raise BenchError(f"{root}: missing {', '.join(f'{s}.json' for s in missing)}; the HPSv2 benchmark "
                         f"has 4 styles ({', '.join(HPS_STYLES)})")
    return [PromptItem(p.id, p.text, style) for style in HPS_STYLES
            for p in _json_prompts(root / f"{style}.json", f"{style}/")]


def pickapic_test_unique(path) -> list[PromptItem]:
    """Pick-a-Pic v2 test_unique captions (the Diffusion-DPO eval prompts): the shard or directory."""
    import pyarrow.parquet as pq
    root = _need_file(path, "Pick-a-Pic v2's test_unique shard (or the dataset directory)")
    captions = [c for shard in pickapic_shards(root, "test_unique")
                for c in pq.read_table(shard, columns=["caption"], memory_map=True).column("caption").to_pylist()]
    bad = [i for i, c in enumerate(captions) if not isinstance(c, str) or not c.strip()]
    if bad:
        raise BenchError(f"{root}: test_unique row {bad[0]} has no caption")
    unique = list(dict.fromkeys(c.strip() for c in captions))
    if len(unique) < len(captions):
        log.warning("%s: %d repeated caption(s) in test_unique, kept once", root, len(captions) - len(unique))
    return [PromptItem(f"pickapic-test_unique/{i:03d}", c) for i, c in enumerate(unique)]


PROMPT_SETS = {"partiprompts": partiprompts, "drawbench": drawbench, "hpsv2_benchmark": hpsv2_benchmark,
               "pickapic_test_unique": pickapic_test_unique}


def load_prompt_set(name: str, path: str | Path | None) -> list[PromptItem]:
    if name not in PROMPT_SETS:
        raise BenchError(f"unknown eval.prompt_set {name!r}; valid: world, {', '.join(PROMPT_SETS)}")
    return PROMPT_SETS[name](path)
