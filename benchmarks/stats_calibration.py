"""Calibration of the suite's intervals and tests on synthetic data (issue 15).

    python benchmarks/stats_calibration.py [--reps 1000] [--boot 2000]

Each replicate draws a fresh world from bench.statistics.simulate — training-seed, prompt and
seed x prompt effects on the win-rate scale, 65% ties, 54 prompts x 8 eval seeds — and asks every
candidate interval whether it covers the method's true win rate, and every test whether it
rejects at α = 0.05 when the truth is 0.5. Candidates:

  t (seed-aware)      bench.statistics.estimate: crossed random effects, Satterthwaite df (the default)
  boot crossed        two-level percentile bootstrap: seeds, then one prompt draw shared by the seeds
  boot nested         seeds, then prompts drawn independently within each seed
  boot prompts only   prompt-level bootstrap of the pooled per-prompt means (what the leaderboard did)
  pair sign test      the old sign test over every (seed, prompt, eval seed) pair, ties dropped

Deterministic for a given --reps and --boot (fixed seeds); prints one Markdown table.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import stats as sps

from bench import statistics as st

# (label, training seeds, sd_seed, sd_prompt, sd_cell): the suite's own components come from
# results/tables/power.md (tiny-sd15: gold seed sd ~.009, prompt ~.096; aesthetic .023 / .106)
SCENARIOS = [
    ("gold-like, 3 seeds", 3, 0.009, 0.096, 0.0),
    ("aesthetic-like, 3 seeds", 3, 0.023, 0.106, 0.0),
    ("no seed effect, 3 seeds", 3, 0.0, 0.096, 0.0),
    ("large seed effect, 3 seeds", 3, 0.05, 0.10, 0.0),
    ("with seed x prompt, 3 seeds", 3, 0.023, 0.106, 0.04),
    ("aesthetic-like, 5 seeds", 5, 0.023, 0.106, 0.0),
    ("aesthetic-like, 1 seed", 1, 0.023, 0.106, 0.0),
]


def nested_bootstrap(m: np.ndarray, n: int, rng) -> np.ndarray:
    s, p = m.shape
    si = rng.integers(0, s, size=(n, s))
    pi = rng.integers(0, p, size=(n, s, p))
    return np.take_along_axis(m[si], pi, 2).mean((1, 2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=1000)
    ap.add_argument("--boot", type=int, default=2000)
    ap.add_argument("--win", type=float, default=0.56, help="the win rate of the coverage runs (truth != 0.5)")
    a = ap.parse_args()
    t0 = time.time()
    cols = ["t (seed-aware)", "boot crossed", "boot nested", "boot prompts only"]
    print(f"{a.reps} replicates per cell, {a.boot} bootstrap draws; 54 prompts x 8 eval seeds, 65% ties\n")
    print("| scenario | truth | " + " | ".join(f"coverage: {c}" for c in cols)
          + " | false positives: t test | false positives: pair sign test |")
    print("|" + "---|" * (len(cols) + 4))
    for k, (label, s, sd_s, sd_p, sd_c) in enumerate(SCENARIOS):
        cover = dict.fromkeys(cols, 0)
        truth = st.simulated_truth(a.win, sd_s, sd_p, sd_c)
        rng = np.random.default_rng(1000 + k)
        for _ in range(a.reps):
            v, pid, sd = st.simulate(rng, s, 54, 8, a.win, sd_s, sd_p, sd_c)
            m = st.cells(v, pid, sd).mean
            e = st.estimate(m, null=0.5)
            cover["t (seed-aware)"] += e.ci_low <= truth <= e.ci_high
            for name, draws in (("boot crossed", st.two_level_bootstrap(m, a.boot, int(rng.integers(1 << 31)))),
                                ("boot nested", nested_bootstrap(m, a.boot, rng)),
                                ("boot prompts only", st.two_level_bootstrap(m.mean(0, keepdims=True), a.boot,
                                                                             int(rng.integers(1 << 31))))):
                lo, hi = np.quantile(draws, [0.025, 0.975])
                cover[name] += lo <= truth <= hi
        rej_t = rej_sign = 0
        rng = np.random.default_rng(2000 + k)
        for _ in range(a.reps):
            v, pid, sd = st.simulate(rng, s, 54, 8, 0.5, sd_s, sd_p, sd_c)
            rej_t += st.estimate(st.cells(v, pid, sd), null=0.5).p < 0.05
            w, l_ = int((v == 1).sum()), int((v == 0).sum())
            rej_sign += sps.binomtest(w, w + l_, 0.5).pvalue < 0.05
        print(f"| {label} | {truth:.4f} | " + " | ".join(f"{cover[c] / a.reps:.3f}" for c in cols)
              + f" | {rej_t / a.reps:.3f} | {rej_sign / a.reps:.3f} |", flush=True)
    print(f"\n{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
