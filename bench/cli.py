"""`python -m bench <command> [overrides]`.

    run [+suite=NAME] [overrides]   one job, or a suite (a Hydra multirun sweep)
    pretrain [--export] [overrides] pretrain the configured tiny backbone, report its base quality;
                                    --export writes the shipped weights into bench/assets/
    list                            every registry entry with one line each, and the suites
    leaderboard [RESULTS_DIR]       regenerate RESULTS_DIR/leaderboard.csv from its result files

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
    if group == "suite":
        return sorted(p.stem for p in (SWEEPS / "suite").glob("*.yaml"))
    import bench.backbones  # noqa: F401
    import methods  # noqa: F401
    return {"method": METHODS, "backbone": BACKBONES}[group].names()


def check_overrides(args: list[str]) -> None:
    """Unknown config-group choices get one line naming the valid ones (before Hydra sees them)."""
    for a in args:
        key, sep, value = a.lstrip("+~").partition("=")
        if not sep or key not in ("backbone", "method", "suite") or "(" in value:
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
    from bench.runner import run_job
    _guarded(run_job, cfg)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def pretrain(cfg: DictConfig) -> None:
    def go(cfg):
        from bench.runner import pretrain_and_report
        pretrain_and_report(cfg, export="--export" in EXTRA_FLAGS)
    _guarded(go, cfg)


EXTRA_FLAGS: list[str] = []


def cmd_list() -> None:
    import methods  # noqa: F401
    import scorers  # noqa: F401
    import bench.backbones  # noqa: F401
    for reg in (METHODS, SCORERS, BACKBONES):
        print(f"{reg.kind}s:")
        for name, doc in reg.describe():
            print(f"  {name:14s} {doc}")
    print("suites:")
    for name in group_options("suite"):
        lines = (SWEEPS / "suite" / f"{name}.yaml").read_text().splitlines()
        first = next((ln.lstrip("# ") for ln in lines if ln.startswith("#") and "@package" not in ln), "")
        print(f"  {name:14s} {first}")


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
            print(out if out else f"no result files under {root}/runs")
        elif cmd in ("run", "pretrain"):
            from bench.runner import register_configs
            register_configs()
            check_overrides(rest)
            EXTRA_FLAGS[:] = [a for a in rest if a.startswith("--export")]
            sys.argv = [sys.argv[0]] + [a for a in rest if a not in EXTRA_FLAGS]
            {"run": run, "pretrain": pretrain}[cmd]()
        else:
            raise BenchError(f"unknown command {cmd!r}; valid: run, pretrain, list, leaderboard")
    except BenchError as e:
        _fail(str(e))
    return 0
