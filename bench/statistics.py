"""Statistics: every interval, test and power figure of the suite lives here (DESIGN.md, Statistics).

The evaluator, the leaderboard, the report's tables, the paper specs and tuning all call this
module; nothing else bootstraps, tests or computes an interval.

**The data.** A comparison — a model vs base on one scorer, method A vs method B, an attribute fixed
or broken — is a set of per-image values (1 / 0.5 / 0 outcomes, differences of outcomes, signed
flips, counts). Each image belongs to a *cell*: one training seed × one prompt, holding that
prompt's eval seeds. Training seeds and prompts are *crossed* (every trained model is evaluated on
the same prompts), so the values are first averaged within a cell into an S × P matrix `M`
(S training seeds, P prompts). The estimate is the mean of `M`: each seed's mean over prompts,
averaged over seeds — with one seed, the familiar "average within a prompt, then over prompts".

**The interval.** A claim about a *method* is a claim about a distribution over training runs and
prompts, so both are random effects: M[s, p] = μ + a_s + b_p + e_sp, and

    Var(mean M) = σ²_seed / S + σ²_prompt / P + σ²_cell / (S·P).

With S ≥ 2 it is estimated without bias from the two-way ANOVA mean squares as
(MS_seed + MS_prompt − MS_cell) / (S·P), with Satterthwaite's degrees of freedom; the CI is the
Student-t interval on it and the test is the t test on the same standard error, so p < 1 − ci
exactly when the CI excludes the null value (no bootstrap noise between them). With one seed the
same formulas reduce to the one-sample t on the P per-prompt means (df P − 1): a prompt-level test
whose interval covers prompts only, and such a result is flagged as one seed (`Estimate.seed_aware`).

**Why not a bootstrap by default.** `two_level_bootstrap` resamples seeds, then prompts (one prompt
draw shared by the drawn seeds, because prompts are crossed with seeds). Measured on synthetic data
with this suite's own variance components (`python benchmarks/stats_calibration.py`), its percentile
interval over-covers when the seed effect is small (the cell term is counted about three times) and
under-covers when it is large (three seeds resampled give (S−1)/S of the seed variance and the tails
of three points); resampling prompts independently within each seed under-covers throughout (it
divides the prompt variance by S). The t interval stays within the calibration test's bounds. The
bootstrap stays available (`estimate(..., interval="bootstrap")`) and is tested.

**Power.** `components` splits the variance into seed, prompt, seed×prompt and eval-seed (image)
parts; `mde` turns them into the smallest win-rate difference a design (seeds × prompts × eval
seeds) detects with 80% power at α = 0.05.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from bench.registry import BenchError

ALPHA = 0.05          # the level of every test; the CI level is 1 - ALPHA unless a caller asks otherwise


# ----------------------------------------------------------------------------- per-image values

def outcomes(a, b, tie_tol: float, higher_is_better: bool = True) -> np.ndarray:
    """Per pair: 1 if A beats B, 0.5 within tie_tol, 0 otherwise."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    d = (a - b) if higher_is_better else (b - a)
    return np.where(np.abs(d) <= tie_tol, 0.5, (d > 0).astype(float))


def flips(model, base, positive: bool) -> np.ndarray:
    """Per image, the paired change of one binary attribute against the base image of the same
    prompt and seed: +1 fixed (a positive attribute gained or a negative one lost), −1 broken (the
    reverse), 0 unchanged."""
    m, b = np.asarray(model, bool), np.asarray(base, bool)
    gained, lost = (m & ~b).astype(float), (~m & b).astype(float)
    return gained - lost if positive else lost - gained


# ----------------------------------------------------------------------------- cells

@dataclass
class Cells:
    """Per-image values averaged into training seed × prompt cells."""
    mean: np.ndarray          # S x P cell means
    seeds: list               # training seeds (rows)
    prompts: list             # prompt ids (columns)
    n_eval: float             # values per cell (eval seeds), averaged over cells
    within: float             # pooled variance of single values inside a cell (eval-seed noise); nan if n_eval == 1

    @property
    def shape(self) -> tuple[int, int]:
        return self.mean.shape


