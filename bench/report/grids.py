"""The report's image grids: per backbone, base and each configuration side by side on the same
eval prompt and seed, cut from the jobs' sample sheets (samples.png + samples.json, written by the
runner; bench.results.write_sample_sheet).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from bench.report.figures import _key_text, _plt, _save, short_labels
from bench.results import SAMPLE_INDEX, SAMPLE_SHEET, Run

log = logging.getLogger(__name__)


def read_sheet(run: Run):
    """(index, {(prompt_id, seed): (base tile, model tile)}) from a job's samples.png, or None."""
    sheet, index = run.path / SAMPLE_SHEET, run.path / SAMPLE_INDEX
    if not sheet.is_file() or not index.is_file():
        return None
    from PIL import Image
    try:
        meta = json.loads(index.read_text())
        img = np.asarray(Image.open(sheet).convert("RGB"))
        w, h = meta["tile_width"], meta["tile_height"]
        tiles = {}
        for c, it in enumerate(meta["items"]):
            tiles[(it["prompt_id"], it["seed"])] = (img[0:h, c * w:(c + 1) * w], img[h:2 * h, c * w:(c + 1) * w])
        return meta, tiles
    except Exception as e:
        log.warning("skipping %s: unreadable sample sheet (%s)", sheet, " ".join(str(e).split())[:200])
        return None


GRID_COLUMNS = 8          # columns per block of an image grid (base + 7 configurations); more wrap below


def grid_figure(bb: str, keys: list, texts: dict, base_tiles: dict, cols: list, max_cols: int = GRID_COLUMNS):
    """One backbone's image grid: blocks of at most max_cols columns (base, then configurations),
    one row per (prompt, seed) in each block; further configurations wrap into the next block,
    which repeats the base column. Column titles are short labels with a key below."""
    plt, _ = _plt()
    short, key_lines = short_labels([c[0] for c in cols], [c[2] for c in cols])
    per = max(1, max_cols - 1)
    blocks = [cols[i:i + per] for i in range(0, len(cols), per)] or [[]]
    ncol = 1 + max(len(b) for b in blocks)
    tile, gap = 1.5, 0.45                       # inches: a tile, the space for a block's column titles
    key_h = 0.15 * len(key_lines) + (0.15 if key_lines else 0.0)
    ratios = []
    for b in range(len(blocks)):
        ratios += ([gap / tile] if b else []) + [1.0] * len(keys)
    fig = plt.figure(figsize=(tile * ncol + 2.8, tile * sum(ratios) + 0.7 + key_h))
    gs = fig.add_gridspec(len(ratios), ncol, height_ratios=ratios, hspace=0.08, wspace=0.06,
                          left=2.7 / fig.get_figwidth(), right=0.99, top=1 - 0.65 / fig.get_figheight(),
                          bottom=(key_h + 0.05) / fig.get_figheight())
    row = 0
    for b, block in enumerate(blocks):
        row += 1 if b else 0
        titles = ["base"] + [short[c[0]] for c in block]
        for i, k in enumerate(keys):
            for j, (title, tiles) in enumerate(zip(titles, [base_tiles] + [c[1] for c in block])):
                ax = fig.add_subplot(gs[row + i, j])
                ax.imshow(tiles[k], interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if i == 0:
                    ax.set_title(title, fontsize=8)
                if j == 0:
                    ax.set_ylabel(f"{texts.get(k, k[0])}\n(seed {k[1]})", rotation=0, ha="right",
                                  va="center", fontsize=7)
        row += len(keys)
    fig.suptitle(f"{bb}: base and each method, same prompt and seed", fontsize=9, y=1 - 0.12 / fig.get_figheight())
    _key_text(fig, key_lines, 0.05)
    return fig


def image_grids(lb: pd.DataFrame, runs: list[Run], outdir: Path, prompts: list[str] | None = None,
                n_prompts: int = 6, notes: list[str] | None = None) -> list[Path]:
    """Per backbone: one row per chosen eval prompt, columns base then every config, all from
    the same eval seed (and the lowest training seed that has a sample sheet)."""
    notes = notes if notes is not None else []
    by_dir = {r.path.name: r for r in runs}
    files = []
    any_sheet = False
    for bb, g in lb.groupby("backbone", sort=True):
        cols, base_tiles, texts = [], None, {}
        for _, row in g.iterrows():
            sheet = None
            for d in row.job_dirs.split(";"):
                sheet = read_sheet(by_dir[d])
                if sheet:
                    break
            if not sheet:
                continue
            meta, tiles = sheet
            texts.update({(it["prompt_id"], it["seed"]): it["prompt"] for it in meta["items"]})
            if row.method == "base" or base_tiles is None:
                base_tiles = {k: v[0] for k, v in tiles.items()}
            if row.method != "base":
                cols.append((row.label, {k: v[1] for k, v in tiles.items()}, row.method))
        if base_tiles is None:
            continue
        any_sheet = True
        keys = [k for k in base_tiles if all(k in c[1] for c in cols)]
        if prompts:
            keys = [k for p in prompts for k in keys if k[0] == p]
            if not keys:
                notes.append(f"image grid {bb}: none of the chosen prompts {', '.join(prompts)} is in the sample sheets")
                continue
        keys = keys[:n_prompts] if not prompts else keys
        if not keys:
            notes.append(f"image grid {bb}: the sample sheets share no (prompt, seed)")
            continue
        fig = grid_figure(bb, keys, texts, base_tiles, cols)
        files += _save(fig, outdir / f"grid-{bb}")
    if not any_sheet:
        notes.append(f"image grids skipped: no job directory holds {SAMPLE_SHEET} "
                     "(results written before the runner saved sample sheets)")
    return files

