"""The front door: each bad input stops with one line on stderr naming the problem and the fix,
exit status 2, before any work and without touching the results or cache directories; the
commands that only read the config answer without importing torch."""
import json
import logging
import os
import re
import subprocess
import sys

import pandas as pd
import pytest

from bench.cli import main
import methods  # noqa: F401  (declares every method, for the parametrization below)
from bench.registry import METHODS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    return e.value.code, capsys.readouterr().err.strip().splitlines()


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)      # Hydra's output dirs land in the test's temp dir
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers      # Hydra points logging at this test's captured streams
    root.setLevel(level)


def pickapic(path, labels):
    """A Pick-a-Pic-format parquet file with one row per (label_0, label_1); the images are never
    decoded by the checks under test."""
    pd.DataFrame({"caption": ["a red circle on a blue background"] * len(labels), "jpg_0": [b"x"] * len(labels),
                  "jpg_1": [b"y"] * len(labels), "label_0": [a for a, _ in labels],
                  "label_1": [b for _, b in labels]}).to_parquet(path, index=False)
    return path


@pytest.fixture
def files(tmp_path):
    return make_files(tmp_path)


def make_files(tmp_path):
    """The bad files of the table, and a results and cache directory that already hold a finished
    job and a cache entry (so that a change to them, not only a new file, would be seen). Also
    used by benchmarks/front_door.py, which times each input."""
    f = tmp_path / "inputs"
    f.mkdir()
    truncated = pickapic(f / "truncated.parquet", [(1.0, 0.0)] * 8)
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    (f / "text.parquet").write_text("caption,label_0\nhello,1\n")
    pd.DataFrame({"caption": ["x"], "label_0": [1.0]}).to_parquet(f / "columns.parquet", index=False)
    pickapic(f / "labels.parquet", [(1.0, 0.0), (0.0, 1.0), (0.3, 0.7)])
    pickapic(f / "nulls.parquet", [(1.0, 0.0), (None, None)])
    (f / "a_file").write_text("not a directory\n")
    (f / "readonly").mkdir(mode=0o500)
    (f / "empty").mkdir()
    (f / "drawbench.json").write_text('["a red cat", "two blue')
    (f / "parti.tsv").write_text("Text\tCategory\nno Prompt column here\tx\n")
    (f / "good_parti.tsv").write_text("Prompt\tCategory\tChallenge\tNote\na red cat\tAnimals\tBasic\t\n")
    (f / "pick_columns" / "data").mkdir(parents=True)          # a Pick-a-Pic directory with a wrong shard
    pd.DataFrame({"caption": ["x"], "label_0": [1.0]}).to_parquet(
        f / "pick_columns" / "data" / "train-00000-of-00001-ab.parquet", index=False)
    (f / "pick_good" / "data").mkdir(parents=True)
    pickapic(f / "pick_good" / "data" / "train-00000-of-00001-ab.parquet", [(1.0, 0.0)])
    pickapic(f / "one_pair.parquet", [(1.0, 0.0)])
    (f / "hpd_noimages").mkdir()
    (f / "hpd_noimages" / "train.json").write_text("[]")
    (tmp_path / "results" / "runs" / "tiny-sd15-dpo-0123456789ab").mkdir(parents=True)
    (tmp_path / "results" / "runs" / "tiny-sd15-dpo-0123456789ab" / "result.json").write_text("{}")
    (tmp_path / "cache" / "samples").mkdir(parents=True)
    (tmp_path / "cache" / "samples" / "tiny-sd15-0123456789ab.safetensors").write_bytes(b"0" * 64)
    return {p.stem: str(p) for p in f.iterdir()} | {"hf": str(tmp_path / "inputs" / "no-hf-cache")}


def tree(root):
    """Every file and directory under root with its size and modification time."""
    out = {}
    for d, dirs, names in os.walk(root):
        for n in dirs + names:
            st = os.stat(os.path.join(d, n))
            out[os.path.relpath(os.path.join(d, n), root)] = (st.st_size, st.st_mtime_ns)
    return out