def cells(values, prompt_ids, train_seeds=None) -> Cells:
    """Average per-image `values` into (training seed, prompt) cells. `train_seeds` None: one seed.
    Every seed must hold every prompt (pooled runs share one eval set); otherwise one line says which."""
    v = np.asarray(values, float)
    pid = np.asarray(prompt_ids)
    sd = np.zeros(len(v), int) if train_seeds is None else np.asarray(train_seeds)
    if not (len(v) == len(pid) == len(sd)):
        raise ValueError("values, prompt_ids and train_seeds must be of equal length")
    if len(v) == 0:
        raise BenchError("no paired samples to compare; the eval prompt set is empty")
    si, seeds = pd.factorize(sd, sort=True)
    pi, prompts = pd.factorize(pid, sort=True)
    s, p = len(seeds), len(prompts)
    flat = si * p + pi
    n = np.bincount(flat, minlength=s * p).astype(float)
    if (n == 0).any():
        k = int(np.argmax(n == 0))
        raise BenchError(f"training seed {seeds[k // p]} has no value for prompt {str(prompts[k % p])!r}; runs "
                         "pooled into one estimate must be evaluated on the same prompts")
    total = np.bincount(flat, v, minlength=s * p)
    mean = total / n
    ss = np.bincount(flat, (v - mean[flat]) ** 2, minlength=s * p)     # within-cell sums of squares
    dof = float(np.sum(n - 1))
    within = float(ss.sum() / dof) if dof > 0 else float("nan")
    return Cells(mean.reshape(s, p), seeds.tolist(), prompts.tolist(), float(n.mean()), within)


def _mean_squares(m: np.ndarray) -> tuple[float, float, float]:
    """Two-way ANOVA without replication on an S x P matrix (S >= 2, P >= 2): MS_seed, MS_prompt, MS_cell."""
    s, p = m.shape
    g = m.mean()
    a, b = m.mean(1) - g, m.mean(0) - g
    e = m - m.mean(1, keepdims=True) - m.mean(0, keepdims=True) + g
    return (p * float(a @ a) / (s - 1), s * float(b @ b) / (p - 1), float((e * e).sum()) / ((s - 1) * (p - 1)))


@dataclass
class Components:
    """Variance components of a cell matrix (win-rate units squared). `seed` is nan with one seed
    (a single run cannot show how runs differ); `eval` is the variance of one image's value within a
    cell, `cell` the seed x prompt interaction net of eval-seed noise."""
    seed: float
    prompt: float
    cell: float
    eval: float
    n_seeds: int
    n_prompts: int
    n_eval: float


def components(c: Cells) -> Components:
    """Moment (ANOVA) estimates, each truncated at zero."""
    s, p = c.shape
    within = c.within if np.isfinite(c.within) else 0.0
    if s >= 2 and p >= 2:
        msa, msb, mse = _mean_squares(c.mean)
        seed, prompt, resid = max(0.0, (msa - mse) / p), max(0.0, (msb - mse) / s), mse
    else:
        row = c.mean[0] if s == 1 else c.mean[:, 0]
        seed = float("nan")
        resid = within / c.n_eval            # with one seed, prompt and interaction cannot be told apart
        prompt = max(0.0, float(np.var(row, ddof=1)) - resid) if len(row) > 1 else 0.0
    return Components(seed, prompt, max(0.0, resid - within / c.n_eval), within, s, p, c.n_eval)


# ----------------------------------------------------------------------------- the estimate

@dataclass
class Estimate:
    value: float
    ci_low: float
    ci_high: float
    p: float                  # two-sided test of value == null (nan when no null was given)
    null: float | None
    se: float
    df: float
    n_seeds: int
    n_prompts: int
    per_seed: list            # each training seed's own estimate (mean over prompts)
    seed_sd: float            # spread of the per-seed estimates (sd, ddof 1; nan with one seed)
    interval: str             # how the CI was made

    @property
    def seed_aware(self) -> bool:
        """True when the interval covers training runs as well as prompts (>= 2 seeds)."""
        return self.n_seeds >= 2

    @property
    def significant(self) -> bool:
        """A claim about a method: p < ALPHA over >= 2 training seeds. One seed never is."""
        return self.seed_aware and np.isfinite(self.p) and self.p < ALPHA


