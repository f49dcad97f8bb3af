"""The report's tables: the table type (Cell, Table: Markdown, LaTeX and HTML) and every table
`python -m bench report` writes, each a pure function of the leaderboard and the runs' result files.

    winrate_tables      method x scorer per backbone, win rate vs base [95% CI]; bold only where the
                        best multi-seed row's CI lies above every other row's
    power_tables        minimum detectable win-rate difference per suite design, and the variance
                        components it comes from (configs with >= 2 training seeds)
    ablation_tables     one per (backbone, method) whose runs differ in a config key, and per-seed rows
                        where a config ran with several seeds
    attribute_tables    shapes-world attribute rates, negative-attribute count [CI], and per attribute
                        the images fixed / broken vs base (clustered test's p)

Every interval and test comes from bench.statistics. bench.paper builds its tables from the same
pieces (Cell, Table, winrate_cell, mark_best, ci_note).
"""
from __future__ import annotations

import html
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench import statistics as st
from bench.results import Run, config_key, flat_identity, pooled_scores, short_keys, varying_keys, vs_base


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


def mark_best(rows: list[list], first_col: int) -> None:
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


def winrate_cell(row: pd.Series, name: str) -> Cell:
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


def ci_note(runs: list[Run]) -> str:
    return CI_NOTE


def winrate_tables(lb: pd.DataFrame, runs: list[Run]) -> list[Table]:
    """Method x scorer per backbone: win rate vs base [CI]; the base row itself is left out."""
    scorers = scorers_of(runs)
    tables = []
    for bb, g in lb[lb.method != "base"].groupby("backbone", sort=True):
        rows = [[r.label, str(r.n_seeds)] + [winrate_cell(r, n) for n in scorers]
                + [Cell(r.mean_win_rate), Cell(r.helm_mean_win_rate)] for _, r in g.iterrows()]
        mark_best(rows, 2)      # the two summary columns carry no CI, so nothing is marked in them
        tables.append(Table(f"{bb}: win rate vs base", ["method", "seeds"] + scorers + ["mean", "HELM mean win rate"],
                            rows, ci_note(runs) + power_note(runs, bb, scorers)))
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


# ----------------------------------------------------------------------------- ablations

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
                rows.append([str(ident.get(a)) for a in axes] + [row.seeds] + [winrate_cell(row, n) for n in scorers]
                            + [Cell(row.mean_win_rate)])
            rows.sort(key=lambda r: [_sort_key(v) for v in r[:len(axes)]])
            mark_best(rows, len(axes) + 1)
            out.append((f"ablation-{bb}-{method}",
                        Table(f"{bb} / {method}: ablation over {', '.join(names[a] for a in axes)}",
                              [names[a] for a in axes] + ["seeds"] + scorers + ["mean"], rows, ci_note(runs))))
        multi = g[g.n_seeds > 1]
        if len(multi):
            rows = []
            for _, row in multi.iterrows():
                for m in sorted((by_dir[d] for d in row.job_dirs.split(";")), key=lambda r: r.seed):
                    rows.append([row.label, str(m.seed)] + [_vs_base_cell([m], n) for n in scorers])
                rows.append([row.label, "pooled (seed-aware)"] + [winrate_cell(row, n) for n in scorers])
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


# ----------------------------------------------------------------------------- attributes

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
