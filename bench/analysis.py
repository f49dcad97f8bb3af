"""Analysis: every table, figure, image grid and the HTML report as a pure function of result files.

    python -m bench report [RESULTS_DIR] [--out DIR] [--prompts ID,ID,...]
    python -m bench paper NAME|SPEC.yaml [--out DIR] [overrides...]

`report` reads `<results>/runs/*/{result.json, scores.parquet, samples.png}` and nothing else, and
writes into OUT (default: RESULTS_DIR):

    leaderboard.csv                 bench.results.leaderboard: one row per (backbone, method, config)
    tables/winrates.{md,tex}        method x scorer, win rate vs base [95% CI] in every cell (seed-aware
                                    where a row has >= 2 training seeds; bench.statistics); bold only where
                                    the best multi-seed row's CI lies above every other row's CI
    tables/ablation-*.{md,tex}      one per (backbone, method) whose runs differ in a config key
    tables/seeds-*.{md,tex}         per-seed rows where a config ran with several seeds
    tables/attributes.{md,tex}      shapes-world attribute rates, negative-attribute count [CI], and
                                    per attribute the images fixed / broken vs base (clustered test's p)
    tables/power.{md,tex}           minimum detectable win-rate difference per suite design, and the
                                    variance components it comes from (configs with >= 2 seeds)
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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bench import statistics as st
from bench.files import atomic, write_text
from bench.registry import BenchError
from bench.results import (SAMPLE_INDEX, SAMPLE_SHEET, Run, config_key, flat_identity, leaderboard, load_runs, pooled_scores,
                           short_keys, varying_keys, vs_base, write_leaderboard)

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
    seed_aware: bool = True      # False: one training seed, the CI covers prompts only (never bold)
    p: float | None = None       # the test's p-value against the comparison's null, where there is one

    @classmethod
    def of(cls, e: "st.Estimate", **kw) -> "Cell":
        return cls(e.value, e.ci_low, e.ci_high, seed_aware=e.seed_aware, p=e.p, **kw)

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
    if cells[best].seed_aware and all(cells[best].low > cells[j].high for j in ok if j != best):
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
    p = row.get(f"{name}_p")
    return Cell(float(row[f"{name}_win_rate"]), float(row[f"{name}_ci_low"]), float(row[f"{name}_ci_high"]),
                seed_aware=int(row.get("n_seeds", 1)) > 1, p=None if p is None or pd.isna(p) else float(p))


CI_NOTE = ("Win rate vs base: 1 per pair won, 0.5 within the scorer's tie tolerance; averaged over eval seeds "
           "within a prompt, then over prompts, then over training seeds. [..] = 95% CI: with >= 2 training "
           "seeds it covers seeds and prompts (crossed random effects, t with Satterthwaite df; "
           "bench.statistics); with one seed (seeds = 1) it covers prompts only, so that row is not a claim "
           "about the method. Bold: best in its column over >= 2 seeds with a CI above every other row's.")


def _ci_note(runs: list[Run]) -> str:
    return CI_NOTE


def winrate_tables(lb: pd.DataFrame, runs: list[Run]) -> list[Table]:
    """Method x scorer per backbone: win rate vs base [CI]; the base row itself is left out."""
    scorers = scorers_of(runs)
    tables = []
    for bb, g in lb[lb.method != "base"].groupby("backbone", sort=True):
        rows = [[r.label, str(r.n_seeds)] + [_wr_cell(r, n) for n in scorers]
                + [Cell(r.mean_win_rate), Cell(r.helm_mean_win_rate)] for _, r in g.iterrows()]
        _mark_best(rows, 2)      # the two summary columns carry no CI, so nothing is marked in them
        tables.append(Table(f"{bb}: win rate vs base", ["method", "seeds"] + scorers + ["mean", "HELM mean win rate"],
                            rows, _ci_note(runs) + power_note(runs, bb, scorers)))
    return tables


# ----------------------------------------------------------------------------- power

DESIGNS = ((1, 1.0, 1.0), (3, 1.0, 1.0), (5, 1.0, 1.0), (10, 1.0, 1.0), (3, 2.0, 1.0), (3, 1.0, 2.0), (3, 2.0, 0.5))
"""(training seeds, prompts x, eval seeds x) of the power table, relative to the measured design."""


def variance_components(runs: list[Run], backbone: str, scorers: list[str]) -> dict[str, "st.Components"]:
    """Per scorer: the variance components of the win rate vs base, pooled (averaged) over every
    config of `backbone` that ran with >= 2 training seeds (the base rows left out)."""
    groups: dict[str, list[Run]] = {}
    for r in runs:
        if r.result["backbone"] == backbone and r.result["method"] != "base":
            groups.setdefault(config_key(r.result), []).append(r)
    out = {}
    for n in scorers:
        cs = []
        for members in groups.values():
            members = [m for m in members if n in m.result["scorers"]]     # scorer sets may differ
            if len({m.seed for m in members}) < 2:
                continue
            df, sc = pooled_scores(members), members[0].result["scorers"][n]
            o = st.outcomes(df[n], df[f"base_{n}"], sc["tie_tolerance"], sc["higher_is_better"])
            cs.append(st.components(st.cells(o, df["prompt_id"], df["train_seed"])))
        if cs:
            out[n] = st.pool_components(cs)
    return out


def power_note(runs: list[Run], backbone: str, scorers: list[str]) -> str:
    """One sentence for a win-rate table: the smallest effect its 3-seed rows detect."""
    comps = variance_components(runs, backbone, scorers)
    if not comps:
        return (" Power: no config of this backbone ran with >= 2 training seeds, so the between-seed variance "
                "is unknown and no detectable effect can be stated.")
    c = next(iter(comps.values()))
    p, e = c.n_prompts, int(round(c.n_eval))
    mdes = ", ".join(f"{n} {st.mde(comps[n], 3, p, e):.3f}" for n in scorers if n in comps)
    return (f" Power (80%, two-sided α = 0.05; variance components of this backbone's multi-seed configs): a row "
            f"of 3 training seeds x {p} prompts x {e} eval seeds detects a win rate that differs from 0.5 by at "
            f"least {mdes} (tables/power.md).")


def power_tables(runs: list[Run]) -> list[Table]:
    """Per backbone: the minimum detectable win-rate difference of other suite designs, from the
    variance components the committed multi-seed configs show (bench.statistics.mde)."""
    scorers, tables = scorers_of(runs), []
    for bb in sorted({r.result["backbone"] for r in runs}):
        comps = variance_components(runs, bb, scorers)
        if not comps:
            continue
        c0 = next(iter(comps.values()))
        rows = []
        for s, fp, fe in DESIGNS:
            p, e = int(round(c0.n_prompts * fp)), max(1, int(round(c0.n_eval * fe)))
            rows.append([str(s), str(p), str(e), str(s * p * e)]
                        + [Cell(st.mde(comps[n], s, p, e)) if n in comps else Cell(float("nan")) for n in scorers])
        comp_rows = [[n, f"{comps[n].seed:.5f}", f"{comps[n].prompt:.5f}", f"{comps[n].cell:.5f}", f"{comps[n].eval:.5f}"]
                     for n in scorers if n in comps]
        tables.append(Table(f"{bb}: minimum detectable win-rate difference (80% power, α = 0.05)",
                            ["training seeds", "prompts", "eval seeds", "images / config"] + scorers, rows,
                            "Smallest |win rate - 0.5| a two-sided test detects with 80% power, from the variance "
                            "components (seed, prompt, seed x prompt, eval seed) of this backbone's configs with >= 2 "
                            "training seeds, averaged over them (bench.statistics.mde; normal approximation). More "
                            "training seeds shrink the seed term, which more prompts or eval seeds cannot."))
        tables.append(Table(f"{bb}: variance components of the win rate vs base", ["scorer", "seed", "prompt",
                            "seed x prompt", "eval seed (one image)"], comp_rows,
                            "ANOVA moment estimates (truncated at 0) per cell of one training seed x one prompt, "
                            "averaged over the backbone's multi-seed configs."))
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
        multi = g[g.n_seeds > 1]
        if len(multi):
            rows = []
            for _, row in multi.iterrows():
                for m in sorted((by_dir[d] for d in row.job_dirs.split(";")), key=lambda r: r.seed):
                    rows.append([row.label, str(m.seed)] + [_vs_base_cell([m], n) for n in scorers])
                rows.append([row.label, "pooled (seed-aware)"] + [_wr_cell(row, n) for n in scorers])
                rows.append([row.label, "between-seed sd"] + [Cell(float(row.get(f"{n}_seed_sd", np.nan)))
                                                              for n in scorers])
            out.append((f"seeds-{bb}-{method}",
                        Table(f"{bb} / {method}: seeds", ["config", "seed"] + scorers, rows,
                              "Per-seed rows: that training seed's own win rate vs base, CI over prompts only. "
                              "Pooled: the estimate over seeds with the seed-aware CI (seeds and prompts "
                              "as crossed random effects; bench.statistics). sd: spread of the per-seed win rates.")))
    return out


def _vs_base_cell(runs: list[Run], name: str) -> Cell:
    runs = [r for r in runs if name in r.result["scorers"]]
    if not runs:
        return Cell(float("nan"))
    r = vs_base(runs, name)
    return Cell(r["win_rate"], r["ci_low"], r["ci_high"], seed_aware=r["n_seeds"] > 1, p=r["p"])


def _sort_key(v: str):
    try:
        return (0, float(v), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(v))


def attribute_frame(lb: pd.DataFrame, runs: list[Run]) -> pd.DataFrame:
    """Per backbone: the base model and every config's attribute rates (pooled over seeds)."""
    from bench.world import ATTRIBUTES
    by_dir = {r.path.name: r for r in runs}
    rows = []
    for bb, g in lb.groupby("backbone", sort=True):
        base_done = False
        for _, row in g.iterrows():
            df = pooled_scores([by_dir[d] for d in row.job_dirs.split(";")])
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
            rows.append({"backbone": bb, "label": row.label, "method": row.method, "n_seeds": row.n_seeds,
                         **{a: float(df[a].mean()) for a in attrs}, "_df": df, "_prefix": ""})
    return pd.DataFrame(rows)