def t_variance(m: np.ndarray) -> tuple[float, float]:
    """(variance of the mean of M, its degrees of freedom) under the crossed random-effects model;
    one row: the one-sample variance of the P column means, df P - 1."""
    s, p = m.shape
    if s == 1 or p == 1:
        x = m.reshape(-1)
        return (float(np.var(x, ddof=1)) / len(x) if len(x) > 1 else 0.0), float(len(x) - 1)
    msa, msb, mse = _mean_squares(m)
    k = 1.0 / (s * p)
    v = k * (msa + msb - mse)
    # The unbiased combination can come out below the residual-only variance when the seed and prompt
    # mean squares are small by chance; it is floored there (a variance is never below its noise part).
    if v < k * mse:
        return k * mse, float((s - 1) * (p - 1))
    den = (k * msa) ** 2 / (s - 1) + (k * msb) ** 2 / (p - 1) + (k * mse) ** 2 / ((s - 1) * (p - 1))
    return v, (v * v / den if den > 0 else float("inf"))


def estimate(m, null: float | None = 0.5, ci: float = 1 - ALPHA, interval: str = "t",
             n_bootstrap: int = 10000, seed: int = 0, bounds: tuple[float, float] | None = None) -> Estimate:
    """The mean of a cell matrix (or a Cells) with its CI and a two-sided test against `null`.
    interval: "t" (default; see the module docstring) or "bootstrap" (two-level percentile
    bootstrap, p from the same draws). bounds: the range the quantity cannot leave (a win rate:
    (0, 1)); the CI is clipped to it (the test is not: clipping cannot move an interval across a
    null value that lies inside the bounds)."""
    m = m.mean if isinstance(m, Cells) else np.atleast_2d(np.asarray(m, float))
    s, p = m.shape
    value = float(m.mean())
    per_seed = [float(x) for x in m.mean(1)]
    seed_sd = float(np.std(per_seed, ddof=1)) if s > 1 else float("nan")
    var, df = t_variance(m)
    se = math.sqrt(var)
    a = (1 - ci) / 2
    if interval == "t":
        if se > 0 and df > 0:
            h = float(sps.t.ppf(1 - a, df)) * se
            pv = float(2 * sps.t.sf(abs(value - null) / se, df)) if null is not None else float("nan")
        else:        # every cell equal: no spread to test against
            h, pv = 0.0, (float(value == null) if null is not None else float("nan"))
        lo, hi = value - h, value + h
        kind = f"t, {'seeds x prompts' if s > 1 else 'prompts, one seed'}"
    elif interval == "bootstrap":
        draws = two_level_bootstrap(m, n_bootstrap, seed)
        lo, hi = float(np.quantile(draws, a)), float(np.quantile(draws, 1 - a))
        pv = (float(min(1.0, 2 * min((draws <= null).mean(), (draws >= null).mean())))
              if null is not None else float("nan"))
        kind = f"bootstrap, {'seeds then prompts' if s > 1 else 'prompts, one seed'}"
    else:
        raise BenchError(f"unknown interval {interval!r}; valid: t, bootstrap")
    if bounds is not None:
        lo, hi = max(lo, float(bounds[0])), min(hi, float(bounds[1]))
    return Estimate(value, lo, hi, pv, null, se, df, s, p, per_seed, seed_sd, kind)


def two_level_bootstrap(m, n_bootstrap: int = 10000, seed: int = 0) -> np.ndarray:
    """Draws of the mean of M: resample training seeds, then prompts; the prompt draw is shared by
    the drawn seeds (prompts are crossed with seeds: every seed saw the same prompts). One seed: the
    prompt-level bootstrap."""
    m = m.mean if isinstance(m, Cells) else np.atleast_2d(np.asarray(m, float))
    s, p = m.shape
    rng = np.random.default_rng(seed)
    out = np.empty(n_bootstrap)
    for lo in range(0, n_bootstrap, 1000):            # chunks bound the memory of the index arrays
        n = min(1000, n_bootstrap - lo)
        si = rng.integers(0, s, size=(n, s))
        pi = rng.integers(0, p, size=(n, p))
        rows = m[si]                                   # n x s x p
        out[lo:lo + n] = np.take_along_axis(rows, np.broadcast_to(pi[:, None, :], rows.shape), 2).mean((1, 2))
    return out