M = "error: unknown method 'dpoo'; valid: balanced_dpo, base, cpo, dpo, ipo, kto, mapo, sdpo, sft"
BAD_INPUTS = [
    # unknown names (checked before Hydra composes anything)
    (["run", "method=dpoo"], M),
    (["run", "backbone=sd16"], "error: unknown backbone 'sd16'; valid: sd15, sd21, sd21-base, sdxl, tiny-sd15, tiny-sd21, tiny-sdxl"),
    (["run", "+suite=nope"], "error: unknown suite 'nope'; valid: full, real, seeds, smoke"),
    (["run", "+preset=nope"], "error: unknown preset 'nope'; valid: diffusers_dpo_lora_sd15, diffusion_dpo_sd15, "
                              "diffusion_dpo_sdxl, diffusion_kto_sd15"),
    (["run", "train.mixed_precision=fp8"], "error: unknown train.mixed_precision 'fp8'; valid: no, fp16, bf16"),
    (["run", "train.optimizer=sgd"], "error: unknown train.optimizer 'sgd'; valid: adamw, adamw8bit, adafactor"),
    (["run", "method=sft,dpoo"], M),
    (["tune", "+study=nope"], "error: unknown study 'nope'; valid: balanced_dpo_beta_refresh, dpo_beta, kto_beta"),
    (["frobnicate"], "error: unknown command 'frobnicate'; valid: run, pretrain, list, leaderboard"),
    # keys and types (Hydra's own errors as one line)
    (["run", "+method.typo=1"], "error: unknown key 'method.typo'; valid keys of method: name, beta, half"),
    (["run", "+train.lrr=1"], "error: unknown key 'train.lrr'; valid keys of train: steps,"),
    (["run", "+foo=1"], "error: unknown top-level key(s) ['foo']; valid:"),
    (["run", "train.steps=abc"], "error: Error merging override train.steps=abc: Value 'abc' of type 'str' could "
                                 "not be converted to Integer; fix that override"),
    (["run", "-m", "method=dpo,kto", "seed=abc"], "error: Error merging override seed=abc: Value 'abc'"),
    (["run", "train.steps="], "error: Error merging override train.steps=: Value '' of type 'str' could not be converted"),
    (["run", "method=dpo,kto"], "error: method=dpo,kto sweeps over values, which needs -m (--multirun); add -m"),
    # ranges, before any sampling or data generation
    (["run", "method=dpo", "train.steps=0"], "error: train.steps must be >= 1, got 0"),
    (["run", "method=dpo", "train.steps=-1"], "error: train.steps must be >= 1, got -1"),
    (["run", "method=dpo", "train.batch_size=0"], "error: train.batch_size must be >= 1, got 0"),
    (["run", "method=dpo", "train.lr=0"], "error: train.lr must be a finite number > 0, got 0.0"),
    (["run", "method=dpo", "train.lr=inf"], "error: train.lr must be a finite number > 0, got inf"),
    (["run", "method=dpo", "train.grad_accum=0"], "error: train.grad_accum must be >= 1, got 0"),
    (["run", "method=dpo", "train.ema_decay=1.5"], "error: train.ema_decay must be in (0, 1) or null, got 1.5"),
    (["run", "method=dpo", "train.error_weighting=snr"], "error: unknown train.error_weighting 'snr'; valid: none, v_cap"),
    (["run", "method=dpo", "method.beta=nan"], "error: method.beta must be a finite number > 0, got nan"),
    (["run", "method=kto", "method.beta=-1"], "error: method.beta must be a finite number > 0, got -1.0"),
    (["run", "method=dpo", "data.n_pairs=0"], "error: data.n_pairs must be >= 1, got 0"),
    (["run", "method=dpo", "data.generators=[base,nope]"], "error: unknown generator 'nope'"),
    (["run", "method=dpo", "data.generators=[base,base]"], "error: data.generators must name one or more different"),
    (["run", "launch.num_processes=0"], "error: launch.num_processes must be >= 1, got 0"),
    (["run", "train.batch_size=3", "launch.num_processes=2"],
     "error: train.batch_size=3 (the global micro-batch) must be divisible by launch.num_processes=2"),
    # a sweep's later jobs are checked too: here the second value, and a suite's own sweep
    (["run", "-m", "method=dpo", "train.steps=10,0"], "error: train.steps must be >= 1, got 0"),
    (["run", "+suite=smoke", "method.beta=0"], "error: Could not override 'method.beta'"),
    (["run", "+suite=full", "seed=0", "train.batch_size=0"], "error: train.batch_size must be >= 1, got 0"),
    # eval set and scorers
    (["run", "eval.max_prompts=0"], "error: the eval prompt set is empty (split 'eval': 0 prompts"),
    (["run", "eval.seeds_per_prompt=0"], "error: the eval prompt set is empty (split 'eval': 54 prompts, 0 seeds each)"),
    (["run", "world.colours=[red]"], "error: the eval prompt set is empty"),
    (["run", "eval.split=test"], "error: unknown eval.split 'test'; valid: train, val, eval"),
    (["run", "eval.prompt_set=coco"], "error: unknown eval.prompt_set 'coco'; valid: world, partiprompts,"),
    (["run", "eval.scorers=[gold,fidelty]"], "error: unknown scorer 'fidelty' (did you mean 'fidelity'?); valid:"),
    (["run", "+eval.scorer_options.pickscore={{}}"],
     "error: eval.scorer_options names scorer(s) ['pickscore'] that are not in eval.scorers"),
    (["run", "eval.prompt_set=drawbench", "eval.prompt_path={drawbench}", "eval.scorers=[pickscore]"],
     "error: {drawbench}: not readable JSON (JSONDecodeError); expected a list of prompts"),
    (["run", "eval.prompt_set=partiprompts", "eval.prompt_path={parti}", "eval.scorers=[pickscore]"],
     "error: {parti}: no 'Prompt' column"),
    (["run", "eval.prompt_set=partiprompts", "eval.prompt_path={good_parti}"],
     "error: scorer 'gold' reads shapes-world prompts only and 'a red cat' is not one"),
    (["run", "eval.prompt_set=partiprompts", "eval.prompt_path={good_parti}", "eval.scorers=[pickscore]",
      "+eval.scorer_options.pickscore={{cache_dir:{hf}}}"],
     "error: pickscore: the PickScore CLIPModel directory (yuvalkirstain/PickScore_v1) is not in the HF cache "
     "({hf}); run `hf download yuvalkirstain/PickScore_v1`"),
    # preference files
    (["run", "data.source=file"], "error: data.source=file needs data.path="),
    (["run", "method=cpo", "data.source=file", "data.path={one_pair}"],
     "error: method=cpo on {one_pair} needs per-image attribute annotations: set method.attributes_file="),
    (["run", "method=cpo", "data.source=file", "data.path={one_pair}", "method.attributes_file={empty}/a.json"],
     "error: method.attributes_file {empty}/a.json not found"),
    (["run", "data.source=s3"], "error: unknown data.source 's3'; valid: world, file, pickapic_v2, hpdv2"),
    # streamed sources (bench/data/stream.py): the directory, its shards and columns, the options
    (["run", "data.source=pickapic_v2"], "error: data.source=pickapic_v2 needs data.path=<the dataset directory>"),
    (["run", "data.source=pickapic_v2", "data.path={labels}"],
     "error: data.path={labels} is not a directory; data.source=pickapic_v2 reads the dataset directory"),
    (["run", "data.source=pickapic_v2", "data.path={empty}"],
     "error: no 'train' shards under {empty} (expected data/train-*.parquet)"),
    (["run", "data.source=pickapic_v2", "data.path={pick_good}", "data.split=validation"],
     "error: no 'validation' shards under {pick_good}"),
    (["run", "data.source=pickapic_v2", "data.path={pick_columns}"],
     "error: {pick_columns}/data/train-00000-of-00001-ab.parquet: missing column(s) ['jpg_0', 'jpg_1', 'label_1']"),
    (["run", "method=kto", "data.source=pickapic_v2", "data.path={pick_good}"],
     "error: method kto trains on 'binary' feedback; data.source=pickapic_v2 gives pairs"),
    (["run", "data.source=pickapic_v2", "data.path={pick_good}", "data.latent_cache=sample"],
     "error: unknown data.latent_cache 'sample'; valid: none, dist, mode"),
    (["run", "data.source=pickapic_v2", "data.path={pick_good}", "data.num_workers=-1"],
     "error: data.num_workers must be >= 0"),
    (["run", "data.source=pickapic_v2", "data.path={pick_good}", "train.ref_draws=2"],
     "error: train.ref_draws needs the training data in memory"),
    (["run", "data.source=hpdv2", "data.path={empty}"], "error: HPD v2 annotations not found: {empty}/train.json"),
    (["run", "data.source=hpdv2", "data.path={hpd_noimages}"],
     "error: HPD v2 images not found: {hpd_noimages}/train is not a directory"),
    (["run", "data.source=hpdv2", "data.path={hpd_noimages}", "data.split=val"],
     "error: unknown HPD v2 split 'val' (data.split); valid: train, test"),
    (["run", "data.source=file", "data.path={empty}/pairs.parquet"],
     "error: preference file not found: {empty}/pairs.parquet; set data.path"),
    (["run", "data.source=file", "data.path={truncated}"],
     "error: {truncated}: not a readable parquet file (ArrowInvalid"),
    (["run", "data.source=file", "data.path={text}"], "error: {text}: not a readable parquet file"),
    (["run", "data.source=file", "data.path={columns}"],
     "error: {columns}: missing column(s) ['jpg_0', 'jpg_1', 'label_1']; a Pick-a-Pic file has"),
    (["run", "method=kto", "data.source=file", "data.path={labels}"],
     "error: {labels}: row 2 has labels (0.3, 0.7); expected (1, 0), (0, 1) or (0.5, 0.5)"),
    (["run", "data.source=file", "data.path={nulls}"], "error: {nulls}: row 1 has labels (nan, nan); expected"),
    # backbone weights and the output directories
    (["run", "method=sft", "backbone.weights=/nonexistent"],
     "error: no pipeline at /nonexistent (model_index.json missing); pass backbone.weights=<dir"),
    (["run", "backbone=sd15", "backbone.path={empty}"],
     "error: no pipeline at {empty} (model_index.json missing); pass backbone.path=<dir"),
    (["run", "method=base", "paths.results={a_file}"],
     "error: paths.results={a_file} is not a directory; point paths.results at a directory"),
    (["run", "method=base", "paths.cache={a_file}/cache"],
     "error: paths.cache={a_file}/cache cannot be created: {a_file} is not a directory"),
    (["run", "method=base", "paths.results={readonly}/results"],
     "error: paths.results={readonly}/results is not writable ({readonly} does not allow writing)"),
    # the other commands
    (["leaderboard", "inputs/empty"], "error: no readable result files under inputs/empty/runs"),
    (["leaderboard", "nowhere"], "error: no results directory at nowhere; pass the directory that holds runs/"),
    (["report", "--bogus"], "error: report: unrecognized arguments: --bogus"),
    (["paper", "nope"], "error: no paper spec 'nope'; valid: balanced_dpo_aggregation,"),
]