def attribute_tables(lb: pd.DataFrame, runs: list[Run]) -> list[Table]:
    from bench.world import NEGATIVE_ATTRIBUTES, POSITIVE_ATTRIBUTES
    af = attribute_frame(lb, runs)
    if af.empty:
        return []
    tables = []
    for bb, g in af.groupby("backbone", sort=True):
        pos = [a for a in POSITIVE_ATTRIBUTES if a in g]
        neg = [a for a in NEGATIVE_ATTRIBUTES if a in g]
        rows = []
        for r in g.to_dict("records"):
            df, p = r["_df"], r["_prefix"]
            extra = []
            if f"{p}n_negative" in df:
                extra.append(Cell.of(st.mean_estimate(df, f"{p}n_negative"), digits=2))
            if f"{p}fully_correct" in df:
                extra.append(Cell(float(df[f"{p}fully_correct"].mean())))
            rows.append([r["label"]] + [Cell(r[a], digits=2) for a in pos + neg] + extra)
        header = (["model"] + [f"+{a}" for a in pos] + [f"−{a}" for a in neg]
                  + (["negatives / image"] if len(rows[0]) > 1 + len(pos) + len(neg) else [])
                  + (["fully correct"] if len(rows[0]) > 2 + len(pos) + len(neg) else []))
        tables.append(Table(f"{bb}: shapes-world attributes (rate per image)", header, rows,
                            "+: positive attribute (higher is better); −: negative attribute (lower is better). "
                            "Negatives / image: mean count of negative attributes with its 95% CI (seed-aware "
                            "where the row pools >= 2 training seeds; bench.statistics)."))
        tables.append(attribute_change_table(bb, g, pos, neg))
    return tables


