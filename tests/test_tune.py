"""`bench tune`: two Optuna workers on one journal file finish N trials together, some pruned."""
import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from bench.cli import main

N = 4

# A toy study on the real tune code path. Pruning is deterministic by construction: the
# ThresholdPruner prunes any trial that reports an intermediate value below 1.01 (a win rate
# never is), and only trials with train.steps=4 report (report_every=3); the two enqueued trials
# are one of each, so at least one trial is pruned and at least one completes.
STUDY = """
n_trials: {n}
report_every: 3
report_prompts: 1
params:
  method.beta: {{type: float, low: 100.0, high: 10000.0, log: true}}
  train.steps: {{type: categorical, choices: [2, 4]}}
enqueue:
  - {{method.beta: 5000.0, train.steps: 4}}
  - {{method.beta: 5000.0, train.steps: 2}}
overrides:
  - method=dpo
pruner: {{name: ThresholdPruner, lower: 1.01}}
sampler: {{name: RandomSampler}}
"""


def toy(tmp_path, tiny_pipe_dir):
    spec = tmp_path / "toy_study.yaml"
    spec.write_text(STUDY.format(n=N))
    return [f"+study={spec}", f"tune.out={tmp_path / 'study'}", f"backbone.weights={tiny_pipe_dir}",
            f"paths.cache={tmp_path / 'cache'}", "data.n_pairs=12", "train.batch_size=4", "train.log_every=1",
            "eval.max_prompts=2", "eval.seeds_per_prompt=1", "eval.n_bootstrap=100", "progress=false"]


def test_two_workers_share_one_journal(tmp_path, tiny_pipe_dir):
    args = toy(tmp_path, tiny_pipe_dir)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    workers = [subprocess.Popen([sys.executable, "-m", "bench", "tune", *args], cwd=tmp_path, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [w.communicate(timeout=900) for w in workers]
    for w, (_, err) in zip(workers, outs):
        assert w.returncode == 0, err[-3000:]
    study = tmp_path / "study"
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    st = optuna.load_study(study_name="toy_study", storage=JournalStorage(JournalFileBackend(str(study / "journal.log"))))
    trials = st.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == N                                     # none lost, none extra
    assert len({t.number for t in trials}) == len(trials)
    assert all(t.user_attrs.get("surplus") for t in trials if t.state.name == "FAIL")   # only race losers
    assert not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]
    pruned = [t for t in finished if t.state.name == "PRUNED"]
    assert pruned and all(t.params["train.steps"] == 4 for t in pruned)
    assert all(list(t.intermediate_values) == [3] for t in pruned)
    complete = [t for t in finished if t.state.name == "COMPLETE"]
    assert complete and all(0.0 <= t.value <= 1.0 for t in complete)
    assert len({t.user_attrs["worker"] for t in finished}) == 2   # both workers ran trials
    # every completed trial is a finished job on the val split
    for t in complete:
        res = json.loads((tmp_path / "study" / "runs" / os.path.basename(t.user_attrs["job"]) / "result.json").read_text())
        assert res["config"]["eval"]["split"] == "val"
        assert res["scorers"]["gold"]["vs_base"]["win_rate"] == t.value
    best = json.loads((study / "best_params.json").read_text())
    assert best["value"] == max(t.value for t in complete) and set(best["params"]) == {"method.beta", "train.steps"}
    assert best["trials"]["complete"] + best["trials"]["pruned"] == N
    df = pd.read_csv(study / "trials.csv")
    assert {"number", "value", "state", "params_method.beta", "params_train.steps"} <= set(df.columns)
    for png in ("optimization_history.png", "intermediate_values.png"):
        assert (study / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("extra,expected", [
    (["+study=nope"], "error: unknown study 'nope'; valid: balanced_dpo_beta_refresh, dpo_beta, kto_beta"),
    (["+study=dpo_beta", "eval.split=eval"], "error: tune optimises on the validation prompts; eval.split=eval is not allowed"),
    (["+study=dpo_beta", "tune.n_trial=3"], "error: bad study setting 'n_trial'"),
    ([], "error: tune needs +study=NAME; valid: balanced_dpo_beta_refresh"),
])
def test_bad_input_one_line(extra, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["tune", *extra])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(expected), err[-1]


def test_unknown_param_path_is_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "bad.yaml"
    spec.write_text("params:\n  method.betta: {type: float, low: 1.0, high: 2.0}\noverrides: [method=dpo]\n")
    with pytest.raises(SystemExit) as e:
        main(["tune", f"+study={spec}"])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        "error: unknown param path 'method.betta' in study 'bad': not a key of the job config")
