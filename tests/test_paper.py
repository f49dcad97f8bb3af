"""bench.paper: paper specs (missing methods, shipped specs, Hydra sweep grammar, regeneration
beside the paper's numbers, ambiguous rows, the Hydra run path of missing jobs)."""
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from bench.paper import PAPER_DIR, _sweep, check_registered, load_spec, spec_job_dirs, write_paper_output
from bench.registry import BenchError
from bench.report import report
from bench.results import load_runs
from tests.test_report import fake_job, one_seed_ci, outcome_column


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    err = capsys.readouterr().err.strip().splitlines()
    return e.value.code, err[-1] if err else ""


def write_spec(path: Path, **spec) -> Path:
    import yaml
    path.write_text(yaml.safe_dump(spec))
    return path


def test_paper_spec_with_unregistered_method_fails_in_one_line(tmp_path, capsys):
    spec = write_spec(tmp_path / "fake.yaml", title="t", jobs={"sweep": {"method": ["base", "frobnicate_dpo"]}},
                      output={"kind": "winrate", "rows": ["frobnicate_dpo"]})
    code, line = run_cli(["paper", str(spec)], capsys)
    assert code == 2
    assert line.startswith("error: paper spec 'fake' needs method 'frobnicate_dpo', which is not registered yet; "
                           "registered: "), line
    assert {"base", "dpo", "sft"} <= set(line.split("registered: ")[1].split(", "))
    code, line = run_cli(["paper", "no_such_paper"], capsys)
    assert code == 2 and line.startswith("error: no paper spec 'no_such_paper'; valid: ")


@pytest.mark.parametrize("spec", sorted(p.stem for p in PAPER_DIR.glob("*.yaml")))
def test_shipped_specs_are_well_formed(spec):
    """Every paper/ spec parses; its jobs expand; it needs registered methods or says which are missing."""
    s = load_spec(spec)
    fixed, sweep = _sweep(s)
    assert sweep and s.citation and s.output.get("kind") in ("winrate", "ablation", "gain", "attributes")
    for e in s.paper:
        assert {"row", "ours", "value", "metric", "source"} <= set(e), e
    try:
        check_registered(s, fixed, sweep)
    except BenchError as e:
        assert "which is not registered yet; registered:" in str(e)


def test_spec_sweeps_expand_with_hydra_grammar(tmp_path):
    """YAML lists of lists sweep list-valued keys; ranges and comma strings expand as Hydra's would."""
    spec = write_spec(tmp_path / "lists.yaml", title="t", output={"kind": "ablation"},
                      jobs={"overrides": ["method=balanced_dpo"],
                            "sweep": {"method.voters": [["fidelity", "aesthetic"], ["fidelity"]],
                                      "seed": "range(0,3)", "method.beta": "1000,5000"}})
    fixed, sweep = _sweep(load_spec(str(spec)))
    assert fixed == ["method=balanced_dpo"]
    assert sweep == {"method.voters": ["[fidelity,aesthetic]", "[fidelity]"], "seed": ["0", "1", "2"],
                     "method.beta": ["1000", "5000"]}
    dirs = spec_job_dirs(fixed, {"method.voters": sweep["method.voters"]}, [f"paths.results={tmp_path}"])
    assert len(set(dirs)) == 2       # the voter lists reach the job identity
    bad = write_spec(tmp_path / "bad.yaml", title="t", output={"kind": "ablation"},
                     jobs={"sweep": {"seed": "range(0,"}})
    with pytest.raises(BenchError, match=r"paper spec bad: sweep seed=range\(0, is not a Hydra sweep"):
        _sweep(load_spec(str(bad)))


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)      # Hydra's output dirs land in the test's temp dir
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield tmp_path
    root.handlers[:] = handlers      # Hydra points logging at this test's captured streams
    root.setLevel(level)


def test_paper_regenerates_from_existing_jobs_beside_paper_numbers(in_tmp, capsys):
    """Jobs already in the results dir (the exact dirs `run` would write) are not run again."""
    res = in_tmp / "res"
    extra = [f"paths.results={res}", "eval.n_bootstrap=2000"]
    spec = write_spec(in_tmp / "toy_dpo.yaml", title="toy", citation="Someone et al. 2024",
                      jobs={"sweep": {"method": ["base", "dpo"], "seed": [0]}},
                      output={"kind": "winrate", "rows": ["dpo"]},
                      paper=[{"row": "dpo", "ours": "gold", "value": 0.65, "metric": "human pref", "source": "Tab. 1"},
                             {"row": "dpo", "ours": "aesthetic", "value": None, "metric": "x", "source": "y"}])
    fixed, sweep = _sweep(load_spec(str(spec)))
    dirs = spec_job_dirs(fixed, sweep, extra)
    assert [d.name.split("-")[2] for d in dirs] == ["base", "dpo"]
    fake_job(res, "base", 0, np.zeros(20), np.zeros(20), name=dirs[0].name)
    fake_job(res, "dpo", 0, outcome_column(set(range(8))), np.full(20, 0.05), name=dirs[1].name)
    assert main(["paper", str(spec), *extra]) == 0
    readme = (in_tmp / "toy_dpo" / "README.md").read_text()
    lo, hi = one_seed_ci([1] * 8 + [0] * 2)
    assert f"| dpo | 1 | 0.800 [{lo:.3f}, {hi:.3f}] | 0.500 [0.500, 0.500] |" in readme
    assert f"| dpo | gold | 0.800 [{lo:.3f}, {hi:.3f}] | 0.65 | human pref | Tab. 1 |" in readme
    assert "| dpo | aesthetic | 0.500 [0.500, 0.500] | not transcribed |" in readme
    summary = json.loads((in_tmp / "toy_dpo" / "summary.json").read_text())
    assert summary["jobs_run"] == 0 and sorted(summary["jobs"]) == sorted(d.name for d in dirs)
    assert "0 missing" in capsys.readouterr().err


