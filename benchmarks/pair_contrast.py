"""What a preference-pair file teaches about each attribute of the shapes world.

    python benchmarks/pair_contrast.py PAIRS.parquet [--given framed]

For every judge attribute: its rate over the file's images, the number of non-tie pairs whose two
images differ in it, and in how many of those the *winner* has it. DPO can only push an attribute
down if pairs contrast it and the winner tends to lack it. `--given ATTR`: in the pairs that differ
in ATTR, every attribute's mean on the image that has ATTR and on the one that lacks it (what else
comes with it). Reads a Pick-a-Pic-format file (caption, jpg_0, jpg_1, label_0, label_1).
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def images(df: pd.DataFrame, col: str):
    import torch
    arr = np.stack([np.array(Image.open(io.BytesIO(b)).convert("RGB")) for b in df[col]])
    return torch.from_numpy(arr).permute(0, 3, 1, 2)


def contrast(df: pd.DataFrame, given: str | None = None) -> dict:
    from bench.evaluate import attribute_table
    a = [attribute_table(images(df, c), list(df.caption)) for c in ("jpg_0", "jpg_1")]
    w0, w1 = df.label_0.to_numpy() == 1.0, df.label_1.to_numpy() == 1.0
    decided = w0 | w1
    out = {"pairs": len(df), "ties": int((~decided).sum()), "attributes": {}, "given": {}}
    for attr in a[0].columns:
        x0, x1 = a[0][attr].to_numpy().astype(float), a[1][attr].to_numpy().astype(float)
        if set(np.unique(np.r_[x0, x1])) - {0.0, 1.0}:
            continue                                     # counts, not yes/no attributes
        diff = (x0 != x1) & decided
        winner = np.where(w0, x0, x1)[diff]
        out["attributes"][attr] = {"rate": float((x0.mean() + x1.mean()) / 2), "pairs_differing": int(diff.sum()),
                                   "winner_has_it": float(winner.mean()) if diff.any() else None}
    if given is not None:
        g0, g1 = a[0][given].to_numpy().astype(bool), a[1][given].to_numpy().astype(bool)
        rows = np.nonzero((g0 != g1) & decided)[0]
        has = np.where(g0[rows], 0, 1)
        for attr in a[0].columns:
            v = np.array([[a[h][attr].iloc[r], a[1 - h][attr].iloc[r]] for h, r in zip(has, rows)], float)
            out["given"][attr] = {"with": float(v[:, 0].mean()), "without": float(v[:, 1].mean())} if len(v) else {}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("pairs")
    p.add_argument("--given", default=None)
    a = p.parse_args(argv)
    res = contrast(pd.read_parquet(a.pairs), a.given)
    print(f"{res['pairs']} pairs, {res['ties']} ties")
    print(f"{'attribute':16s} {'rate':>6s} {'differing':>9s} {'winner has it':>13s}")
    for k, v in res["attributes"].items():
        w = "-" if v["winner_has_it"] is None else f"{v['winner_has_it']:.3f}"
        print(f"{k:16s} {v['rate']:6.3f} {v['pairs_differing']:9d} {w:>13s}")
    if a.given:
        print(f"\nin the pairs that differ in {a.given}: mean on the image with it / without it")
        for k, v in res["given"].items():
            if v:
                print(f"{k:16s} {v['with']:6.3f} {v['without']:6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
