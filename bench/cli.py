"""`python -m bench <command> [overrides]`.

    run [+suite=NAME] [overrides]   one job, or a suite (a Hydra multirun sweep)
    pretrain [--export[=DIR]] [overrides]  pretrain the configured tiny backbone, report its base
                                    quality; --export writes the shipped weights into
                                    bench/assets/[DIR/]<name> (world v2's: --export=world-v2)
    list                            every registry entry with one line each, and the suites
    leaderboard [RESULTS_DIR]       regenerate RESULTS_DIR/leaderboard.csv from its result files
    report [RESULTS_DIR] [--out DIR] [--prompts ID,...]
                                    leaderboard, win-rate/ablation/attribute tables (md, tex), figures,
                                    image grids and report.html, all from result files (bench.report)
    paper NAME|SPEC.yaml [--out DIR] [overrides]
                                    run the jobs a paper/ spec still lacks (as `run` does), then
                                    regenerate its table beside the paper's numbers
    claims [--out FILE]             the papers' claims against ours, with verdicts, from the suite's
                                    runs and paper/*/summary.json (paper/claims.md; bench.claims)
    tune +study=NAME [tune.FIELD=V ...] [overrides]
                                    one Optuna worker on study sweeps/study/NAME.yaml (bench.tune);
                                    start as many as you like on one storage
    sbatch [overrides]              print the sbatch script `run [overrides]` would submit with
                                    hydra/launcher=slurm (bench.slurm), submitting nothing

Hydra owns argv for `run` and `pretrain`; the subcommand is popped first (hydra#215: Hydra does
not extend argparse). Bad input exits with status 2 and one line on stderr.
"""
from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from bench.registry import BACKBONES, METHODS, SCORERS, BenchError

SWEEPS = Path(__file__).resolve().parent.parent / "sweeps"



def _fail(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


def group_options(group: str) -> list[str]:
    if group in ("suite", "study", "preset"):
        return sorted(p.stem for p in (SWEEPS / group).glob("*.yaml"))
    import bench.backbones  # noqa: F401
    import methods  # noqa: F401
    return {"method": METHODS, "backbone": BACKBONES}[group].names()


def check_overrides(args: list[str]) -> None:
    """Unknown config-group choices get one line naming the valid ones (before Hydra sees them)."""
    for a in args:
        key, sep, value = a.lstrip("+~").partition("=")
        if not sep or key not in ("backbone", "method", "suite", "study", "preset") or "(" in value:
            continue
        if key == "study" and value.endswith((".yaml", ".yml")):     # a study spec given by path
            continue
        options = group_options(key)
        for v in value.split(","):
            if v not in options:
                raise BenchError(f"unknown {key} {v!r}; valid: {', '.join(options)}")


def _guarded(fn, cfg):
    try:
        return fn(cfg)
    except BenchError as e:
        _fail(str(e))


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def run(cfg: DictConfig) -> None:
    from tqdm.contrib.logging import logging_redirect_tqdm
    from bench.runner import run_job
    with logging_redirect_tqdm():        # log lines go above the progress bars, never through them
        _guarded(run_job, cfg)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def pretrain(cfg: DictConfig) -> None:
    def go(cfg):
        from bench.runner import pretrain_and_report
        flag = next((a for a in EXTRA_FLAGS if a.split("=")[0] == "--export"), None)
        pretrain_and_report(cfg, export=None if flag is None else flag.partition("=")[2])
    _guarded(go, cfg)


EXTRA_FLAGS: list[str] = []


def cmd_list() -> None:
    import methods  # noqa: F401
    import scorers  # noqa: F401
    import bench.backbones  # noqa: F401
    for reg in (METHODS, SCORERS, BACKBONES):
        print(f"{reg.kind}s:")
        for name, doc in reg.describe():
            if reg is METHODS and name != "base":     # the training budget when train.steps is unset
                doc = f"{doc} [{reg.config(name).default_steps} steps]"
            print(f"  {name:14s} {doc}")
    from bench.data import real as D
    for title, table in (("pair datasets (bench.data.real.load_pairs)", D.PAIR_SOURCES), ("prompt sets (eval.prompt_set)", D.PROMPT_SETS)):
        print(f"{title}:")
        for name, fn in table.items():
            doc = (fn.__doc__ or "").strip().splitlines()
            print(f"  {name:14s} {doc[0] if doc else ''}".rstrip())
    for group in ("suite", "study", "preset"):
        print(f"{ {'study': 'studies', 'suite': 'suites', 'preset': 'presets (+preset=NAME)'}[group]}:")
        for name in group_options(group):
            lines = (SWEEPS / group / f"{name}.yaml").read_text().splitlines()
            first = next((ln.lstrip("# ") for ln in lines if ln.startswith("#") and "@package" not in ln), "")
            print(f"  {name:14s} {first}")


def _subparser(prog: str, description: str):
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message):        # one line, exit 2, like every other bad input
            raise BenchError(f"{prog}: {message}")
    return Parser(prog=f"python -m bench {prog}", description=description)