def attribute_change_table(bb: str, g: pd.DataFrame, pos: list[str], neg: list[str]) -> Table:
    """Per config and attribute: images fixed / broken vs the base image of the same prompt and
    seed, with the clustered test's p over >= 2 training seeds. Shows whether alignment moved an
    attribute one way or only perturbed samples both ways (rates alone cannot tell the two apart)."""
    rows = []
    for r in g.to_dict("records"):
        if r["method"] == "base":
            continue
        df, cells, tot_f, tot_b = r["_df"], [], 0, 0
        multi = r.get("n_seeds", 1) > 1
        for a in pos + neg:
            f, b, p = st.attribute_flips(df[a], df[f"base_{a}"], a in pos, df["prompt_id"], df["train_seed"])
            tot_f, tot_b = tot_f + f, tot_b + b
            cells.append(f"{f}/{b}" + (f" (p={p:.2g})" if multi and p < st.ALPHA else ""))
        label = r["label"] if multi else f"{r['label']} (1 seed)"
        rows.append([label] + cells + [f"{tot_f}/{tot_b}", f"{len(df)}"])
    header = ["model"] + [f"+{a}" for a in pos] + [f"−{a}" for a in neg] + ["all", "images"]
    return Table(f"{bb}: attribute changes vs base (fixed/broken images, paired by prompt and seed)",
                 header, rows,
                 "fixed/broken: images whose attribute is bad in the base sample and good in the model's from the "
                 "same prompt and seed, and the reverse; p: clustered test (per-image change +1/-1/0 averaged in "
                 "training seed x prompt cells; seed-aware t, bench.statistics), shown where below 0.05 on rows "
                 "with >= 2 training seeds, uncorrected for the number of cells. Rows marked (1 seed) show counts "
                 "only.")


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
        # no creation date in PDFs, so a regenerated report leaves committed files byte-identical
        meta = {"CreationDate": None} if ext == "pdf" else None
        with atomic(p, suffix=f".{ext}") as tmp:
            fig.savefig(tmp, dpi=130, bbox_inches="tight", metadata=meta)
        out.append(p)
    import matplotlib.pyplot as plt
    plt.close(fig)
    return out


