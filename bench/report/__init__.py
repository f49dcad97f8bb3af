"""The report: every table, figure, image grid and the HTML page as a pure function of result files.

    python -m bench report [RESULTS_DIR] [--out DIR] [--prompts ID,ID,...]

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

Modules: tables (Cell, Table and the table builders), figures, grids (image grids from the jobs'
sample sheets), page (report, render_html, ReportOutput). Paper specs (`python -m bench paper`)
live in bench.paper, which builds on bench.report.tables.
"""
from bench.report.page import ReportOutput, render_html, report

__all__ = ["ReportOutput", "render_html", "report"]
