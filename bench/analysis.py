"""Analysis: every table, figure, image grid and the HTML report as a pure function of result files.

    python -m bench report [RESULTS_DIR] [--out DIR] [--prompts ID,ID,...]
    python -m bench paper NAME|SPEC.yaml [--out DIR] [overrides...]

`report` reads `<results>/runs/*/{result.json, scores.parquet, samples.png}` and nothing else, and
writes into OUT (default: RESULTS_DIR):

    leaderboard.csv                 bench.results.leaderboard: one row per (backbone, method, config)
    tables/winrates.{md,tex}        method x scorer, win rate vs base [95% CI] in every cell; bold only
                                    where the best row's CI lies above every other row's CI
    tables/ablation-*.{md,tex}      one per (backbone, method) whose runs differ in a config key
    tables/seeds-*.{md,tex}         per-seed rows where a config ran with several seeds
    tables/attributes.{md,tex}      shapes-world attribute rates, negative-attribute count [CI], and
                                    per attribute the images fixed / broken vs base (McNemar p)
    figures/*.{png,pdf}             win-rate bars, attribute heatmap, sensitivity curves, training curves
    grids/grid-*.{png,pdf}          base and each method side by side, same prompt and eval seed
    report.html                     all of the above on one self-contained page (images embedded)

A missing or corrupt result file is named in one warning line and its job left out; a step that
has nothing to show (no training history, no samples.png) is skipped with one note line.

`paper` reads a spec from paper/NAME.yaml (see paper/README.md): it computes the job directory of
every job the spec needs, runs the missing ones through `python -m bench run` (the same Hydra
multirun path; finished jobs are skipped), then regenerates the spec's table beside the paper's
reported numbers into paper/NAME/.
"""
from __future__ import annotations

import base64
import dataclasses
import html
import itertools
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bench.evaluate import outcomes
from bench.registry import BenchError
from bench.results import (SAMPLE_INDEX, SAMPLE_SHEET, Run, flat_identity, leaderboard, load_runs,
                           short_keys, varying_keys, write_leaderboard)

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent.parent
PAPER_DIR = ROOT / "paper"


# ----------------------------------------------------------------------------- tables