def combine(estimates: list[Estimate], null: float | None = 0.0, ci: float = 1 - ALPHA) -> Estimate:
    """The equal-weight mean of independent estimates (e.g. a gain averaged over backbones): variances
    add, degrees of freedom by Welch-Satterthwaite."""
    k = len(estimates)
    if not k:
        raise BenchError("nothing to combine")
    value = float(np.mean([e.value for e in estimates]))
    parts = [(e.se / k) ** 2 for e in estimates]
    var = float(sum(parts))
    den = sum(v * v / e.df for v, e in zip(parts, estimates) if e.df > 0 and v > 0)
    df = var * var / den if den > 0 else float("inf")
    se = math.sqrt(var)
    h = float(sps.t.ppf(1 - (1 - ci) / 2, df)) * se if se > 0 else 0.0
    pv = float(2 * sps.t.sf(abs(value - null) / se, df)) if (null is not None and se > 0) else float("nan")
    return Estimate(value, value - h, value + h, pv, null, se, df, min(e.n_seeds for e in estimates),
                    sum(e.n_prompts for e in estimates), [], float("nan"), f"t, mean of {k} independent estimates")


# ----------------------------------------------------------------------------- comparisons

def win_rate(a, b, prompt_ids, tie_tol: float = 0.0, higher_is_better: bool = True, train_seeds=None,
             ci: float = 1 - ALPHA) -> dict:
    """Paired win rate of A over B (images paired by training seed, prompt and eval seed): the
    estimate vs 0.5 with its CI and test, W/T/L counts and the per-seed estimates."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or a.ndim != 1 or len(a) != len(prompt_ids):
        raise ValueError("a, b and prompt_ids must be 1-D and of equal length (paired samples)")
    if len(a) == 0:
        raise BenchError("no paired samples to compare; the eval prompt set is empty")
    o = outcomes(a, b, tie_tol, higher_is_better)
    est = estimate(cells(o, prompt_ids, train_seeds), null=0.5, ci=ci, bounds=(0.0, 1.0))
    wins, ties = int((o == 1).sum()), int((o == 0.5).sum())
    return {"win_rate": est.value, "ci_low": est.ci_low, "ci_high": est.ci_high, "p": est.p,
            "wins": wins, "ties": ties, "losses": len(o) - wins - ties, "n_prompts": est.n_prompts,
            "n_pairs": int(len(o)), "n_seeds": est.n_seeds, "per_seed": est.per_seed, "seed_sd": est.seed_sd,
            "se": est.se, "df": est.df, "interval": est.interval, "significant": est.significant}


def mean_estimate(df: pd.DataFrame, col: str, null: float | None = None) -> Estimate:
    """Mean of a per-image column (cells: training seed x prompt) with its CI."""
    seeds = df["train_seed"] if "train_seed" in df else None
    return estimate(cells(df[col], df["prompt_id"], seeds), null=null)


def attribute_flips(model, base, positive: bool, prompt_ids, train_seeds=None) -> tuple[int, int, float]:
    """Paired change of one binary attribute against the base image of the same prompt and seed:
    (fixed, broken, p). Fixed: bad on the base image, good on the model's (a positive attribute
    gained, a negative one lost); broken: the reverse. p: the clustered equivalent of McNemar's test,
    i.e. the test of this module on the per-image change (+1 fixed, -1 broken, 0; `flips`) averaged
    in (training seed, prompt) cells, so that images of one prompt or one trained model do not count
    as independent evidence (1.0 when nothing changed)."""
    fl = flips(model, base, positive)
    fixed, broken = int((fl > 0).sum()), int((fl < 0).sum())
    if not fixed + broken:
        return fixed, broken, 1.0
    return fixed, broken, estimate(cells(fl, prompt_ids, train_seeds), null=0.0).p


# ----------------------------------------------------------------------------- power

def design_variance(c: Components, n_seeds: int, n_prompts: int, n_eval: float) -> float:
    """Variance of the estimate for a design of n_seeds x n_prompts x n_eval images, from the
    components measured on another design (a missing seed component counts as zero)."""
    seed = 0.0 if not np.isfinite(c.seed) else c.seed
    return seed / n_seeds + c.prompt / n_prompts + (c.cell + c.eval / n_eval) / (n_seeds * n_prompts)


def mde(c: Components, n_seeds: int, n_prompts: int, n_eval: float, alpha: float = ALPHA,
        power: float = 0.8) -> float:
    """Minimum detectable difference (win-rate units) of a two-sided level-alpha test with the given
    power: (z_{1-alpha/2} + z_power) x the design's standard error (normal approximation)."""
    z = float(sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power))
    return z * math.sqrt(design_variance(c, n_seeds, n_prompts, n_eval))