def test_paper_row_matching_several_of_our_rows_is_named_by_label(in_tmp):
    """An ablation has several rows per method: a paper number beside 'dpo' would be ambiguous."""
    res = in_tmp / "res"
    runs = [fake_job(res, "base", 0, np.zeros(20), np.zeros(20)),
            fake_job(res, "dpo", 0, outcome_column(set(range(8))), np.zeros(20), method_cfg={"beta": 1000.0}),
            fake_job(res, "dpo", 0, outcome_column(set(range(3))), np.zeros(20), method_cfg={"beta": 5000.0})]
    loaded = load_runs(None, [], dirs=runs)
    paper = [{"row": "dpo", "ours": "gold", "value": 0.6, "metric": "m", "source": "s"}]
    spec = load_spec(str(write_spec(in_tmp / "abl.yaml", title="t", citation="c", jobs={"sweep": {"seed": [0]}},
                                      output={"kind": "ablation", "rows": ["dpo"]}, paper=paper)))
    with pytest.raises(BenchError, match=r"paper row 'dpo' matches 2 rows of our table; name one of them as its "
                                         r"row: dpo \(beta=1000\.0\) on tiny-sd15; dpo \(beta=5000\.0\) on tiny-sd15"):
        write_paper_output(spec, loaded, in_tmp / "out")
    assert not (in_tmp / "out").exists()
    spec.paper[0]["row"] = "dpo (beta=5000.0)"
    text = write_paper_output(spec, loaded, in_tmp / "out").read_text()
    lo, hi = one_seed_ci([1] * 3 + [0] * 7)                                        # 3 of 10 prompts won
    assert f"| dpo (beta=5000.0) | gold | 0.300 [{lo:.3f}, {hi:.3f}] | 0.6 | m | s |" in text


def test_paper_runs_missing_jobs_through_run(in_tmp, tiny_pipe_dir, capsys):
    """The Hydra multirun path of `python -m bench run`; the second call finds the job finished.
    Also checks the runner's sample sheet and that the computed job dir is the one run_job wrote."""
    res = in_tmp / "res"
    extra = [f"backbone.weights={tiny_pipe_dir}", f"paths.results={res}", f"paths.cache={in_tmp / 'cache'}",
             "eval.max_prompts=2", "eval.seeds_per_prompt=1", "eval.n_bootstrap=100", "progress=false"]
    spec = write_spec(in_tmp / "toy_base.yaml", title="toy base", citation="-",
                      jobs={"sweep": {"method": ["base"], "seed": [0]}}, output={"kind": "winrate", "rows": ["base"]})
    assert main(["paper", str(spec), *extra]) == 0
    assert "1 missing (running them" in capsys.readouterr().err
    (job,) = list((res / "runs").iterdir())
    assert (job / "result.json").is_file() and (job / "samples.png").is_file()
    meta = json.loads((job / "samples.json").read_text())
    assert len(meta["items"]) == 2 and meta["rows"] == ["base", "model"]
    assert main(["paper", str(spec), *extra]) == 0
    assert "1 job(s), 0 missing" in capsys.readouterr().err
    assert json.loads((in_tmp / "toy_base" / "summary.json").read_text())["jobs"] == [job.name]
    out = report(res, in_tmp / "rep")
    assert (in_tmp / "rep" / "grids" / "grid-tiny-sd15.png").is_file() and not out.problems


def test_budgets_are_named_only_where_the_trained_rows_differ():
    import pandas as pd
    from bench.paper import _budgets
    lb = pd.DataFrame({"method": ["base", "dpo", "dpo", "kto", "sft"], "budget_steps": [0, 1000, 1000, 300, 300]})
    assert _budgets(lb) == {"dpo": 1000, "kto": 300, "sft": 300}
    assert _budgets(lb[lb.method != "dpo"]) == {}                          # kto and sft alike; base ignored
    mixed = pd.DataFrame({"method": ["dpo", "dpo", "kto"], "budget_steps": [300, 1000, 300]})
    assert _budgets(mixed) == {"dpo": "300/1000", "kto": 300}
