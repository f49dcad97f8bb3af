"""Preference pairs in Pick-a-Pic v2's format, and the in-memory training data (PairData, ImageData).

File format (one parquet file, as Pick-a-Pic v2's shards): `caption` (str), `jpg_0`, `jpg_1`
(encoded image bytes), `label_0`, `label_1` (1/0, 0/1, or 0.5/0.5 for a tie), and, as Pick-a-Pic
records which model made each image, `model_0`, `model_1` (the generator of each image; world files
write them, the loader does not need them). Shapes-world files
store PNG bytes in the `jpg_*` columns: lossless at 32x32 (JPEG artifacts would be read by the
judges as defects); the loader decodes whatever PIL can open, so real shards load the same way.

Loader conventions (Diffusion-DPO, SalesforceAIResearch/DiffusionDPO train.py): ties (label_0 not
in {0, 1}) are dropped by default; each kept pair is reordered winner first.
"""
from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from bench.lazy import torch  # imported on first use: the config path needs no torch
from bench.registry import BenchError
from bench.files import atomic, digest

log = logging.getLogger(__name__)
PICKAPIC_COLUMNS = ("caption", "jpg_0", "jpg_1", "label_0", "label_1")


@dataclass
class PairData:
    """Winner-first pairs: images uint8 (N, 3, H, W) each, captions, and tie flags. Methods that
    relabel pairs (bench.data.loaders) may add per-pair loss `weights` (N,) (pairs of weight 0 are
    not drawn) and `extra` per-pair tensors (N, ...) handed to the loss with each batch."""
    winners: torch.Tensor
    losers: torch.Tensor
    captions: list[str]
    ties: torch.Tensor
    weights: torch.Tensor | None = None
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.captions)


@dataclass
class ImageData:
    """Single images: uint8 (N, 3, H, W), captions, optional per-image labels (bool), sampling
    weights (drawn with replacement in proportion) and extra per-image tensors."""
    images: torch.Tensor
    captions: list[str]
    labels: torch.Tensor | None = None
    sampling_weights: torch.Tensor | None = None
    extra: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.captions)



def encode_png(img: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img.permute(1, 2, 0).numpy()).save(buf, format="PNG")
    return buf.getvalue()


def decode_image(data: bytes, size: int | None = None) -> torch.Tensor:
    with Image.open(io.BytesIO(data)) as im:
        im = im.convert("RGB")
        if size is not None and im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR)
        return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)


def write_parquet_atomic(df: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic(path) as tmp:
        df.to_parquet(tmp, index=False)


@dataclass
class Pair:
    """One winner-first pair as a loader streams it; `index` is its row in the source."""
    index: int
    caption: str
    winner: torch.Tensor
    loser: torch.Tensor
    tie: bool


ON_CORRUPT = ("error", "skip")


def corrupt_image(where: str, index: int, err: Exception, on_corrupt: str, skipped: list | None) -> None:
    """A row whose image does not decode: one BenchError line (on_corrupt='error'), or one warning
    line naming the row, which is recorded in `skipped` (on_corrupt='skip')."""
    if on_corrupt not in ON_CORRUPT:
        raise BenchError(f"unknown on_corrupt {on_corrupt!r}; valid: {', '.join(ON_CORRUPT)}")
    if on_corrupt == "error":
        raise BenchError(f"{where}: row {index} has an undecodable image ({type(err).__name__}); "
                         "fix or drop that row, or read with on_corrupt='skip'")
    log.warning("%s: row %d has an undecodable image (%s); skipped", where, index, type(err).__name__)
    if skipped is not None:
        skipped.append(index)


def open_pickapic(path: str | Path):
    """A Pick-a-Pic-format parquet file, memory-mapped; its columns are checked."""
    import pyarrow.parquet as pq
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"preference file not found: {path}; set data.path to a Pick-a-Pic-format parquet file")
    try:
        pf = pq.ParquetFile(path, memory_map=True)
    except Exception as e:     # pyarrow: ArrowInvalid / OSError on a truncated or non-parquet file
        raise BenchError(f"{path}: not a readable parquet file ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
                         "replace it (a cache entry: delete it and rerun)") from None
    missing = [c for c in PICKAPIC_COLUMNS if c not in pf.schema_arrow.names]
    if missing:
        raise BenchError(f"{path}: missing column(s) {missing}; a Pick-a-Pic file has {list(PICKAPIC_COLUMNS)}")
    return pf