SHORT_LABEL = 18          # a label longer than this becomes "<method> [n]", spelled out in the figure's key


def short_labels(labels, methods) -> tuple[dict[str, str], list[str]]:
    """label -> short label, and the key lines ("[n] full label") for those that were shortened.
    Numbered in the given order, one number per distinct label, so [n] names the same
    configuration in every figure drawn from the same rows."""
    short, key = {}, []
    for label, method in zip(labels, methods):
        if label in short:
            continue
        if len(label) <= SHORT_LABEL:
            short[label] = label
        else:
            key.append(f"[{len(key) + 1}] {label}")
            short[label] = f"{method} [{len(key)}]"
    return short, key


def _family_colours(methods) -> dict[str, tuple]:
    """One colour per method family (a handful), the same in every panel."""
    import seaborn as sns
    fams = sorted(set(methods))
    return dict(zip(fams, sns.color_palette("tab10" if len(fams) <= 10 else "husl", len(fams))))


def _key_text(fig, key_lines: list[str], bottom_in: float) -> None:
    """The key of shortened labels as lines of text in the figure's bottom margin (inches from the bottom)."""
    if key_lines:
        fig.text(0.01, bottom_in / fig.get_figheight(), "\n".join(key_lines), fontsize=7, va="bottom", ha="left",
                 linespacing=1.35)


def winrate_figure(lb: pd.DataFrame, scorers: list[str]):
    """Faceted interval plot: one panel per (backbone, scorer), one row per configuration with its
    win rate vs base and 95% CI, coloured by method family (hollow: a single training seed).
    Rows are labelled with short labels and a key below, so any number of configurations stays
    readable: the figure grows downwards, never sideways, and no legend sits on the data."""
    plt, sns = _plt()
    from matplotlib.ticker import MaxNLocator
    d = lb[lb.method != "base"]
    scorers = [n for n in scorers if f"{n}_win_rate" in d and d[f"{n}_win_rate"].notna().any()]
    if d.empty or not scorers:
        return None
    backbones = sorted(d.backbone.unique())
    short, key_lines = short_labels(d.label, d.method)
    colours = _family_colours(d.method)
    counts = [int((d.backbone == bb).sum()) for bb in backbones]
    legend_h, key_h = 0.45, 0.15 * len(key_lines) + (0.1 if key_lines else 0.0)
    panels_h = sum(0.24 * c + 0.75 for c in counts) + 0.5
    longest = max(len(s) for s in short.values())
    fig = plt.figure(figsize=(0.075 * longest + 2.3 * len(scorers) + 0.6, panels_h + legend_h + key_h))
    H = fig.get_figheight()
    gs = fig.add_gridspec(len(backbones), len(scorers), height_ratios=[0.24 * c + 0.75 for c in counts])
    lows = [d[f"{n}_ci_low"].min() for n in scorers]
    highs = [d[f"{n}_ci_high"].max() for n in scorers]
    xlim = (max(0.0, min(lows + [0.5]) - 0.02), min(1.0, max(highs + [0.5]) + 0.02))
    for i, bb in enumerate(backbones):
        g = d[d.backbone == bb].reset_index(drop=True)
        first = None
        for j, n in enumerate(scorers):
            ax = fig.add_subplot(gs[i, j], sharey=first)
            first = first or ax
            for y, r in g.iterrows():
                x = r[f"{n}_win_rate"]
                if pd.isna(x):            # a run scored without this scorer has no point here
                    continue
                c = colours[r.method]
                ax.errorbar([x], [y], xerr=[[x - r[f"{n}_ci_low"]], [r[f"{n}_ci_high"] - x]], fmt="o", ms=4.5,
                            color=c, mfc=c if r.get("n_seeds", 1) > 1 else "white", capsize=2.5, lw=1.2)
            ax.axvline(0.5, ls="--", color="grey", lw=1)
            ax.set_xlim(*xlim)
            ax.set_ylim(len(g) - 0.5, -0.5)
            ax.set_yticks(range(len(g)))
            if j == 0:
                ax.set_yticklabels([short[lab] for lab in g.label], fontsize=8)
            else:
                ax.tick_params(axis="y", labelleft=False)
            ax.tick_params(axis="x", labelsize=8)
            ax.xaxis.set_major_locator(MaxNLocator(5))      # neighbouring panels' end ticks stay apart
            ax.set_title(f"{bb} · {n}", fontsize=9)
            ax.set_xlabel("win rate vs base" if i == len(backbones) - 1 else "", fontsize=8)
    from matplotlib.lines import Line2D
    handles = [Line2D([], [], marker="o", ls="", color=c, label=m) for m, c in colours.items()]
    if (d.get("n_seeds", pd.Series([2])) <= 1).any():
        handles.append(Line2D([], [], marker="o", ls="", color="grey", mfc="white", label="1 training seed"))
    fig.suptitle("Win rate vs base, 95% CI (seed-aware over >= 2 training seeds; prompts only for 1 seed)",
                 fontsize=10)
    fig.tight_layout(rect=(0, (legend_h + key_h) / H, 1, 1))
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, (legend_h + key_h) / H), ncol=len(handles),
               fontsize=8, frameon=False, handletextpad=0.3, columnspacing=1.2)
    _key_text(fig, key_lines, 0.05)
    return fig