def pool_components(cs: list[Components]) -> Components:
    """The mean of several configurations' components (e.g. every multi-seed config of a backbone)."""
    if not cs:
        raise BenchError("no variance components to pool")

    def avg(name):
        xs = [getattr(c, name) for c in cs if np.isfinite(getattr(c, name))]
        return float(np.mean(xs)) if xs else float("nan")
    return Components(avg("seed"), avg("prompt"), avg("cell"), avg("eval"), min(c.n_seeds for c in cs),
                      min(c.n_prompts for c in cs), float(np.mean([c.n_eval for c in cs])))


# ----------------------------------------------------------------------------- calibration

def simulate(rng: np.random.Generator, n_seeds: int, n_prompts: int, n_eval: int, win: float,
             sd_seed: float, sd_prompt: float, sd_cell: float, tie: float = 0.65):
    """Synthetic vs-base outcomes with a training-seed effect, a prompt effect and a seed x prompt
    effect, each on the win-rate scale: a pair ties with probability `tie`, else A wins with
    probability clip(0.5 + (win - 0.5 + a_seed + b_prompt + c_cell) / (1 - tie), 0, 1), so that
    without clipping a cell's expected outcome is win + a + b + c. Returns (values, prompt_ids,
    train_seeds), one value per (seed, prompt, eval seed)."""
    a = rng.normal(0, sd_seed, n_seeds)[:, None]
    b = rng.normal(0, sd_prompt, n_prompts)[None, :]
    c = rng.normal(0, sd_cell, (n_seeds, n_prompts))
    q = np.clip(0.5 + (win - 0.5 + a + b + c) / (1 - tie), 0, 1)[..., None]
    shape = (n_seeds, n_prompts, n_eval)
    v = np.where(rng.random(shape) < tie, 0.5, (rng.random(shape) < q).astype(float))
    seeds = np.broadcast_to(np.arange(n_seeds)[:, None, None], shape)
    prompts = np.broadcast_to(np.arange(n_prompts)[None, :, None], shape)
    return v.reshape(-1), prompts.reshape(-1), seeds.reshape(-1)


def simulated_truth(win: float, sd_seed: float, sd_prompt: float, sd_cell: float, tie: float = 0.65) -> float:
    """The expected outcome of `simulate` over seeds, prompts and images: tie/2 + (1 - tie) E[clip(X, 0, 1)]
    with X ~ N(0.5 + (win - 0.5) / (1 - tie), (sd / (1 - tie))²), sd² the sum of the effects'
    variances (the mean of a normal clipped to [0, 1] in closed form)."""
    m = 0.5 + (win - 0.5) / (1 - tie)
    sd = math.sqrt(sd_seed ** 2 + sd_prompt ** 2 + sd_cell ** 2) / (1 - tie)
    if sd == 0:
        return tie / 2 + (1 - tie) * min(1.0, max(0.0, m))
    lo, hi = (0 - m) / sd, (1 - m) / sd
    inside = m * (sps.norm.cdf(hi) - sps.norm.cdf(lo)) + sd * (sps.norm.pdf(lo) - sps.norm.pdf(hi))
    return float(tie / 2 + (1 - tie) * (inside + sps.norm.sf(hi)))
