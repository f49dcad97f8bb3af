"""Each bad input stops with one line on stderr naming the problem and the fix, exit status 2."""
import logging

import pytest

from bench.cli import main


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    err = capsys.readouterr().err.strip().splitlines()
    return e.value.code, err[-1] if err else ""


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)      # Hydra's output dirs land in the test's temp dir
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers      # Hydra points logging at this test's captured streams
    root.setLevel(level)


@pytest.mark.parametrize("args,expected", [
    (["run", "method=dpoo"], "error: unknown method 'dpoo'; valid: balanced_dpo, base, cpo, dpo, kto, sft"),
    (["run", "backbone=sd16"], "error: unknown backbone 'sd16'; valid: sd15, sd21, sd21-base, sdxl, tiny-sd15, tiny-sd21, tiny-sdxl"),
    (["run", "+suite=nope"], "error: unknown suite 'nope'; valid: full, seeds, smoke"),
    (["run", "method=sft,dpoo"], "error: unknown method 'dpoo'; valid: balanced_dpo, base, cpo, dpo, kto, sft"),
    (["run", "+method.typo=1"], "error: unknown key 'method.typo'; valid keys of method: name, beta, half"),
    (["run", "+train.lrr=1"], "error: unknown key 'train.lrr'; valid keys of train: steps,"),
    (["run", "+foo=1"], "error: unknown top-level key(s) ['foo']; valid:"),
    (["run", "eval.max_prompts=0"], "error: the eval prompt set is empty (split 'eval': 0 prompts"),
    (["run", "world.colours=[red]"], "error: the eval prompt set is empty"),
    (["run", "eval.scorers=[gold,fidelty]"], "error: unknown scorer 'fidelty' (did you mean 'fidelity'?); valid:"),
    (["run", "data.source=file"], "error: data.source=file needs data.path="),
    (["run", "data.source=s3"], "error: unknown data.source 's3'; valid: world, file"),
    (["run", "method=sft", "backbone.weights=/nonexistent"],
     "error: no pipeline at /nonexistent (model_index.json missing); pass backbone.weights=<dir"),
    (["frobnicate"], "error: unknown command 'frobnicate'; valid: run, pretrain, list, leaderboard"),
    # ranges, rejected before any sampling or data generation (issue 20)
    (["run", "method=dpo", "train.steps=0"], "error: train.steps must be >= 1, got 0"),
    (["run", "method=dpo", "train.steps=-1"], "error: train.steps must be >= 1, got -1"),
    (["run", "method=dpo", "train.batch_size=0"], "error: train.batch_size must be >= 1, got 0"),
    (["run", "method=dpo", "train.lr=0"], "error: train.lr must be a finite number > 0, got 0.0"),
    (["run", "method=dpo", "method.beta=nan"], "error: method.beta must be a finite number > 0, got nan"),
    (["run", "method=kto", "method.beta=-1"], "error: method.beta must be a finite number > 0, got -1.0"),
    (["run", "method=dpo", "data.n_pairs=0"], "error: data.n_pairs must be >= 1, got 0"),
    (["run", "method=base", "paths.results=/dev/null"],
     "error: paths.results=/dev/null is not a directory; point paths.results at a directory"),
    (["run", "method=base", "paths.cache=/dev/null/cache"],
     "error: paths.cache=/dev/null/cache cannot be created: /dev/null is not a directory"),
    (["run", "train.steps=abc"], "error: Error merging override train.steps=abc: Value 'abc' of type 'str' could "
                                 "not be converted to Integer; fix that override"),
    (["run", "-m", "method=dpo,kto", "seed=abc"], "error: Error merging override seed=abc: Value 'abc'"),
    (["leaderboard", "."], "error: no readable result files under runs"),
])
def test_bad_input_one_line_exit_2(args, expected, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("DIFFPREF_CACHE", str(tmp_path / "cache"))
    code, line = run_cli(args, capsys)
    assert code == 2
    assert line.startswith(expected), line


def test_list_prints_every_registry(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("dpo", "sft", "base", "kto", "balanced_dpo", "cpo", "gold", "fidelity", "aesthetic",
                 "preference", "tiny-sd15", "sd15", "full", "smoke"):
        assert f"  {name} " in out