def fig_winrate_bars(lb: pd.DataFrame, scorers: list[str], stem: Path) -> list[Path]:
    """The win-rate figure (winrate_figure) saved as stem.png / stem.pdf."""
    fig = winrate_figure(lb, scorers)
    return [] if fig is None else _save(fig, stem)


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


def fig_sensitivity(lb: pd.DataFrame, runs: list[Run], scorers: list[str], outdir: Path,
                    notes: list[str] | None = None) -> list[Path]:
    """Win rate vs base against every swept numeric config key (beta, refresh interval, caption
    dropout, ...), one line per scorer, CI bars. Runs that also differ in other swept keys are
    split into one panel per combination of those keys; only combinations with >= 2 values of
    the key make a curve (a key that never varies alone gets no figure, and a note)."""
    notes = notes if notes is not None else []
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
            groups: dict[str, list] = {}
            for (_, r), ident in zip(g.iterrows(), idents):
                rest = ", ".join(f"{names[k]}={ident.get(k)}" for k in others)
                groups.setdefault(rest, []).append((r, ident))
            groups = {k: v for k, v in groups.items() if len({float(i[key]) for _, i in v}) >= 2}
            if not groups:
                notes.append(f"sensitivity of {bb} / {method} to {names[key]} skipped: no two runs differ in "
                             f"{names[key]} alone")
                continue
            plt, sns = _plt()
            palette = dict(zip(scorers, sns.color_palette("tab10", len(scorers))))
            ncol = min(3, len(groups))
            nrow = -(-len(groups) // ncol)
            fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol + 1.4, 3.6 * nrow), squeeze=False)
            import textwrap
            for ax, (rest, members) in zip(axes.flat, sorted(groups.items())):
                long = pd.DataFrame([{"x": float(ident[key]), "scorer": n, "y": r[f"{n}_win_rate"],
                                      "lo": r[f"{n}_ci_low"], "hi": r[f"{n}_ci_high"]}
                                     for r, ident in members for n in scorers
                                     if f"{n}_win_rate" in r and pd.notna(r[f"{n}_win_rate"])]).sort_values("x")
                for n, sub in long.groupby("scorer", sort=False):
                    ax.errorbar(sub.x, sub.y, yerr=[sub.y - sub.lo, sub.hi - sub.y], fmt="o-", ms=4, capsize=3,
                                lw=1.2, color=palette[n], label=n)
                ax.axhline(0.5, ls="--", color="grey", lw=1)
                if long.x.min() > 0 and long.x.max() / long.x.min() >= 20:
                    ax.set_xscale("log")
                ax.set_xlabel(names[key])
                ax.set_ylabel("win rate vs base")
                ax.set_title("\n".join(textwrap.wrap(rest, 60)) if rest else "", fontsize=7)
            for ax in list(axes.flat)[len(groups):]:
                ax.set_visible(False)
            from matplotlib.lines import Line2D
            handles = [Line2D([], [], marker="o", color=c, label=n) for n, c in palette.items()]
            fig.suptitle(f"{bb} / {method}: sensitivity to {names[key]} (95% CI)", fontsize=10)
            fig.tight_layout(rect=(0, 0, 1 - 1.3 / fig.get_figwidth(), 1))
            fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(1 - 1.25 / fig.get_figwidth(), 0.9),
                       fontsize=8, frameon=False)
            files += _save(fig, outdir / f"sensitivity-{bb}-{method}-{names[key].replace('.', '_')}")
    return files


