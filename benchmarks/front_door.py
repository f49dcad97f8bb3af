"""Wall time of the commands that only read the config, and of every bad input (issue 20).

    python benchmarks/front_door.py [--before DIR] [--repeats 5]

`bench --help`, `bench list` and `bench run --help`: the median of `--repeats` runs of
`python -m bench ...` in fresh processes; with `--before DIR` (a checkout of an older commit, e.g.
`git worktree add /tmp/before 44f0902`) the same commands from that tree, interleaved with this
one's so that both see the same machine load. Then each bad input of tests/test_cli.py's table,
once, in a fresh process on a fresh temp directory, slowest first. Prints JSON.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIGHT = [["--help"], ["list"], ["run", "--help"]]


def wall(args: list[str], tree: Path, cwd: Path, env: dict) -> tuple[float, int]:
    t = time.perf_counter()
    rc = subprocess.run([sys.executable, "-m", "bench", *args], cwd=cwd, env={**env, "PYTHONPATH": str(tree)},
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
    return time.perf_counter() - t, rc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, default=None, help="an older checkout to compare with")
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    trees = {"after": ROOT} | ({"before": a.before.resolve()} if a.before else {})
    out: dict = {"light": {}, "bad_inputs": []}
    with tempfile.TemporaryDirectory() as tmp:
        env["DIFFPREF_CACHE"] = str(Path(tmp) / "cache")
        for args in LIGHT:
            times: dict[str, list[float]] = {k: [] for k in trees}
            for _ in range(a.repeats):
                for name, tree in trees.items():        # interleaved: both see the same load
                    times[name].append(wall(args, tree, Path(tmp), env)[0])
            out["light"][" ".join(args)] = {k: {"median_s": round(statistics.median(v), 2),
                                               "runs_s": [round(x, 2) for x in v]} for k, v in times.items()}
            print(json.dumps({" ".join(args): out["light"][" ".join(args)]}), file=sys.stderr)
    spec = importlib.util.spec_from_file_location("test_cli", ROOT / "tests" / "test_cli.py")
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    for args, _ in table.BAD_INPUTS:
        with tempfile.TemporaryDirectory() as tmp:
            files = table.make_files(Path(tmp))
            env["DIFFPREF_CACHE"] = str(Path(tmp) / "cache")
            s, rc = wall([x.format(**files) for x in args], ROOT, Path(tmp), env)
            out["bad_inputs"].append({"args": " ".join(args), "wall_s": round(s, 2), "exit": rc})
    out["bad_inputs"].sort(key=lambda r: -r["wall_s"])
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