def cmd_report(rest: list[str]) -> None:
    p = _subparser("report", "Tables, figures, image grids and report.html from result files.")
    p.add_argument("results", nargs="?", default="results", help="directory that holds runs/ (default: results)")
    p.add_argument("--out", default=None, help="output directory (default: the results directory)")
    p.add_argument("--prompts", default=None, help="comma-separated eval prompt ids for the image grids")
    a = p.parse_args(rest)
    from bench.report import report
    rep = report(Path(a.results), Path(a.out) if a.out else None,
                 prompts=[x for x in a.prompts.split(",") if x] if a.prompts else None)
    for line in rep.notes:               # missing/corrupt files were already logged as warnings
        print(f"note: {line}", file=sys.stderr)
    print(rep.out / "report.html")


def cmd_paper(rest: list[str]) -> None:
    p = _subparser("paper", "Run a paper/ spec's missing jobs, then regenerate its output.")
    p.add_argument("spec", help="spec name under paper/ (e.g. diffusion_dpo) or a path to a spec .yaml")
    p.add_argument("--out", default=None, help="output directory (default: paper/<name>/)")
    p.add_argument("--dry-run", action="store_true", help="list the spec's jobs and the missing ones; run nothing")
    a, overrides = p.parse_known_args(rest)
    bad = [o for o in overrides if o.startswith("-") or "=" not in o]
    if bad:
        raise BenchError(f"paper: unrecognised argument {bad[0]!r}; pass Hydra overrides as key=value")
    check_overrides(overrides)
    from bench.paper import run_paper
    out = run_paper(a.spec, overrides, Path(a.out) if a.out else None, dry_run=a.dry_run, run=main)
    if out:
        print(out)


def cmd_claims(rest: list[str]) -> None:
    p = _subparser("claims", "The papers' claims against ours, from committed files (run from the repository root).")
    p.add_argument("--out", default=None, help="output file (default: paper/claims.md)")
    a = p.parse_args(rest)
    from bench.claims import write_claims
    print(write_claims(Path("paper"), Path(a.out) if a.out else None))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    cmd, rest = argv[0], argv[1:]
    try:
        if cmd == "list":
            cmd_list()
        elif cmd == "leaderboard":
            from bench.results import write_leaderboard
            root = Path(rest[0] if rest else "results")
            if not root.is_dir():
                raise BenchError(f"no results directory at {root}; pass the directory that holds runs/")
            out = write_leaderboard(root)
            if out is None:
                raise BenchError(f"no readable result files under {root / 'runs'}; run a job first "
                                 "(python -m bench run ...) or pass the directory that holds runs/")
            print(out)
        elif cmd == "report":
            cmd_report(rest)
        elif cmd == "paper":
            cmd_paper(rest)
        elif cmd == "claims":
            cmd_claims(rest)
        elif cmd == "tune":
            check_overrides(rest)
            from bench.tune import main as tune_main
            tune_main(rest)
        elif cmd == "sbatch":
            check_overrides(rest)
            from bench.slurm import main as sbatch_main
            sbatch_main(rest)
        elif cmd in ("run", "pretrain"):
            from bench.config import register_configs
            register_configs()
            check_overrides(rest)
            EXTRA_FLAGS[:] = [a for a in rest if a.startswith("--export")]
            informational = {"--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--resolve", "--shell-completion"}
            if cmd == "run" and not informational & {a.split("=")[0] for a in rest}:
                from bench.config import precheck
                precheck([a for a in rest if a not in EXTRA_FLAGS])
            sys.argv = [sys.argv[0]] + [a for a in rest if a not in EXTRA_FLAGS]
            if cmd == "pretrain":        # writes no results: leave the leaderboard alone
                sys.argv.append("~hydra.callbacks.leaderboard")
            {"run": run, "pretrain": pretrain}[cmd]()
        else:
            raise BenchError(f"unknown command {cmd!r}; valid: run, pretrain, list, leaderboard, report, paper, "
                             "claims, tune, sbatch")
    except BenchError as e:
        _fail(str(e))
    return 0