TRAIN_METRICS = ("loss", "implicit_acc", "reward_margin")


def fig_training(lb: pd.DataFrame, runs: list[Run], stem: Path) -> list[Path]:
    """Training curves (loss, implicit accuracy, reward margin) from result.json's history, one
    line per job, coloured by config: one row of panels per backbone, its legend (short labels,
    key below) beside the row, never on the curves."""
    label_of = {d: r.label for _, r in lb.iterrows() for d in r.job_dirs.split(";")}
    rows = [{"label": label_of.get(r.path.name, r.result["method"]), "method": r.result["method"], "seed": r.seed,
             "backbone": r.result["backbone"], **h}
            for r in runs for h in r.result.get("train_history") or []]
    if not rows:
        return []
    d = pd.DataFrame(rows)
    metrics = [m for m in TRAIN_METRICS if m in d and d[m].notna().any()]
    if "step" not in d or not metrics:
        return []
    plt, sns = _plt()
    order = [lab for lab in lb.label if lab in set(d.label)]
    order = list(dict.fromkeys(order + sorted(set(d.label) - set(order))))
    short, key_lines = short_labels(order, [d.method[d.label == lab].iloc[0] for lab in order])
    d["short"] = d.label.map(short)
    backbones = sorted(d.backbone.unique())
    key_h = 0.15 * len(key_lines) + (0.15 if key_lines else 0.0)
    n_lines = [d[d.backbone == bb].short.nunique() for bb in backbones]
    row_h = [max(3.0, 0.2 * n + 0.8) for n in n_lines]
    longest = max(len(s) for s in short.values())
    fig, axes = plt.subplots(len(backbones), len(metrics), squeeze=False, gridspec_kw={"height_ratios": row_h},
                             figsize=(4.0 * len(metrics) + 0.075 * longest + 1.0, sum(row_h) + 0.5 + key_h))
    for i, bb in enumerate(backbones):
        sub_bb = d[d.backbone == bb]
        hues = list(dict.fromkeys([short[lab] for lab in lb[lb.backbone == bb].label if lab in set(sub_bb.label)]
                                  + sorted(set(sub_bb.short))))
        palette = dict(zip(hues, sns.color_palette("tab10" if len(hues) <= 10 else "husl", len(hues))))
        for j, m in enumerate(metrics):
            ax = axes[i][j]
            sub = sub_bb[sub_bb[m].notna()]
            if not sub.empty:
                sns.lineplot(sub, x="step", y=m, hue="short", hue_order=hues, palette=palette, units="seed",
                             estimator=None, ax=ax, lw=1.2, legend=j == len(metrics) - 1)
            ax.set_title(f"{bb} · {m.replace('_', ' ')}", fontsize=9)
            ax.set_ylabel("")
        leg = axes[i][-1].get_legend()
        if leg is not None:
            axes[i][-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, frameon=False,
                               title=None)
    fig.suptitle("training curves (one line per training seed)", fontsize=10)
    fig.tight_layout(rect=(0, (key_h + 0.05) / fig.get_figheight(), 1, 1))
    _key_text(fig, key_lines, 0.05)
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


# ----------------------------------------------------------------------------- report

@dataclass
class ReportOutput:
    out: Path
    files: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)   # missing / corrupt result files, one line each
    notes: list[str] = field(default_factory=list)      # steps skipped, one line each
    tables: dict[str, Table] = field(default_factory=dict)


def _write(path: Path, text: str) -> Path:
    write_text(path, text)
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
    pw = power_tables(runs)
    if pw:
        rep.files.append(_write(out / "tables" / "power.md", "\n".join(t.markdown() for t in pw)))
        rep.files.append(_write(out / "tables" / "power.tex", "\n".join(t.latex() for t in pw)))
        tables += [("power", t) for t in pw]
    else:
        rep.notes.append("power tables skipped: no config ran with >= 2 training seeds")

    figs: list[tuple[str, list[Path]]] = []
    fdir = out / "figures"
    figs.append(("Win rate vs base per scorer", fig_winrate_bars(lb, scorers, fdir / "winrates")))
    figs.append(("Shapes-world attributes", fig_attribute_heatmap(attribute_frame(lb, runs), fdir / "attributes")))
    sens = fig_sensitivity(lb, runs, scorers, fdir, notes=rep.notes)
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
                     "One row per (backbone, method, config), training seeds pooled. CI: seed-aware (seeds and "
                     "prompts) where a row has >= 2 seeds, prompts only where it has one; per-seed estimates, their "
                     "spread and the tests' p-values are in leaderboard.csv. HELM mean win rate: fraction of the "
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
    from hydra import compose, initialize_config_module
    from bench.config import register_configs, resolve
    from bench.results import job_dir
    register_configs()
    keys = list(sweep)
    dirs = []
    with initialize_config_module("bench.conf", version_base="1.3"):
        for combo in itertools.product(*(sweep[k] for k in keys)) if keys else [()]:
            cfg = compose("config", overrides=fixed + [f"{k}={v}" for k, v in zip(keys, combo)] + extra)
            job, plain = resolve(cfg)            # as bench.runner.run_job names its job
            dirs.append(job_dir(Path(job.paths.results), plain))
    return dirs