def read_pickapic(path: str | Path, keep_ties: bool = False, size: int | None = None,
                  on_corrupt: str = "error", first_index: int = 0, skipped: list | None = None):
    """Stream the pairs of one Pick-a-Pic-format parquet file, a record batch at a time: ties
    dropped unless keep_ties, winner first. Row numbers count from `first_index` (the file's
    offset in a sharded split). Rows with has_label=false (where the column exists) are left out;
    malformed labels or captions stop with the row; undecodable images follow `on_corrupt`."""
    pf = open_pickapic(path)
    # Pick-a-Pic v2 marks comparisons without a choice has_label=false; they are not pairs
    # (PickScore trainer/datasetss/clip_hf_dataset.py filters on has_label)
    labelled = "has_label" in pf.schema_arrow.names
    i, unlabelled = first_index, 0
    columns = list(PICKAPIC_COLUMNS) + (["has_label"] if labelled else [])
    for batch in pf.iter_batches(batch_size=64, columns=columns):
        for row in batch.to_pylist():
            if labelled and not row["has_label"]:
                unlabelled += 1
            else:
                pair = _pickapic_pair(row, i, path, keep_ties, size, on_corrupt, skipped)
                if pair is not None:
                    yield pair
            i += 1
    if unlabelled:
        log.info("%s: %d row(s) with has_label=false left out", path, unlabelled)


def check_labels(l0: float, l1: float, path, i: int) -> None:
    if (l0, l1) not in ((1.0, 0.0), (0.0, 1.0), (0.5, 0.5)):
        raise BenchError(f"{path}: row {i} has labels ({l0}, {l1}); expected (1, 0), (0, 1) or (0.5, 0.5)")


def _pickapic_pair(row: dict, i: int, path, keep_ties: bool, size, on_corrupt: str, skipped) -> Pair | None:
    l0, l1 = float(row["label_0"]), float(row["label_1"])
    check_labels(l0, l1, path, i)
    if not isinstance(row["caption"], str):
        raise BenchError(f"{path}: row {i} has a non-text caption; fix or drop that row")
    tie = l0 == 0.5
    if tie and not keep_ties:
        return None
    try:
        a, b = decode_image(row["jpg_0"], size), decode_image(row["jpg_1"], size)
    except Exception as e:  # PIL raises several types for corrupt data
        corrupt_image(str(path), i, e, on_corrupt, skipped)
        return None
    return Pair(i, row["caption"], *((b, a) if l0 == 0.0 else (a, b)), tie)


def stack_pairs(pairs) -> PairData:
    """PairData from streamed pairs (the caller bounds how many)."""
    pairs = list(pairs)
    return PairData(torch.stack([p.winner for p in pairs]), torch.stack([p.loser for p in pairs]),
                    [p.caption for p in pairs], torch.tensor([p.tie for p in pairs]))


def load_pickapic(path: str | Path, keep_ties: bool = False, size: int | None = None,
                  on_corrupt: str = "error") -> PairData:
    """Read a Pick-a-Pic-format parquet file; ties dropped unless keep_ties, winner first."""
    pairs = list(read_pickapic(path, keep_ties, size, on_corrupt))
    if not pairs:
        n = open_pickapic(path).metadata.num_rows
        raise BenchError(f"{path}: no usable pairs (all {n} rows are ties or the file is empty)")
    return stack_pairs(pairs)


# ----------------------------------------------------------------------------- whole files as frames

def image_uid(data: bytes) -> str:
    return digest(data, 16)


def with_uids(df: pd.DataFrame) -> pd.DataFrame:
    """Pick-a-Pic v2 names its images (`image_0_uid`, `image_1_uid`); files without those columns
    get a content hash of the encoded bytes."""
    df = df.copy()
    for side in (0, 1):
        col = f"image_{side}_uid"
        if col not in df.columns:
            df[col] = [image_uid(b) for b in df[f"jpg_{side}"]]
        df[col] = df[col].astype(str)
    return df


def read_frame(path: Path) -> pd.DataFrame:
    """A whole Pick-a-Pic-format file as a frame, with the streaming reader's rules
    (bench.data.pairs.read_pickapic): rows with has_label=false left out, labels checked."""
    path = Path(path)
    pf = open_pickapic(path)                  # missing file, unreadable parquet, missing columns
    df = pf.read().to_pandas()
    if "has_label" in df.columns:
        keep = df["has_label"].astype(bool).to_numpy()
        if not keep.all():
            log.info("%s: %d row(s) with has_label=false left out", path, int((~keep).sum()))
            df = df[keep].reset_index(drop=True)
    for i, (l0, l1) in enumerate(zip(df["label_0"].to_numpy(float), df["label_1"].to_numpy(float))):
        check_labels(float(l0), float(l1), path, i)
    return df


def unique_images(df: pd.DataFrame) -> pd.DataFrame:
    """Unique images of a Pick-a-Pic frame in order of first appearance: uid, bytes, caption."""
    rows, seen = [], set()
    for r in df.itertuples(index=False):
        for side in (0, 1):
            uid = getattr(r, f"image_{side}_uid")
            if uid not in seen:
                seen.add(uid)
                rows.append({"uid": uid, "bytes": getattr(r, f"jpg_{side}"), "caption": r.caption})
    return pd.DataFrame(rows, columns=["uid", "bytes", "caption"])


def image_array(data: bytes) -> np.ndarray:
    return decode_image(data).permute(1, 2, 0).numpy().astype(np.float32) / 255.0


def image_ext(data: bytes) -> str:
    return ".png" if data[:8] == b"\x89PNG\r\n\x1a\n" else ".jpg"
