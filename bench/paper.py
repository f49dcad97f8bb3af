"""Paper specs: `python -m bench paper NAME|SPEC.yaml [--out DIR] [overrides...]`.

A spec, paper/NAME.yaml (format: paper/README.md), names the jobs a paper's table needs (a suite
or its own sweep, expanded with Hydra's override grammar) and the paper's reported numbers.
run_paper computes the job directory of every job (spec_job_dirs, exactly as bench.runner names
it), runs the missing ones with the `run` callable it is given (the CLI passes its own `main`, so
they run as `python -m bench run`: the same Hydra multirun path; finished jobs are skipped), then
write_paper_output regenerates the spec's table beside the paper's reported numbers into
paper/NAME/ (README.md, table.tex, summary.json, and the win-rate figure for winrate and ablation
specs). Its tables are built from bench.report.tables; head_to_head and winrate_gain compare two
methods' runs with the statistics of bench.statistics.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bench import statistics as st
from bench.files import write_text
from bench.registry import BenchError
from bench.report.figures import fig_winrate_bars
from bench.report.tables import Cell, Table, ci_note, mark_best, scorers_of, winrate_cell
from bench.results import Run, leaderboard, load_runs, pooled_scores

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent.parent
PAPER_DIR = ROOT / "paper"


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


def _budgets(lb: pd.DataFrame) -> dict[str, int]:
    """{method: optimizer steps} of the trained rows when they differ between methods, else {}."""
    trained = lb[lb.method != "base"]
    steps = {m: sorted({int(x) for x in g.budget_steps}) for m, g in trained.groupby("method", sort=False)}
    if len({tuple(v) for v in steps.values()}) <= 1:
        return {}
    return {m: v[0] if len(v) == 1 else "/".join(map(str, v)) for m, v in steps.items()}


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
                cells = [winrate_cell(r, n) for n in scorers]
                rows.append([r.label, str(r.n_seeds)] + cells + [Cell(r.mean_win_rate)])
                for n, c in zip(scorers, cells):
                    ours[(key, n)] = ours[(r.label, n)] = c
        mark_best(rows, 2)
        tables.append(Table(spec.title, ["method", "seeds"] + scorers + ["mean"], rows, ci_note(runs)))
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
        neg: list[str] = []
        for key in rows_wanted:
            for _, r in _row(lb, key).iterrows():
                df = pooled_scores([by_dir[d] for d in r.job_dirs.split(";")])
                if first:
                    # the attributes the runs' score files hold (runs made before an attribute
                    # existed have no column for it)
                    neg = [a for a in NEGATIVE_ATTRIBUTES if a in df and f"base_{a}" in df]
                    rows.append(["base (reference)", Cell.of(st.mean_estimate(df, "base_n_negative"), digits=2),
                                 Cell(0.0, 0.0, 0.0, digits=2, signed=True)]
                                + [Cell(float(df[f"base_{a}"].mean()), digits=2) for a in neg])
                    ours[("base", "n_negative")] = rows[-1][1]
                    first = False
                if r.method == "base":
                    continue
                df["_delta"] = df["n_negative"] - df["base_n_negative"]
                rows.append([r.label, Cell.of(st.mean_estimate(df, "n_negative"), digits=2),
                             Cell.of(st.mean_estimate(df, "_delta", null=0.0), digits=2, signed=True)]
                            + [Cell(float(df[a].mean()), digits=2) for a in neg])
                ours[(key, "n_negative")] = ours[(r.label, "n_negative")] = rows[-1][1]
                ours[(key, "n_negative_delta")] = ours[(r.label, "n_negative_delta")] = rows[-1][2]
        tables.append(Table(spec.title, ["method", "negatives / image", "Δ vs base"]
                            + [f"−{a}" for a in neg], rows,
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
    budgets = _budgets(lb)
    if budgets:
        md += ["Training budgets differ between the rows (optimizer steps; a method's default budget is in "
               "`python -m bench list`): "
               + ", ".join(f"{m} {n} steps" for m, n in budgets.items())
               + ". A comparison between two of them is not at equal training.", ""]
    if spec.notes:
        md += [spec.notes.strip(), ""]
    md += [t.markdown() for t in tables] + [beside_t.markdown()]
    write_text(out / "README.md", "\n".join(md))
    write_text(out / "table.tex", "\n".join(t.latex() for t in tables + [beside_t]))
    summary = {"spec": spec.name, "title": spec.title, "citation": spec.citation, "jobs": [r.path.name for r in runs],
               "git_sha": shas, "wall_s": wall_s, "jobs_run": n_run,
               "ours": {f"{k[0]}|{k[1]}": {"value": c.value, "ci_low": c.low, "ci_high": c.high, "p": c.p,
                                            "seed_aware": c.seed_aware}
                        for k, c in ours.items()},
               "paper": spec.paper}
    if budgets:
        summary["budgets"] = budgets
    write_text(out / "summary.json", json.dumps(summary, indent=2, default=float))
    if kind in ("winrate", "ablation"):
        fig_winrate_bars(pd.concat([_row(lb, k) for k in rows_wanted]).drop_duplicates("config"), scorers,
                         out / "winrates")
    log.info("paper %s: %s", spec.name, out / "README.md")
    return out / "README.md"