def run_paper(name_or_path: str, extra: list[str] | None = None, out: Path | None = None,
              dry_run: bool = False, run=None) -> Path | None:
    """Run the spec's missing jobs with `run` (the CLI passes its own `main`: the jobs run as
    `python -m bench run <args>`), then regenerate its output.
    dry_run: only list the spec's jobs and which are missing (stderr), run and write nothing."""
    import sys
    import time
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
        if run is None:
            raise BenchError(f"paper {spec.name}: {len(missing)} job(s) missing and nothing to run them with")
        run(args)
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


def _common_seeds(runs_a: list[Run], runs_b: list[Run]) -> tuple[list[Run], list[Run]]:
    seeds = sorted({r.seed for r in runs_a} & {r.seed for r in runs_b})
    if not seeds:
        raise BenchError(f"no training seed in common between {runs_a[0].result['method']} and "
                         f"{runs_b[0].result['method']}; run both with the same seeds")
    return [r for r in runs_a if r.seed in seeds], [r for r in runs_b if r.seed in seeds]


def head_to_head(runs_a: list[Run], runs_b: list[Run], scorer: str) -> dict:
    """Win rate of A over B on one scorer, paired by (prompt, eval seed) within matching training
    seeds, with the same statistics as vs base (seed-aware over >= 2 common seeds)."""
    runs_a, runs_b = _common_seeds(runs_a, runs_b)
    keys = ["train_seed", "prompt_id", "seed"]
    merged = pooled_scores(runs_a)[keys + [scorer]].merge(pooled_scores(runs_b)[keys + [scorer]], on=keys,
                                                          suffixes=("_a", "_b"))
    sc, ev = runs_a[0].result["scorers"][scorer], runs_a[0].result["identity"]["eval"]
    return st.win_rate(merged[f"{scorer}_a"], merged[f"{scorer}_b"], merged["prompt_id"], sc["tie_tolerance"],
                       sc["higher_is_better"], merged["train_seed"], ev.get("ci", 0.95))


