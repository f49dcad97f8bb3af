"""`report`: every table, figure and image grid of a results directory, and the HTML page that
shows them all (render_html: one self-contained file, images embedded). See the bench.report
package docstring for the files it writes.
"""
from __future__ import annotations

import base64
import html
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bench.files import write_text
from bench.registry import BenchError
from bench.report.figures import fig_attribute_heatmap, fig_sensitivity, fig_training, fig_winrate_bars
from bench.report.grids import image_grids
from bench.report.tables import (Table, ablation_tables, attribute_frame, attribute_tables, power_tables, scorers_of,
                                 winrate_tables)
from bench.results import leaderboard, load_runs, write_leaderboard

log = logging.getLogger(__name__)


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
    """Every output of `python -m bench report` (see the bench.report package docstring)."""
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