@pytest.mark.parametrize("args,expected", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_one_line_exit_2_nothing_written(args, expected, files, capsys, monkeypatch, tmp_path):
    if "{readonly}" in " ".join(args) and os.access(files["readonly"], os.W_OK):
        pytest.skip("running as root: a mode-0500 directory is writable")
    monkeypatch.setenv("DIFFPREF_CACHE", str(tmp_path / "cache"))
    before = tree(tmp_path)
    code, err = run_cli([a.format(**files) for a in args], capsys)
    assert (code, len(err)) == (2, 1), err
    assert err[0].startswith(expected.format(**files)), err[0]
    assert tree(tmp_path) == before          # nothing created or changed, results and cache included


def test_the_table_covers_at_least_30_inputs():
    assert len(BAD_INPUTS) >= 30 and len({tuple(a) for a, _ in BAD_INPUTS}) == len(BAD_INPUTS)


def test_list_prints_every_registry(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("dpo", "sft", "base", "kto", "balanced_dpo", "cpo", "gold", "fidelity", "aesthetic",
                 "preference", "tiny-sd15", "sd15", "full", "smoke"):
        assert f"  {name} " in out


@pytest.mark.parametrize("name", METHODS.names())
def test_each_method_declaration_matches_its_class(name):
    summary = dict(METHODS.describe())[name]
    config = METHODS.config(name)
    cls = METHODS.get(name)                  # imports the method's module
    assert cls.Config is config
    assert cls.__doc__.strip().splitlines()[0] == summary


PLANTED = '''"""A method module planted by tests/test_cli.py in a temporary folder."""
from dataclasses import dataclass

from bench.lazy import torch
from bench.method import Method
from bench.registry import METHODS, MethodConfig


@dataclass
class PlantedConfig(MethodConfig):
    beta: float = 7.0


@METHODS.register("planted")
class Planted(Method):
    """Planted: a one-file method that methods/__init__.py finds by itself."""
    Config = PlantedConfig

    def loss(self, err, ref_err):
        return torch.as_tensor(err).mean(), {}
'''

FIND_PLANTED = """
import contextlib, io, json, sys
import methods
methods.__path__.append(sys.argv[1])
methods.import_self_registering()
from bench.cli import main
codes, outs = [], []
for args in (["list"], ["run", "method=planted", "method.beta=-1"], ["run", "method=planted", "+method.typo=1"]):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            codes.append(main(args))
        except SystemExit as e:
            codes.append(e.code)
    outs.append(out.getvalue())
print(json.dumps({"codes": codes, "outs": outs, "torch": "torch" in sys.modules}))
"""


def test_a_method_module_registers_itself_without_any_other_file(tmp_path):
    """A new module in methods/ that the declaration table does not name is imported by
    methods/__init__.py: `bench list` shows it with its docstring, config validation knows its keys,
    and neither imports torch."""
    (tmp_path / "planted.py").write_text(PLANTED)
    (tmp_path / "_helper.py").write_text("raise RuntimeError('a _module is not a method')\n")
    env = {**os.environ, "DIFFPREF_CACHE": str(tmp_path / "cache"), "PYTHONPATH": ROOT}
    p = subprocess.run([sys.executable, "-c", FIND_PLANTED, str(tmp_path)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout.strip().splitlines()[-1])
    assert res["codes"] == [0, 2, 2], res["outs"]
    assert re.search(r"^  planted +Planted: a one-file method that methods/__init__.py finds by itself\. \[300 steps\]$",
                     res["outs"][0], re.M)
    assert "method.beta must be a finite number > 0, got -1.0" in res["outs"][1]
    assert "unknown key 'method.typo'; valid keys of method: name, beta" in res["outs"][2]
    assert res["torch"] is False


def test_every_module_of_methods_holds_a_method():
    import pkgutil
    homes = {METHODS._declared[n][0] if n in METHODS._declared else METHODS.get(n).__module__
             for n in METHODS.names()}
    mods = {f"methods.{m.name}" for m in pkgutil.iter_modules(methods.__path__)} - {"methods.config"}
    assert mods <= homes


LIGHT = """
import contextlib, io, json, sys
from bench.cli import main
codes, outs = [], []
for args in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            codes.append(main(args))
        except SystemExit as e:
            codes.append(e.code)
    outs.append(out.getvalue() + err.getvalue())
print(json.dumps({"codes": codes, "outs": outs,
                  "heavy": sorted(m for m in ("torch", "diffusers", "transformers") if m in sys.modules)}))
"""


def test_help_list_and_config_errors_import_no_torch(tmp_path):
    """`bench --help`, `bench list`, argument and config errors, a real scorer's missing weights (one
    process for all of them, so that none of them imports what another would need) and `run --help`
    (last: Hydra's app) leave torch, diffusers and transformers unimported."""
    (tmp_path / "parti.tsv").write_text("Prompt\tCategory\tChallenge\tNote\na red cat\tAnimals\tBasic\t\n")
    cases = [["--help"], ["list"], ["frobnicate"], ["run", "method=dpoo"], ["run", "train.steps=abc"],
             ["run", "method=dpo", "train.steps=0"], ["run", "-m", "method=dpo,kto", "method.beta=nan"],
             ["run", "eval.split=test"],
             ["run", "eval.prompt_set=partiprompts", "eval.prompt_path=parti.tsv", "eval.scorers=[pickscore]",
              f"+eval.scorer_options.pickscore={{cache_dir:{tmp_path / 'no-hf-cache'}}}"],   # missing weights
             ["run", "--help"]]
    env = {**os.environ, "DIFFPREF_CACHE": str(tmp_path / "cache"), "PYTHONPATH": ROOT}
    p = subprocess.run([sys.executable, "-c", LIGHT, json.dumps(cases)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout.strip().splitlines()[-1])
    assert res["codes"] == [0, 0, 2, 2, 2, 2, 2, 2, 2, 0], res["outs"]
    assert "is not in the HF cache" in res["outs"][-2]
    assert "python -m bench run +suite=full" in res["outs"][-1] and "tiny-sd15" in res["outs"][1]
    assert res["heavy"] == []
    assert not (tmp_path / "cache").exists()