def winrate_gain(runs_a: list[Run], runs_b: list[Run], scorers: list[str]) -> dict[str, "st.Estimate"]:
    """Gain in win rate vs base of A over B, per scorer and averaged over scorers ("mean"): the
    per-image difference of A's and B's outcomes against the same base image, paired on prompt,
    eval seed and training seed (common seeds only), with the seed-aware CI and test of a zero gain."""
    runs_a, runs_b = _common_seeds(runs_a, runs_b)
    keys = ["train_seed", "prompt_id", "seed"]

    def frame(runs):
        df = pooled_scores(runs)
        out = df[keys].copy()
        for n in scorers:
            sc = runs[0].result["scorers"][n]
            out[n] = st.outcomes(df[n], df[f"base_{n}"], sc["tie_tolerance"], sc["higher_is_better"])
        return out
    m = frame(runs_a).merge(frame(runs_b), on=keys, suffixes=("_a", "_b"))
    d = pd.DataFrame({n: m[f"{n}_a"] - m[f"{n}_b"] for n in scorers})
    out = {n: st.estimate(st.cells(d[n], m["prompt_id"], m["train_seed"]), null=0.0, bounds=(-1.0, 1.0))
           for n in scorers}
    out["mean"] = st.estimate(st.cells(d.mean(axis=1), m["prompt_id"], m["train_seed"]), null=0.0,
                              bounds=(-1.0, 1.0))
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
                rows.append([r.label, str(r.n_seeds)] + cells + [Cell(r.mean_win_rate)])
                for n, c in zip(scorers, cells):
                    ours[(key, n)] = ours[(r.label, n)] = c
        _mark_best(rows, 2)
        tables.append(Table(spec.title, ["method", "seeds"] + scorers + ["mean"], rows, _ci_note(runs)))
        for a, b in spec.output.get("versus") or []:
            ra, rb = runs_of(a), runs_of(b)
            if not ra or not rb:
                raise BenchError(f"paper {spec.name}: versus [{a}, {b}] names a row with no jobs")
            cells = []
            for n in scorers:
                h = head_to_head(ra, rb, n)
                cells.append(Cell(h["win_rate"], h["ci_low"], h["ci_high"], seed_aware=h["n_seeds"] > 1, p=h["p"]))
                ours[(f"{a} vs {b}", n)] = cells[-1]
            tables.append(Table(f"{spec.title}: head to head", ["A vs B", "seeds"] + scorers,
                                [[f"{a} vs {b}", str(h["n_seeds"])] + cells],
                                "Win rate of A over B, paired by prompt, eval seed and training seed; 95% CI "
                                "seed-aware over >= 2 common training seeds (bench.statistics)."))
    elif kind == "gain":
        method, ref = spec.output["method"], spec.output["reference"]
        rows, means = [], []
        for bb in sorted(lb.backbone.unique()):
            sub = lb[lb.backbone == bb]
            ra = [by_dir[d] for d in ";".join(sub[sub.method == method].job_dirs).split(";") if d]
            rb = [by_dir[d] for d in ";".join(sub[sub.method == ref].job_dirs).split(";") if d]
            if not ra or not rb:
                continue
            g = winrate_gain(ra, rb, scorers)
            means.append(g["mean"])
            cells = [Cell.of(g[n], signed=True) for n in scorers] + [Cell.of(g["mean"], signed=True)]
            rows.append([bb, str(g["mean"].n_seeds)] + cells)
            ours[(bb, "gain")] = cells[-1]
        if means:
            c = Cell.of(st.combine(means, null=0.0), signed=True)
            rows.append(["mean over backbones", str(min(e.n_seeds for e in means))]
                        + [Cell(float("nan"))] * len(scorers) + [c])
            ours[("mean over backbones", "gain")] = c
        tables.append(Table(spec.title, ["backbone", "seeds"] + [f"Δ {n}" for n in scorers] + ["Δ mean"], rows,
                            f"Δ: win rate vs base of {method} minus that of {ref}, paired on prompt, eval seed and "
                            "training seed; 95% CI seed-aware over >= 2 common training seeds (bench.statistics); "
                            "mean over backbones: independent backbones combined (variances add)."))
    elif kind == "attributes":
        from bench.world import NEGATIVE_ATTRIBUTES
        rows = []
        first = True
        for key in rows_wanted:
            for _, r in _row(lb, key).iterrows():
                df = pooled_scores([by_dir[d] for d in r.job_dirs.split(";")])
                if first:
                    rows.append(["base (reference)", Cell.of(st.mean_estimate(df, "base_n_negative"), digits=2),
                                 Cell(0.0, 0.0, 0.0, digits=2, signed=True)]
                                + [Cell(float(df[f"base_{a}"].mean()), digits=2) for a in NEGATIVE_ATTRIBUTES])
                    ours[("base", "n_negative")] = rows[-1][1]
                    first = False
                if r.method == "base":
                    continue
                df["_delta"] = df["n_negative"] - df["base_n_negative"]
                rows.append([r.label, Cell.of(st.mean_estimate(df, "n_negative"), digits=2),
                             Cell.of(st.mean_estimate(df, "_delta", null=0.0), digits=2, signed=True)]
                            + [Cell(float(df[a].mean()), digits=2) for a in NEGATIVE_ATTRIBUTES])
                ours[(key, "n_negative")] = ours[(r.label, "n_negative")] = rows[-1][1]
                ours[(key, "n_negative_delta")] = ours[(r.label, "n_negative_delta")] = rows[-1][2]
        tables.append(Table(spec.title, ["method", "negatives / image", "Δ vs base"]
                            + [f"−{a}" for a in NEGATIVE_ATTRIBUTES], rows,
                            "Mean count of negative attributes per image (lower is better) with its 95% CI; Δ paired "
                            "with the base image of the same prompt and seed. CIs seed-aware where a row pools >= 2 "
                            "training seeds (bench.statistics)."))
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
               "ours": {f"{k[0]}|{k[1]}": {"value": c.value, "ci_low": c.low, "ci_high": c.high, "p": c.p,
                                            "seed_aware": c.seed_aware}
                        for k, c in ours.items()},
               "paper": spec.paper}
    _write(out / "summary.json", json.dumps(summary, indent=2, default=float))
    if kind in ("winrate", "ablation"):
        fig_winrate_bars(pd.concat([_row(lb, k) for k in rows_wanted]).drop_duplicates("config"), scorers,
                         out / "winrates")
    log.info("paper %s: %s", spec.name, out / "README.md")
    return out / "README.md"
