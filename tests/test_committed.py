"""The committed results are found by today's code: every paper spec's jobs, named by the current
config schema and identity rules, are complete directories under results/ (an option added to a
config without its neutral value in bench.results.ADDED_OPTIONS would rename them)."""
from pathlib import Path

import pytest

from bench.paper import _sweep, load_spec, spec_job_dirs
from bench.results import is_complete

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted(p.stem for p in (ROOT / "paper").glob("*.yaml"))


@pytest.mark.parametrize("name", SPECS)
def test_every_paper_spec_job_is_a_committed_complete_run(name, monkeypatch):
    monkeypatch.chdir(ROOT)                      # specs name results/ relative to the repository
    spec = load_spec(name)
    fixed, sweep = _sweep(spec)
    dirs = spec_job_dirs(fixed, sweep, [])
    missing = [d.name for d in dirs if not is_complete(d)]
    assert dirs and not missing, missing


@pytest.mark.parametrize("name", SPECS)
def test_every_committed_paper_output_regenerates_from_its_runs(name, monkeypatch, tmp_path):
    """`bench paper <name>` rebuilds the committed tables from the committed runs (run time and
    job count taken from the committed summary), also where a run predates a world attribute."""
    import json

    from bench.paper import write_paper_output
    from bench.results import load_runs
    monkeypatch.chdir(ROOT)
    spec = load_spec(name)
    fixed, sweep = _sweep(spec)
    dirs = list(dict.fromkeys(spec_job_dirs(fixed, sweep, [])))
    committed = ROOT / "paper" / name
    summary = json.loads((committed / "summary.json").read_text())
    runs = load_runs(None, [], dirs=dirs)
    path = write_paper_output(spec, runs, tmp_path, wall_s=summary["wall_s"], n_run=summary["jobs_run"])
    assert path.read_text() == (committed / "README.md").read_text()


def test_the_committed_claims_table_regenerates_from_the_committed_files(monkeypatch, tmp_path):
    from bench.claims import write_claims
    monkeypatch.chdir(ROOT)
    out = write_claims(Path("paper"), tmp_path / "claims.md")
    assert out.read_text() == (ROOT / "paper" / "claims.md").read_text()