@dataclass
class Cell:
    """An estimate with its interval; `bold` marks a best that its CI separates from the rest."""
    value: float
    low: float | None = None
    high: float | None = None
    bold: bool = False
    digits: int = 3
    signed: bool = False

    def text(self) -> tuple[str, str]:
        f = f"{{:{'+' if self.signed else ''}.{self.digits}f}}"
        if self.value is None or not np.isfinite(self.value):
            return "n/a", ""
        ci = "" if self.low is None else f" [{f.format(self.low)}, {f.format(self.high)}]"
        return f.format(self.value), ci


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list]          # str or Cell
    note: str = ""

    def markdown(self) -> str:
        def cell(c):
            if isinstance(c, Cell):
                v, ci = c.text()
                return (f"**{v}**" if c.bold else v) + ci
            return str(c).replace("|", "\\|")
        lines = [f"### {self.title}", "", "| " + " | ".join(self.header) + " |",
                 "|" + "|".join("---" for _ in self.header) + "|"]
        lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in self.rows]
        if self.note:
            lines += ["", self.note]
        return "\n".join(lines) + "\n"

    def latex(self) -> str:
        def cell(c):
            if isinstance(c, Cell):
                v, ci = c.text()
                return (f"\\textbf{{{v}}}" if c.bold else v) + _tex(ci)
            return _tex(str(c))
        lines = ["\\begin{table}[ht]", "\\centering", f"\\caption{{{_tex(self.title)}}}",
                 "\\begin{tabular}{l" + "c" * (len(self.header) - 1) + "}", "\\toprule",
                 " & ".join(_tex(h) for h in self.header) + " \\\\", "\\midrule"]
        lines += [" & ".join(cell(c) for c in r) + " \\\\" for r in self.rows]
        lines += ["\\bottomrule", "\\end{tabular}"]
        if self.note:
            lines.append(f"\\par\\smallskip\\footnotesize {_tex(self.note)}")
        lines.append("\\end{table}")
        return "\n".join(lines) + "\n"

    def html(self) -> str:
        def cell(c):
            if isinstance(c, Cell):
                v, ci = c.text()
                v = html.escape(v)
                return (f"<b>{v}</b>" if c.bold else v) + f"<span class=ci>{html.escape(ci)}</span>"
            return html.escape(str(c))
        out = [f"<h3>{html.escape(self.title)}</h3>", "<table><thead><tr>"]
        out += [f"<th>{html.escape(h)}</th>" for h in self.header]
        out.append("</tr></thead><tbody>")
        for r in self.rows:
            out.append("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in r) + "</tr>")
        out.append("</tbody></table>")
        if self.note:
            out.append(f"<p class=note>{html.escape(self.note)}</p>")
        return "\n".join(out)


_TEX = {"\\": "\\textbackslash{}", "&": "\\&", "%": "\\%", "$": "\\$", "#": "\\#", "_": "\\_",
        "{": "\\{", "}": "\\}", "~": "\\textasciitilde{}", "^": "\\^{}", "−": "$-$", "Δ": "$\\Delta$",
        "≈": "$\\approx$", "×": "$\\times$"}


def _tex(s: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in s)


def best_separated(cells: list[Cell]) -> int | None:
    """Index of the highest estimate if its CI lies strictly above every other row's CI."""
    ok = [i for i, c in enumerate(cells) if c.value is not None and np.isfinite(c.value)]
    if len(ok) < 2 or any(cells[i].low is None or cells[i].high is None for i in ok):
        return None
    best = max(ok, key=lambda i: cells[i].value)
    if all(cells[best].low > cells[j].high for j in ok if j != best):
        return best
    return None


def _mark_best(rows: list[list], first_col: int) -> None:
    """Bold the separated best of each Cell column (columns from first_col on)."""
    if not rows:
        return
    for j in range(first_col, len(rows[0])):
        col = [r[j] for r in rows]
        if all(isinstance(c, Cell) for c in col):
            i = best_separated(col)
            if i is not None:
                col[i].bold = True


def scorers_of(runs: list[Run]) -> list[str]:
    out = []
    for r in runs:
        for n in r.result["scorers"]:
            if n not in out:
                out.append(n)
    return out


def _wr_cell(row: pd.Series, name: str) -> Cell:
    if f"{name}_win_rate" not in row or pd.isna(row[f"{name}_win_rate"]):
        return Cell(float("nan"))
    return Cell(float(row[f"{name}_win_rate"]), float(row[f"{name}_ci_low"]), float(row[f"{name}_ci_high"]))


def _ci_note(runs: list[Run]) -> str:
    ev = runs[0].result["identity"]["eval"] if runs else {}
    return (f"Win rate vs base: 1 per pair won, 0.5 within the scorer's tie tolerance; averaged over seeds "
            f"within a prompt, then over prompts. [..] = {ev.get('ci', 0.95):.0%} prompt-level bootstrap CI "
            f"({ev.get('n_bootstrap', '?')} resamples, seed {ev.get('bootstrap_seed', '?')}). Bold: best in "
            f"its column with a CI above every other row's.")


def winrate_tables(lb: pd.DataFrame, runs: list[Run]) -> list[Table]:
    """Method x scorer per backbone: win rate vs base [CI]; the base row itself is left out."""
    scorers = scorers_of(runs)
    tables = []
    for bb, g in lb[lb.method != "base"].groupby("backbone", sort=True):
        rows = [[r.label] + [_wr_cell(r, n) for n in scorers] + [Cell(r.mean_win_rate), Cell(r.helm_mean_win_rate)]
                for _, r in g.iterrows()]
        _mark_best(rows, 1)      # the two summary columns carry no CI, so nothing is marked in them
        tables.append(Table(f"{bb}: win rate vs base", ["method"] + scorers + ["mean", "HELM mean win rate"],
                            rows, _ci_note(runs)))
    return tables


def _groups(runs: list[Run]) -> dict[tuple[str, str], list[Run]]:
    out: dict[tuple[str, str], list[Run]] = {}
    for r in runs:
        out.setdefault((r.result["backbone"], r.result["method"]), []).append(r)
    return out


def swept_axes(runs: list[Run]) -> dict[tuple[str, str], list[str]]:
    """(backbone, method) -> config keys that vary between its runs (seeds excluded)."""
    return {k: varying_keys([flat_identity(r.result) for r in rs]) for k, rs in _groups(runs).items()}


def ablation_tables(lb: pd.DataFrame, runs: list[Run]) -> list[tuple[str, Table]]:
    """One table per (backbone, method) with a swept config axis (beta, refresh interval, tie rule,
    LoRA vs full, caption dropout, ...): one row per config, seeds pooled; and one per-seed table
    wherever a config ran with several seeds."""
    scorers, out = scorers_of(runs), []
    by_dir = {r.path.name: r for r in runs}
    for (bb, method), rs in sorted(_groups(runs).items()):
        if method == "base":
            continue
        g = lb[(lb.backbone == bb) & (lb.method == method)]
        axes = varying_keys([flat_identity(r.result) for r in rs])
        if axes:
            names = short_keys(axes)
            rows = []
            for _, row in g.iterrows():
                ident = flat_identity(by_dir[row.job_dirs.split(";")[0]].result)
                rows.append([str(ident.get(a)) for a in axes] + [row.seeds] + [_wr_cell(row, n) for n in scorers]
                            + [Cell(row.mean_win_rate)])
            rows.sort(key=lambda r: [_sort_key(v) for v in r[:len(axes)]])
            _mark_best(rows, len(axes) + 1)
            out.append((f"ablation-{bb}-{method}",
                        Table(f"{bb} / {method}: ablation over {', '.join(names[a] for a in axes)}",
                              [names[a] for a in axes] + ["seeds"] + scorers + ["mean"], rows, _ci_note(runs))))
        multi = g[g.n_jobs > 1]
        if len(multi):
            rows = []
            for _, row in multi.iterrows():
                per_seed = []
                for d in row.job_dirs.split(";"):
                    res = by_dir[d].result
                    cells = []
                    for n in scorers:
                        vs = res["scorers"].get(n, {}).get("vs_base")
                        cells.append(Cell(vs["win_rate"], vs["ci_low"], vs["ci_high"]) if vs else Cell(float("nan")))
                    per_seed.append(cells)
                    rows.append([row.label, str(res["identity"]["seed"])] + cells)
                rows.append([row.label, "pooled"] + [_wr_cell(row, n) for n in scorers])
                sd = [np.std([c[i].value for c in per_seed], ddof=1) for i in range(len(scorers))]
                rows.append([row.label, "between-seed sd"] + [Cell(v) for v in sd])
            out.append((f"seeds-{bb}-{method}",
                        Table(f"{bb} / {method}: seeds", ["config", "seed"] + scorers, rows,
                              "Per-seed rows: that job's own win rate vs base and CI; pooled: all seeds' pairs "
                              "averaged within prompt; sd: spread of the per-seed win rates.")))
    return out


def _sort_key(v: str):
    try:
        return (0, float(v), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(v))


def prompt_bootstrap(values, prompt_ids, n_bootstrap: int, seed: int, ci: float) -> tuple[float, float, float, np.ndarray]:
    """Mean over prompts of the per-prompt mean, with a percentile prompt-level bootstrap CI
    (same resampling scheme as bench.evaluate.win_rate); also returns the bootstrap draws."""
    per_prompt = pd.Series(np.asarray(values, float)).groupby(np.asarray(prompt_ids)).mean()
    v = per_prompt.to_numpy()
    rng = np.random.default_rng(seed)
    boots = v[rng.integers(0, len(v), size=(n_bootstrap, len(v)))].mean(axis=1)
    a = (1 - ci) / 2
    return float(v.mean()), float(np.quantile(boots, a)), float(np.quantile(boots, 1 - a)), boots


def attribute_frame(lb: pd.DataFrame, runs: list[Run]) -> pd.DataFrame:
    """Per backbone: the base model and every config's attribute rates (pooled over seeds)."""
    from bench.world import ATTRIBUTES
    by_dir = {r.path.name: r for r in runs}
    rows = []
    for bb, g in lb.groupby("backbone", sort=True):
        base_done = False
        for _, row in g.iterrows():
            df = pd.concat([by_dir[d].scores for d in row.job_dirs.split(";")], ignore_index=True)
            attrs = [a for a in ATTRIBUTES if a in df and f"base_{a}" in df]
            if not attrs:
                continue
            if not base_done:
                rows.append({"backbone": bb, "label": "base (reference)", "method": "base",
                             **{a: float(df[f"base_{a}"].mean()) for a in attrs},
                             "_df": df, "_prefix": "base_"})
                base_done = True
            if row.method == "base":
                continue
            rows.append({"backbone": bb, "label": row.label, "method": row.method,
                         **{a: float(df[a].mean()) for a in attrs}, "_df": df, "_prefix": ""})
    return pd.DataFrame(rows)


def attribute_tables(lb: pd.DataFrame, runs: list[Run]) -> list[Table]:
    from bench.world import NEGATIVE_ATTRIBUTES, POSITIVE_ATTRIBUTES
    af = attribute_frame(lb, runs)
    if af.empty:
        return []
    ev = runs[0].result["identity"]["eval"]
    tables = []
    for bb, g in af.groupby("backbone", sort=True):
        pos = [a for a in POSITIVE_ATTRIBUTES if a in g]
        neg = [a for a in NEGATIVE_ATTRIBUTES if a in g]
        rows = []
        for r in g.to_dict("records"):
            df, p = r["_df"], r["_prefix"]
            extra = []
            if f"{p}n_negative" in df:
                m, lo, hi, _ = prompt_bootstrap(df[f"{p}n_negative"], df["prompt_id"], ev["n_bootstrap"],
                                                ev["bootstrap_seed"], ev["ci"])
                extra.append(Cell(m, lo, hi, digits=2))
            if f"{p}fully_correct" in df:
                extra.append(Cell(float(df[f"{p}fully_correct"].mean())))
            rows.append([r["label"]] + [Cell(r[a], digits=2) for a in pos + neg] + extra)
        header = (["model"] + [f"+{a}" for a in pos] + [f"−{a}" for a in neg]
                  + (["negatives / image"] if len(rows[0]) > 1 + len(pos) + len(neg) else [])
                  + (["fully correct"] if len(rows[0]) > 2 + len(pos) + len(neg) else []))
        tables.append(Table(f"{bb}: shapes-world attributes (rate per image)", header, rows,
                            "+: positive attribute (higher is better); −: negative attribute (lower is better). "
                            "Negatives / image: mean count of negative attributes with its prompt-level "
                            "bootstrap CI."))
        tables.append(attribute_change_table(bb, g, pos, neg))
    return tables


def attribute_flips(model: np.ndarray, base: np.ndarray, positive: bool) -> tuple[int, int, float]:
    """Paired change of one binary attribute against the base image of the same prompt and seed:
    (fixed, broken, exact McNemar p). Fixed: bad on the base image, good on the model's (a positive
    attribute gained, a negative one lost); broken: the reverse. The p-value is the two-sided
    binomial test of fixed against fixed + broken at 1/2 (McNemar's exact test)."""
    from scipy.stats import binomtest
    m, b = np.asarray(model, bool), np.asarray(base, bool)
    gained, lost = int((m & ~b).sum()), int((~m & b).sum())
    fixed, broken = (gained, lost) if positive else (lost, gained)
    return fixed, broken, (float(binomtest(fixed, fixed + broken, 0.5).pvalue) if fixed + broken else 1.0)


def attribute_change_table(bb: str, g: pd.DataFrame, pos: list[str], neg: list[str]) -> Table:
    """Per config and attribute: images fixed / broken vs the base image of the same prompt and
    seed, with McNemar's exact p. Shows whether alignment moved an attribute one way or only
    perturbed samples both ways (rates alone cannot tell the two apart)."""
    rows = []
    for r in g.to_dict("records"):
        if r["method"] == "base":
            continue
        df, cells, tot_f, tot_b = r["_df"], [], 0, 0
        for a in pos + neg:
            f, b, p = attribute_flips(df[a], df[f"base_{a}"], a in pos)
            tot_f, tot_b = tot_f + f, tot_b + b
            cells.append(f"{f}/{b}" + (f" (p={p:.2g})" if p < 0.05 else ""))
        rows.append([r["label"]] + cells + [f"{tot_f}/{tot_b}", f"{len(df)}"])
    header = ["model"] + [f"+{a}" for a in pos] + [f"−{a}" for a in neg] + ["all", "images"]
    return Table(f"{bb}: attribute changes vs base (fixed/broken images, paired by prompt and seed)",
                 header, rows,
                 "fixed/broken: images whose attribute is bad in the base sample and good in the model's from the "
                 "same prompt and seed, and the reverse; p: McNemar's exact test (two-sided binomial on "
                 "fixed vs broken), shown where below 0.05, uncorrected for the number of cells.")


# ----------------------------------------------------------------------------- figures

def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns
    sns.set_theme(style="whitegrid", context="paper")
    return plt, sns


def _save(fig, stem: Path) -> list[Path]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for ext in ("png", "pdf"):
        p = stem.with_suffix(f".{ext}")
        tmp = p.with_name(f"{p.stem}.tmp{os.getpid()}.{ext}")
        # no creation date in PDFs, so a regenerated report leaves committed files byte-identical
        meta = {"CreationDate": None} if ext == "pdf" else None
        fig.savefig(tmp, dpi=130, bbox_inches="tight", metadata=meta)
        os.replace(tmp, p)
        out.append(p)
    import matplotlib.pyplot as plt
    plt.close(fig)
    return out


def fig_winrate_bars(lb: pd.DataFrame, scorers: list[str], stem: Path) -> list[Path]:
    """Grouped bars: win rate vs base per scorer (x) and method (hue), 95% CI as error bars."""
    plt, sns = _plt()
    d = lb[lb.method != "base"]
    if d.empty:
        return []
    backbones = sorted(d.backbone.unique())
    fig, axes = plt.subplots(1, len(backbones), figsize=(max(5.0, 1.3 * len(scorers) * 1.6) * len(backbones), 3.6),
                             squeeze=False, sharey=True)
    for ax, bb in zip(axes[0], backbones):
        g = d[d.backbone == bb]
        long = pd.DataFrame([{"scorer": n, "method": r["label"], "win_rate": r[f"{n}_win_rate"],
                              "lo": r[f"{n}_ci_low"], "hi": r[f"{n}_ci_high"]}
                             for _, r in g.iterrows() for n in scorers if f"{n}_win_rate" in r])
        hue_order = list(dict.fromkeys(long.method))
        sns.barplot(long, x="scorer", y="win_rate", hue="method", order=scorers, hue_order=hue_order,
                    errorbar=None, ax=ax)
        for container, m in zip(ax.containers, hue_order):
            sub = long[long.method == m].set_index("scorer").reindex(scorers)
            xs = [b.get_x() + b.get_width() / 2 for b in container]
            ax.errorbar(xs, sub.win_rate, yerr=[sub.win_rate - sub.lo, sub.hi - sub.win_rate],
                        fmt="none", ecolor="black", capsize=3, lw=1)
        ax.axhline(0.5, ls="--", color="grey", lw=1)
        ax.set_ylim(0, 1)
        ax.set_title(f"{bb}: win rate vs base (95% CI)")
        ax.set_xlabel("scorer")
        ax.set_ylabel("win rate vs base")
        ax.legend(fontsize=7, loc="lower right")
    return _save(fig, stem)


def fig_attribute_heatmap(af: pd.DataFrame, stem: Path) -> list[Path]:
    """Method x attribute rates: positive attributes (higher is better) beside negative ones."""
    from bench.world import NEGATIVE_ATTRIBUTES, POSITIVE_ATTRIBUTES
    if af.empty:
        return []
    plt, sns = _plt()
    multi = af.backbone.nunique() > 1
    idx = [f"{b}: {l}" if multi else l for b, l in zip(af.backbone, af.label)]
    pos = [a for a in POSITIVE_ATTRIBUTES if a in af]
    neg = [a for a in NEGATIVE_ATTRIBUTES if a in af]
    panels = [(p, t, c) for p, t, c in ((pos, "positive attributes (higher is better)", "Greens"),
                                        (neg, "negative attributes (lower is better)", "Reds")) if p]
    fig, axes = plt.subplots(1, len(panels), figsize=(1.0 * (len(pos) + len(neg)) + 4, 0.45 * len(af) + 1.8),
                             squeeze=False)
    for ax, (cols, title, cmap) in zip(axes[0], panels):
        m = pd.DataFrame(af[cols].to_numpy(float), index=idx, columns=cols)
        sns.heatmap(m, annot=True, fmt=".2f", cmap=cmap, vmin=0, vmax=1, cbar=False, ax=ax,
                    annot_kws={"fontsize": 8})
        ax.set_title(title)
        ax.tick_params(axis="x", rotation=35)
        if ax is not axes[0][0]:
            ax.set_yticklabels([])
    return _save(fig, stem)


def fig_sensitivity(lb: pd.DataFrame, runs: list[Run], scorers: list[str], outdir: Path) -> list[Path]:
    """Win rate vs base against every swept numeric config key (beta, refresh interval, caption
    dropout, ...), one line per scorer (and per combination of the other swept keys), CI bars."""
    by_dir = {r.path.name: r for r in runs}
    files = []
    for (bb, method), axes_keys in sorted(swept_axes(runs).items()):
        if method == "base":
            continue
        g = lb[(lb.backbone == bb) & (lb.method == method)]
        idents = [flat_identity(by_dir[d.split(";")[0]].result) for d in g.job_dirs]
        for key in axes_keys:
            vals = [i.get(key) for i in idents]
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
                continue
            others = [k for k in axes_keys if k != key]
            names = short_keys(axes_keys)
            plt, sns = _plt()
            long = []
            for (_, r), ident in zip(g.iterrows(), idents):
                rest = ", ".join(f"{names[k]}={ident.get(k)}" for k in others)
                for n in scorers:
                    long.append({"x": float(ident[key]), "scorer": n + (f" ({rest})" if rest else ""),
                                 "y": r[f"{n}_win_rate"], "lo": r[f"{n}_ci_low"], "hi": r[f"{n}_ci_high"]})
            long = pd.DataFrame(long).sort_values("x")
            hues = list(dict.fromkeys(long.scorer))
            palette = dict(zip(hues, sns.color_palette(n_colors=len(hues))))
            fig, ax = plt.subplots(figsize=(5.5, 3.6))
            sns.lineplot(long, x="x", y="y", hue="scorer", hue_order=hues, palette=palette, marker="o", ax=ax,
                         errorbar=None)
            for s, sub in long.groupby("scorer"):
                ax.errorbar(sub.x, sub.y, yerr=[sub.y - sub.lo, sub.hi - sub.y], fmt="none", capsize=3,
                            lw=1, ecolor=palette.get(s, "black"))
            ax.axhline(0.5, ls="--", color="grey", lw=1)
            if long.x.min() > 0 and long.x.max() / long.x.min() >= 20:
                ax.set_xscale("log")
            ax.set_xlabel(names[key])
            ax.set_ylabel("win rate vs base")
            ax.set_title(f"{bb} / {method}: sensitivity to {names[key]} (95% CI)")
            ax.legend(fontsize=7)
            files += _save(fig, outdir / f"sensitivity-{bb}-{method}-{names[key].replace('.', '_')}")
    return files


TRAIN_METRICS = ("loss", "implicit_acc", "reward_margin")


def fig_training(lb: pd.DataFrame, runs: list[Run], stem: Path) -> list[Path]:
    """Training curves (loss, implicit accuracy, reward margin) from result.json's history, one
    line per job, coloured by config."""
    label_of = {d: r.label for _, r in lb.iterrows() for d in r.job_dirs.split(";")}
    rows = [{"label": label_of.get(r.path.name, r.result["method"]), "seed": r.seed,
             "backbone": r.result["backbone"], **h}
            for r in runs for h in r.result.get("train_history") or []]
    if not rows:
        return []
    d = pd.DataFrame(rows)
    metrics = [m for m in TRAIN_METRICS if m in d and d[m].notna().any()]
    if "step" not in d or not metrics:
        return []
    if d.backbone.nunique() > 1:
        d["label"] = d.backbone + ": " + d.label
    plt, sns = _plt()
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        sub = d[d[m].notna()]
        sns.lineplot(sub, x="step", y=m, hue="label", units="seed", estimator=None, ax=ax, lw=1.2)
        ax.set_title(m.replace("_", " "))
        ax.legend(fontsize=7)
    fig.suptitle("training curves (one line per seed)")
    return _save(fig, stem)


# ----------------------------------------------------------------------------- image grids

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
                cols.append((row.label, {k: v[1] for k, v in tiles.items()}))
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
        plt, _ = _plt()
        ncol = 1 + len(cols)
        fig, axes = plt.subplots(len(keys), ncol, figsize=(1.5 * ncol + 2.6, 1.5 * len(keys) + 0.4), squeeze=False)
        for i, k in enumerate(keys):
            for j, (title, tiles) in enumerate([("base", base_tiles)] + cols):
                ax = axes[i][j]
                ax.imshow(tiles[k], interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if i == 0:
                    ax.set_title(title, fontsize=8)
                if j == 0:
                    ax.set_ylabel(f"{texts.get(k, k[0])}\n(seed {k[1]})", rotation=0, ha="right",
                                  va="center", fontsize=7)
        fig.suptitle(f"{bb}: base and each method, same prompt and seed", fontsize=9)
        files += _save(fig, outdir / f"grid-{bb}")
    if not any_sheet:
        notes.append(f"image grids skipped: no job directory holds {SAMPLE_SHEET} "
                     "(results written before the runner saved sample sheets)")
    return files


# ----------------------------------------------------------------------------- report

@dataclass
class ReportOutput:
    out: Path
    files: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)   # missing / corrupt result files, one line each
    notes: list[str] = field(default_factory=list)      # steps skipped, one line each
    tables: dict[str, Table] = field(default_factory=dict)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def report(results_dir: Path, out: Path | None = None, prompts: list[str] | None = None) -> ReportOutput:
    """Every output of `python -m bench report` (see the module docstring)."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise BenchError(f"no results directory at {results_dir}; pass the directory that holds runs/")
    out = Path(out) if out is not None else results_dir
    rep = ReportOutput(out)
    runs = load_runs(results_dir, rep.problems)
    if not runs:
        raise BenchError(f"no readable result files under {results_dir}/runs"
                         + (f" ({len(rep.problems)} skipped)" if rep.problems else ""))
    lb = leaderboard(runs=runs)
    scorers = scorers_of(runs)
    rep.files.append(write_leaderboard(results_dir, out / "leaderboard.csv", runs=runs))

    wr = winrate_tables(lb, runs)
    if wr:
        rep.files.append(_write(out / "tables" / "winrates.md", "\n".join(t.markdown() for t in wr)))
        rep.files.append(_write(out / "tables" / "winrates.tex", "\n".join(t.latex() for t in wr)))
    tables: list[tuple[str, Table]] = [("winrates", t) for t in wr]
    abl = ablation_tables(lb, runs)
    for name, t in abl:
        rep.files.append(_write(out / "tables" / f"{name}.md", t.markdown()))
        rep.files.append(_write(out / "tables" / f"{name}.tex", t.latex()))
    if not abl:
        rep.notes.append("ablation tables skipped: no config key varies between runs of the same method, "
                         "and no config ran with several seeds")
    attr = attribute_tables(lb, runs)
    if attr:
        rep.files.append(_write(out / "tables" / "attributes.md", "\n".join(t.markdown() for t in attr)))
        rep.files.append(_write(out / "tables" / "attributes.tex", "\n".join(t.latex() for t in attr)))
    tables += abl + [("attributes", t) for t in attr]

    figs: list[tuple[str, list[Path]]] = []
    fdir = out / "figures"
    figs.append(("Win rate vs base per scorer", fig_winrate_bars(lb, scorers, fdir / "winrates")))
    figs.append(("Shapes-world attributes", fig_attribute_heatmap(attribute_frame(lb, runs), fdir / "attributes")))
    sens = fig_sensitivity(lb, runs, scorers, fdir)
    figs += [(f"Sensitivity: {p.stem.removeprefix('sensitivity-')}", [p, p.with_suffix('.pdf')])
             for p in sens if p.suffix == ".png"]
    if not sens:
        rep.notes.append("sensitivity curves skipped: no numeric config key is swept within a method")
    tr = fig_training(lb, runs, fdir / "training")
    figs.append(("Training curves", tr))
    if not tr:
        rep.notes.append("training curves skipped: no run has a training history")
    grids = image_grids(lb, runs, out / "grids", prompts=prompts, notes=rep.notes)
    figs += [(f"Image grid: {p.stem.removeprefix('grid-')}", [p, p.with_suffix('.pdf')])
             for p in grids if p.suffix == ".png"]
    for _, fs in figs:
        rep.files += fs
    for n in rep.notes:
        log.info("%s", n)
    rep.tables = {f"{n}:{i}": t for i, (n, t) in enumerate(tables)}
    rep.files.append(_write(out / "report.html", render_html(results_dir, lb, tables, figs, rep)))
    return rep


def render_html(results_dir: Path, lb: pd.DataFrame, tables: list[tuple[str, Table]],
                figs: list[tuple[str, list[Path]]], rep: ReportOutput) -> str:
    """One self-contained page: every image is a base64 data URI, no external resource."""
    scorers = [c.removesuffix("_win_rate") for c in lb.columns
               if c.endswith("_win_rate") and c not in ("mean_win_rate", "helm_mean_win_rate")]
    lb_rows = [[r["backbone"], r["label"], r["seeds"]]
               + [f"{r[f'{n}_win_rate']:.3f} [{r[f'{n}_ci_low']:.3f}, {r[f'{n}_ci_high']:.3f}] ({r[f'{n}_wtl']})"
                  for n in scorers]
               + [f"{r['mean_win_rate']:.3f}", "" if pd.isna(r["helm_mean_win_rate"]) else f"{r['helm_mean_win_rate']:.3f}",
                  f"{r['budget_steps']}×{r['budget_batch_size']}", f"{r['wall_s_mean']:.0f}",
                  str(r["git_sha"])[:10] + (" (dirty)" if r.get("git_dirty") else "")]
               for _, r in lb.iterrows()]
    lb_table = Table("Leaderboard", ["backbone", "config", "seeds"] + [f"{n} win rate [CI] (W/T/L)" for n in scorers]
                     + ["mean win rate", "HELM mean win rate", "steps×batch", "wall s / job", "git sha"], lb_rows,
                     "One row per (backbone, method, config), seeds pooled. HELM mean win rate: fraction of the "
                     "other rows of the same backbone beaten on each scorer's win rate, averaged over scorers.")
    parts = [f"<h1>diffpref-bench report</h1><p>Results: <code>{html.escape(str(results_dir))}</code> · "
             f"{int(lb.n_jobs.sum())} jobs in {len(lb)} rows · git {html.escape(', '.join(sorted({str(s)[:10] for s in lb.git_sha})))}</p>"]
    if rep.problems or rep.notes:
        parts.append("<div class=warn><b>Left out / skipped</b><ul>"
                     + "".join(f"<li>{html.escape(p)}</li>" for p in rep.problems + rep.notes) + "</ul></div>")
    parts.append(lb_table.html())
    parts.append("<h2>Tables</h2>")
    parts += [t.html() for _, t in tables]
    parts.append("<h2>Figures</h2>")
    for title, files in figs:
        png = next((f for f in files if f.suffix == ".png"), None)
        if png is None:
            continue
        data = base64.b64encode(png.read_bytes()).decode()
        parts.append(f"<figure><img alt=\"{html.escape(title)}\" src=\"data:image/png;base64,{data}\">"
                     f"<figcaption>{html.escape(title)}</figcaption></figure>")
    css = ("body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;margin:.5em 0}"
           "td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px;text-align:right}td:first-child{text-align:left}"
           ".ci{color:#666;font-size:11px}.note{font-size:12px;color:#444;max-width:1000px}"
           ".warn{background:#fff4e0;border:1px solid #e0b060;padding:.5em}img{max-width:100%}"
           "figure{margin:1em 0}")
    return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>diffpref-bench report</title>"
            f"<style>{css}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")


# ----------------------------------------------------------------------------- paper specs

@dataclass
class PaperSpec:
    name: str
    path: Path
    title: str
    citation: str
    jobs: dict
    output: dict
    paper: list[dict]
    requires: list[str] = field(default_factory=list)
    notes: str = ""


def load_spec(name_or_path: str) -> PaperSpec:
    import yaml
    p = Path(name_or_path)
    if p.suffix not in (".yaml", ".yml"):
        p = PAPER_DIR / f"{name_or_path}.yaml"
    if not p.is_file():
        known = sorted(q.stem for q in PAPER_DIR.glob("*.yaml"))
        raise BenchError(f"no paper spec {name_or_path!r}; valid: {', '.join(known)} (or a path to a spec .yaml)")
    try:
        d = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise BenchError(f"paper spec {p} is not valid YAML: {' '.join(str(e).split())[:200]}") from None
    for key in ("title", "jobs", "output"):
        if not isinstance(d, dict) or key not in d:
            raise BenchError(f"paper spec {p} lacks '{key}'; see paper/README.md for the format")
    return PaperSpec(p.stem, p, d["title"], d.get("citation", ""), d["jobs"], d["output"],
                     d.get("paper") or [], [str(m) for m in d.get("requires") or []], d.get("notes", ""))


def _sweep(spec: PaperSpec) -> tuple[list[str], dict[str, list[str]]]:
    """(fixed overrides, sweep params) of the spec: from a suite file or the spec's own sweep."""
    fixed = [str(o) for o in spec.jobs.get("overrides") or []]
    if "suite" in spec.jobs:
        import yaml
        suite = ROOT / "sweeps" / "suite" / f"{spec.jobs['suite']}.yaml"
        if not suite.is_file():
            raise BenchError(f"paper spec {spec.name}: unknown suite {spec.jobs['suite']!r}")
        params = (yaml.safe_load(suite.read_text()).get("hydra", {}).get("sweeper", {}).get("params") or {})
        fixed = [f"+suite={spec.jobs['suite']}"] + fixed
    else:
        params = spec.jobs.get("sweep") or {}
    # Values expand with Hydra's own override grammar, so a spec sweeps exactly what
    # `python -m bench run --multirun k=<value>` would: a,b,c / range(0,3) / [a],[b,c] (lists).
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    parser = OverridesParser.create()
    sweep = {}
    for k, v in params.items():
        text = ",".join(_hydra_value(x) for x in v) if isinstance(v, list) else str(v)
        try:
            ov = parser.parse_override(f"{k}={text}")
        except HydraException as e:
            raise BenchError(f"paper spec {spec.name}: sweep {k}={text} is not a Hydra sweep "
                             f"({' '.join(str(e).split())[:120]}); write it as a,b,c or [a],[b]") from None
        sweep[k] = list(ov.sweep_string_iterator()) if ov.is_sweep_override() else [ov.get_value_element_as_str()]
    return fixed, sweep


def _hydra_value(x) -> str:
    """One sweep value of a spec's YAML list in Hydra override syntax (a YAML list becomes [a,b])."""
    if isinstance(x, (list, tuple)):
        return "[" + ",".join(_hydra_value(y) for y in x) + "]"
    return str(x).strip()


def check_registered(spec: PaperSpec, fixed: list[str], sweep: dict[str, list[str]]) -> None:
    """Every method and backbone the spec names must be registered; else one line naming it."""
    import bench.backbones  # noqa: F401
    import methods  # noqa: F401
    from bench.registry import BACKBONES, METHODS
    named = [spec.output.get("method"), spec.output.get("reference")] + list(spec.output.get("rows") or [])
    named += [x for pair in spec.output.get("versus") or [] for x in pair]
    wanted = {"method": set(spec.requires) | {str(m) for m in named if m and " " not in str(m)},
              "backbone": set()}
    for o in fixed:
        k, _, v = o.lstrip("+~").partition("=")
        if k in wanted:
            wanted[k].add(v)
    for k, vals in sweep.items():
        if k.lstrip("+~") in wanted:
            wanted[k.lstrip("+~")].update(vals)
    for kind, reg in (("method", METHODS), ("backbone", BACKBONES)):
        for v in sorted(wanted[kind]):
            if v not in reg:
                raise BenchError(f"paper spec {spec.name!r} needs {kind} {v!r}, which is not registered yet; "
                                 f"registered: {', '.join(reg.names())}")


def spec_job_dirs(fixed: list[str], sweep: dict[str, list[str]], extra: list[str]) -> list[Path]:
    """The job directory of every combination, computed exactly as bench.runner.run_job names it."""
    import dataclasses
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf
    import bench.runner as R
    from bench.results import job_dir
    R.register_configs()
    keys = list(sweep)
    dirs = []
    with initialize_config_module("bench.conf", version_base="1.3"):
        for combo in itertools.product(*(sweep[k] for k in keys)) if keys else [()]:
            cfg = compose("config", overrides=fixed + [f"{k}={v}" for k, v in zip(keys, combo)] + extra)
            job = R.validate(cfg)
            # mirrors the first lines of bench.runner.run_job (tests check both give the same dir)
            plain = OmegaConf.to_container(cfg, resolve=True)
            plain["backbone"], plain["method"] = dataclasses.asdict(job.backbone), dataclasses.asdict(job.method)
            for k in ("world", "data", "train", "eval"):
                plain[k] = dataclasses.asdict(getattr(job, k))
            dirs.append(job_dir(Path(job.paths.results), plain))
    return dirs


def run_paper(name_or_path: str, extra: list[str] | None = None, out: Path | None = None,
              dry_run: bool = False) -> Path | None:
    """Run the spec's missing jobs through `python -m bench run`, then regenerate its output.
    dry_run: only list the spec's jobs and which are missing (stderr), run and write nothing."""
    import sys
    import time
    from bench.cli import main as cli_main
    from bench.results import is_complete
    t0 = time.time()
    spec = load_spec(name_or_path)
    extra = list(extra or [])
    fixed, sweep = _sweep(spec)
    check_registered(spec, fixed + extra, sweep)
    dirs = spec_job_dirs(fixed, sweep, extra)
    missing = [d for d in dirs if not is_complete(d)]
    print(f"paper {spec.name}: {len(dirs)} job(s), {len(missing)} missing"
          + (" (dry run: nothing run)" if dry_run else " (running them through `python -m bench run`)" if missing else ""),
          file=sys.stderr)
    if dry_run:
        for d in dirs:
            print(f"  {'missing ' if d in missing else 'complete'} {d}", file=sys.stderr)
        return None
    if missing:
        args = ["run"] + fixed + [f"{k}={','.join(v)}" for k, v in sweep.items()] + extra
        if "suite" not in spec.jobs and "--multirun" not in args:
            args.insert(1, "--multirun")
        cli_main(args)
        still = [d for d in dirs if not is_complete(d)]
        if still:
            raise BenchError(f"paper {spec.name}: {len(still)} job(s) still missing after the run, e.g. {still[0]}")
    problems: list[str] = []
    runs = load_runs(None, problems, dirs=list(dict.fromkeys(dirs)))   # this spec's jobs only
    if problems:
        raise BenchError(f"paper {spec.name}: {problems[0]}")
    out = Path(out) if out is not None else spec.path.parent / spec.name
    path = write_paper_output(spec, runs, out, wall_s=time.time() - t0, n_run=len(missing))
    return path


def _row(lb: pd.DataFrame, key: str) -> pd.DataFrame:
    """Leaderboard rows for a spec row key: a label, or a method name (all its configs)."""
    hit = lb[lb.label == key]
    return hit if len(hit) else lb[lb.method == key]


def head_to_head(runs_a: list[Run], runs_b: list[Run], scorer: str) -> dict:
    """Win rate of A over B on one scorer, paired by (prompt, eval seed) within matching training
    seeds, with the same statistics as vs base."""
    from bench.evaluate import win_rate
    b_by_seed = {r.seed: r for r in runs_b}
    pairs = [(a, b_by_seed[a.seed]) for a in runs_a if a.seed in b_by_seed]
    if not pairs:
        raise BenchError(f"no training seed in common between {runs_a[0].result['method']} and "
                         f"{runs_b[0].result['method']}; run both with the same seeds")
    merged = pd.concat([a.scores[["prompt_id", "seed", scorer]].merge(
        b.scores[["prompt_id", "seed", scorer]], on=["prompt_id", "seed"], suffixes=("_a", "_b"))
        for a, b in pairs], ignore_index=True)
    sc, ev = runs_a[0].result["scorers"][scorer], runs_a[0].result["identity"]["eval"]
    return win_rate(merged[f"{scorer}_a"], merged[f"{scorer}_b"], merged["prompt_id"], sc["tie_tolerance"],
                    sc["higher_is_better"], ev["n_bootstrap"], ev["bootstrap_seed"], ev["ci"])


def winrate_gain(runs_a: list[Run], runs_b: list[Run], scorers: list[str]) -> dict:
    """Gain in win rate vs base of A over B, per scorer and averaged over scorers, with a prompt-
    level paired bootstrap CI (A's and B's per-prompt outcomes resampled together)."""
    ev = runs_a[0].result["identity"]["eval"]

    def per_prompt(runs, name):
        df = pd.concat([r.scores for r in runs], ignore_index=True)
        sc = runs[0].result["scorers"][name]
        o = outcomes(df[name].to_numpy(float), df[f"base_{name}"].to_numpy(float), sc["tie_tolerance"],
                     sc["higher_is_better"])
        return pd.Series(o).groupby(df["prompt_id"].to_numpy()).mean()
    diffs = {}
    for n in scorers:
        a, b = per_prompt(runs_a, n), per_prompt(runs_b, n)
        common = a.index.intersection(b.index)
        diffs[n] = (a[common] - b[common]).sort_index()
    prompts = sorted(set.intersection(*(set(d.index) for d in diffs.values())))
    m = np.stack([diffs[n].reindex(prompts).to_numpy() for n in scorers], axis=1)   # prompts x scorers
    rng = np.random.default_rng(ev["bootstrap_seed"])
    idx = rng.integers(0, len(prompts), size=(ev["n_bootstrap"], len(prompts)))
    boots = m[idx].mean(axis=1)          # n_bootstrap x scorers
    a = (1 - ev["ci"]) / 2
    out = {n: (float(m[:, j].mean()), float(np.quantile(boots[:, j], a)), float(np.quantile(boots[:, j], 1 - a)))
           for j, n in enumerate(scorers)}
    avg = boots.mean(axis=1)
    out["mean"] = (float(m.mean()), float(np.quantile(avg, a)), float(np.quantile(avg, 1 - a)))
    out["_boots_mean"] = avg
    return out


def write_paper_output(spec: PaperSpec, runs: list[Run], out: Path, wall_s: float = 0.0, n_run: int = 0) -> Path:
    """The spec's table(s), then the paper's reported numbers beside ours, into out/README.md
    (+ table.tex, summary.json)."""
    lb = leaderboard(runs=runs)
    scorers = spec.output.get("scorers") or scorers_of(runs)
    by_dir = {r.path.name: r for r in runs}

    def runs_of(key):
        return [by_dir[d] for d in ";".join(_row(lb, key).job_dirs).split(";") if d]
    kind = spec.output.get("kind", "winrate")
    tables: list[Table] = []
    ours: dict[tuple[str, str], Cell] = {}
    rows_wanted = spec.output.get("rows") or [m for m in lb.method.unique() if m != "base"]
    if kind in ("winrate", "ablation"):
        rows = []
        for key in rows_wanted:
            for _, r in _row(lb, key).iterrows():
                cells = [_wr_cell(r, n) for n in scorers]
                rows.append([r.label] + cells + [Cell(r.mean_win_rate)])
                for n, c in zip(scorers, cells):
                    ours[(key, n)] = ours[(r.label, n)] = c
        _mark_best(rows, 1)
        tables.append(Table(spec.title, ["method"] + scorers + ["mean"], rows, _ci_note(runs)))
        for a, b in spec.output.get("versus") or []:
            ra, rb = runs_of(a), runs_of(b)
            if not ra or not rb:
                raise BenchError(f"paper {spec.name}: versus [{a}, {b}] names a row with no jobs")
            cells = []
            for n in scorers:
                st = head_to_head(ra, rb, n)
                cells.append(Cell(st["win_rate"], st["ci_low"], st["ci_high"]))
                ours[(f"{a} vs {b}", n)] = cells[-1]
            tables.append(Table(f"{spec.title}: head to head", ["A vs B"] + scorers,
                                [[f"{a} vs {b}"] + cells], "Win rate of A over B, paired by prompt and seed; "
                                "95% prompt-level bootstrap CI."))
    elif kind == "gain":
        method, ref = spec.output["method"], spec.output["reference"]
        rows, draws = [], []
        for bb in sorted(lb.backbone.unique()):
            sub = lb[lb.backbone == bb]
            ra = [by_dir[d] for d in ";".join(sub[sub.method == method].job_dirs).split(";") if d]
            rb = [by_dir[d] for d in ";".join(sub[sub.method == ref].job_dirs).split(";") if d]
            if not ra or not rb:
                continue
            g = winrate_gain(ra, rb, scorers)
            draws.append(g.pop("_boots_mean"))
            cells = [Cell(*g[n], signed=True) for n in scorers] + [Cell(*g["mean"], signed=True)]
            rows.append([bb] + cells)
            ours[(bb, "gain")] = cells[-1]
        if draws:
            ev = runs[0].result["identity"]["eval"]
            n = min(len(d) for d in draws)
            avg = np.mean([d[:n] for d in draws], axis=0)
            a = (1 - ev["ci"]) / 2
            c = Cell(float(np.mean([r[-1].value for r in rows])), float(np.quantile(avg, a)),
                     float(np.quantile(avg, 1 - a)), signed=True)
            rows.append(["mean over backbones"] + [Cell(float("nan"))] * len(scorers) + [c])
            ours[("mean over backbones", "gain")] = c
        tables.append(Table(spec.title, ["backbone"] + [f"Δ {n}" for n in scorers] + ["Δ mean"], rows,
                            f"Δ: win rate vs base of {method} minus that of {ref}; CI: paired prompt-level bootstrap."))
    elif kind == "attributes":
        from bench.world import NEGATIVE_ATTRIBUTES
        ev = runs[0].result["identity"]["eval"]
        rows = []
        first = True
        for key in rows_wanted:
            for _, r in _row(lb, key).iterrows():
                df = pd.concat([by_dir[d].scores for d in r.job_dirs.split(";")], ignore_index=True)
                if first:
                    m, lo, hi, _ = prompt_bootstrap(df["base_n_negative"], df["prompt_id"], ev["n_bootstrap"],
                                                    ev["bootstrap_seed"], ev["ci"])
                    rows.append(["base (reference)", Cell(m, lo, hi, digits=2), Cell(0.0, 0.0, 0.0, digits=2, signed=True)]
                                + [Cell(float(df[f"base_{a}"].mean()), digits=2) for a in NEGATIVE_ATTRIBUTES])
                    ours[("base", "n_negative")] = rows[-1][1]
                    first = False
                if r.method == "base":
                    continue
                m, lo, hi, _ = prompt_bootstrap(df["n_negative"], df["prompt_id"], ev["n_bootstrap"],
                                                ev["bootstrap_seed"], ev["ci"])
                dm, dlo, dhi, _ = prompt_bootstrap(df["n_negative"] - df["base_n_negative"], df["prompt_id"],
                                                   ev["n_bootstrap"], ev["bootstrap_seed"], ev["ci"])
                rows.append([r.label, Cell(m, lo, hi, digits=2), Cell(dm, dlo, dhi, digits=2, signed=True)]
                            + [Cell(float(df[a].mean()), digits=2) for a in NEGATIVE_ATTRIBUTES])
                ours[(key, "n_negative")] = ours[(r.label, "n_negative")] = rows[-1][1]
        tables.append(Table(spec.title, ["method", "negatives / image", "Δ vs base"]
                            + [f"−{a}" for a in NEGATIVE_ATTRIBUTES], rows,
                            "Mean count of negative attributes per image (lower is better) with a 95% prompt-level "
                            "bootstrap CI; Δ paired with the base image of the same prompt and seed."))
    else:
        raise BenchError(f"paper spec {spec.name}: unknown output kind {kind!r}; valid: winrate, ablation, gain, attributes")

    beside = []
    for e in spec.paper:
        hits = _row(lb, str(e.get("row")))        # the rows our table holds for it (several: ambiguous)
        if len(hits) > 1:
            raise BenchError(f"paper spec {spec.name}: paper row {e.get('row')!r} matches {len(hits)} rows of our "
                             f"table; name one of them as its row: "
                             + "; ".join(f"{r.label} on {r.backbone}" for r in hits.itertuples()))
        c = ours.get((str(e.get("row")), str(e.get("ours"))))
        v = e.get("value")
        beside.append([str(e.get("row")), str(e.get("ours")), dataclasses.replace(c, bold=False) if c else "n/a",
                       "not transcribed" if v is None else (f"≈{v}" if e.get("approx") else f"{v}"),
                       str(e.get("metric", "")), str(e.get("source", ""))])
    beside_t = Table("Beside the paper", ["row", "our column", "ours", "paper", "paper's metric", "source"], beside,
                     "Ours: embedded shapes world (tiny backbones, world scorers; gold stands in for human judgement). "
                     "The paper's numbers come from real models and human or learned scorers, so compare "
                     "directions and orderings, not magnitudes.")
    out.mkdir(parents=True, exist_ok=True)
    shas = sorted({str(r.result["provenance"]["git_sha"])[:10] for r in runs})
    md = [f"# {spec.title}", "", f"Paper: {spec.citation}".rstrip(), "",
          f"Regenerated by `python -m bench paper {spec.name}` from {len(runs)} job(s) "
          f"(git {', '.join(shas)}); {n_run} job(s) run by this call; {wall_s:.1f} s.", ""]
    if spec.notes:
        md += [spec.notes.strip(), ""]
    md += [t.markdown() for t in tables] + [beside_t.markdown()]
    _write(out / "README.md", "\n".join(md))
    _write(out / "table.tex", "\n".join(t.latex() for t in tables + [beside_t]))
    summary = {"spec": spec.name, "title": spec.title, "citation": spec.citation, "jobs": [r.path.name for r in runs],
               "git_sha": shas, "wall_s": wall_s, "jobs_run": n_run,
               "ours": {f"{k[0]}|{k[1]}": {"value": c.value, "ci_low": c.low, "ci_high": c.high}
                        for k, c in ours.items()},
               "paper": spec.paper}
    _write(out / "summary.json", json.dumps(summary, indent=2, default=float))
    if kind in ("winrate", "ablation"):
        fig_winrate_bars(pd.concat([_row(lb, k) for k in rows_wanted]).drop_duplicates("config"), scorers,
                         out / "winrates")
    log.info("paper %s: %s", spec.name, out / "README.md")
    return out / "README.md"
