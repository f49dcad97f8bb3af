"""Wall time of the commands that only read the config, and of every bad input (issue 20).

    python benchmarks/front_door.py [--before DIR] [--repeats 5]

`bench --help`, `bench list` and `bench run --help`: the median of `--repeats` runs of
`python -m bench ...` in fresh processes; with `--before DIR` (a checkout of an older commit, e.g.
`git worktree add /tmp/before 44f0902`) the same commands from that tree, interleaved with this
one's so that both see the same machine load. Then each bad input of tests/test_cli.py's table,
once, in a fresh process on a fresh temp directory, slowest first (the unwritable-directory
case is left out when running as root, for whom that directory is writable). Prints JSON with
wall and CPU seconds.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIGHT = [["--help"], ["list"], ["run", "--help"]]


def wall(args: list[str], tree: Path, cwd: Path, env: dict) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds (user + system), exit status) of `python -m bench ARGS`. The CPU
    time does not grow with other load on the machine; the wall time does."""
    r0, t = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    rc = subprocess.run([sys.executable, "-m", "bench", *args], cwd=cwd, env={**env, "PYTHONPATH": str(tree)},
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
    s, r1 = time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN)
    return s, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime), rc


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
            times: dict[str, list[tuple]] = {k: [] for k in trees}
            for _ in range(a.repeats):
                for name, tree in trees.items():        # interleaved: both see the same load
                    times[name].append(wall(args, tree, Path(tmp), env))
            out["light"][" ".join(args)] = {
                k: {"median_s": round(statistics.median(x[0] for x in v), 2),
                    "median_cpu_s": round(statistics.median(x[1] for x in v), 2),
                    "runs_s": [round(x[0], 2) for x in v]} for k, v in times.items()}
            print(json.dumps({" ".join(args): out["light"][" ".join(args)]}), file=sys.stderr)
    spec = importlib.util.spec_from_file_location("test_cli", ROOT / "tests" / "test_cli.py")
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    for args, _ in table.BAD_INPUTS:
        with tempfile.TemporaryDirectory() as tmp:
            files = table.make_files(Path(tmp))
            if "{readonly}" in " ".join(args) and os.access(files["readonly"], os.W_OK):
                continue                                # as root that directory is writable: a real job
            env["DIFFPREF_CACHE"] = str(Path(tmp) / "cache")
            s, cpu, rc = wall([x.format(**files) for x in args], ROOT, Path(tmp), env)
            out["bad_inputs"].append({"args": " ".join(args), "wall_s": round(s, 2), "cpu_s": round(cpu, 2),
                                      "exit": rc})
    out["bad_inputs"].sort(key=lambda r: -r["wall_s"])
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
