"""Hyperparameter tuning with Optuna ask/tell: `python -m bench tune +study=NAME [tune.FIELD=V] [overrides]`.

A study spec (sweeps/study/NAME.yaml, or a path to a .yaml) names the search space (dotted
config paths -> distributions), the number of trials, the base job (overrides), the pruner and
the sampler. One `bench tune` process is one worker: it loops ask -> run one job (the normal
runner, bench.runner.run_job) with the sampled values -> tell, until the study holds `n_trials`
finished (complete or pruned) trials. Any number of workers share a study by its name and
storage: local processes on one journal file (the default, <out>/journal.log through
`optuna.storages.JournalStorage(JournalFileBackend)`), or a SLURM array of workers on a journal
file on shared disk or on an RDB URL (`tune.storage=postgresql://...`). Together they finish
exactly n_trials: a worker asks only while finished + running trials < n_trials, and a trial
that a race made one too many is marked FAIL (user attr `surplus`) and never run.

The objective is the job's win rate vs base for `objective` (default: the gold scorer) on the
*validation* prompts (eval.split=val; tuning on the eval split is refused). While a trial
trains, its policy is evaluated every `report_every` steps on `report_prompts` val prompts spread
over the split, so that every count is in them (bench.runner.Probe); those win rates are the
trial's intermediate values, and the study's pruner (MedianPruner by default) stops bad trials early.

Output, in the study directory (tune.out; default outputs/tune/<study name>):
    journal.log                   the storage: `optuna-dashboard journal.log` opens it
    best_params.json              best trial: parameters, objective value and its 95% CI, job dir
    trials.csv                    optuna's trials_dataframe (params, values, states, times)
    optimization_history.png      optuna.visualization.matplotlib plots
    param_importances.png         (needs >= 2 finished trials with differing parameters)
    intermediate_values.png
    runs/<job>/                   each trial's job directory (result.json, scores.parquet)
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.registry import BenchError
from bench.files import atomic

log = logging.getLogger(__name__)
STUDIES = Path(__file__).resolve().parent.parent / "sweeps" / "study"
PRUNERS = ("MedianPruner", "PercentilePruner", "SuccessiveHalvingPruner", "HyperbandPruner",
           "ThresholdPruner", "PatientPruner", "WilcoxonPruner", "NopPruner")
SAMPLERS = ("TPESampler", "RandomSampler", "GPSampler", "CmaEsSampler", "QMCSampler")


@dataclass
class StudySpec:
    name: str = ""
    description: str = ""
    n_trials: int = 20
    direction: str = "maximize"
    objective: str = "gold"             # scorer whose win rate vs base (eval.split=val) is the objective
    report_every: int = 100             # optimizer steps between intermediate evaluations (0: none)
    report_prompts: int = 8             # val prompts per intermediate evaluation
    # dotted config path -> {type: float|int|categorical, low, high, log, step, choices}
    params: dict[str, Any] = field(default_factory=dict)
    enqueue: list[Any] = field(default_factory=list)      # trials to run first, e.g. the defaults
    overrides: list[str] = field(default_factory=list)    # the base job (Hydra overrides)
    pruner: dict[str, Any] = field(default_factory=lambda: {"name": "MedianPruner"})
    sampler: dict[str, Any] = field(default_factory=lambda: {"name": "TPESampler"})
    storage: str | None = None          # None: journal file <out>/journal.log; a URL: RDB storage
    out: str | None = None              # study directory; default outputs/tune/<name>
    max_failures: int = 3               # consecutive failed trials before this worker stops


def study_names() -> list[str]:
    return sorted(p.stem for p in STUDIES.glob("*.yaml"))


def load_spec(ref: str, dotlist: list[str]) -> StudySpec:
    """The spec named `ref` (sweeps/study/<ref>.yaml or a path), with tune.FIELD=V overrides."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException
    path = Path(ref) if ref.endswith((".yaml", ".yml")) else STUDIES / f"{ref}.yaml"
    if not path.is_file():
        raise BenchError(f"unknown study {ref!r}; valid: {', '.join(study_names())} (or a path to a study .yaml)")
    try:
        spec = OmegaConf.merge(OmegaConf.structured(StudySpec), OmegaConf.load(path), OmegaConf.from_dotlist(dotlist))
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", "") or ""
        valid = ", ".join(f.name for f in dataclasses.fields(StudySpec))
        raise BenchError(f"bad study setting {key!r} in {path} or tune.* ({str(e).splitlines()[0]}); "
                         f"valid fields: {valid}") from None
    spec = OmegaConf.to_object(spec)
    spec.name = spec.name or path.stem
    if spec.n_trials < 1:
        raise BenchError(f"tune.n_trials must be >= 1, got {spec.n_trials}")
    if spec.direction not in ("maximize", "minimize"):
        raise BenchError(f"unknown study direction {spec.direction!r}; valid: maximize, minimize")
    if not spec.params:
        raise BenchError(f"study {spec.name!r} has no params to search; add params: {{<config path>: {{type: ...}}}}")
    for p, d in spec.params.items():
        kind = d.get("type") if isinstance(d, dict) else None
        if kind not in ("float", "int", "categorical"):
            raise BenchError(f"param {p!r} of study {spec.name!r}: type must be float, int or categorical, got {kind!r}")
        if kind == "categorical" and not d.get("choices"):
            raise BenchError(f"param {p!r} of study {spec.name!r}: categorical needs choices: [...]")
        if kind != "categorical" and ("low" not in d or "high" not in d):
            raise BenchError(f"param {p!r} of study {spec.name!r}: {kind} needs low and high")
    return spec


def _build(kind: str, cfg: dict, names: tuple, module) -> Any:
    cfg = dict(cfg)
    name = cfg.pop("name", None)
    if name not in names:
        raise BenchError(f"unknown {kind} {name!r}; valid: {', '.join(names)}")
    if name == "PatientPruner":        # wraps another pruner: {name: PatientPruner, wrapped: {...}, patience: n}
        cfg["wrapped_pruner"] = _build(kind, cfg.pop("wrapped", {"name": "MedianPruner"}), names, module)
    try:
        return getattr(module, name)(**cfg)
    except TypeError as e:
        raise BenchError(f"bad {kind} options for {name}: {e}") from None


def suggest(trial, path: str, d: dict):
    if d["type"] == "categorical":
        return trial.suggest_categorical(path, list(d["choices"]))
    if d["type"] == "int":
        return trial.suggest_int(path, int(d["low"]), int(d["high"]), step=int(d.get("step", 1)),
                                 log=bool(d.get("log", False)))
    return trial.suggest_float(path, float(d["low"]), float(d["high"]), log=bool(d.get("log", False)),
                               step=d.get("step"))


def _compose(overrides: list[str]):
    from hydra.errors import HydraException
    from bench.config import compose_config
    try:
        return compose_config(overrides)
    except HydraException as e:
        raise BenchError(f"tune: {str(e).splitlines()[0]}") from None


def job_overrides(spec: StudySpec, cli: list[str], out: Path) -> list[str]:
    return ["eval.split=val", *spec.overrides, *cli, f"paths.results={out}"]


def check(spec: StudySpec, base: list[str]) -> None:
    """Refuse what would make the study wrong before any trial runs: the eval split, unknown
    param paths, values the job schema rejects."""
    from omegaconf import OmegaConf
    from bench.config import validate
    cfg = _compose(base)
    if cfg.eval.prompt_set == "world" and cfg.eval.split != "val":
        raise BenchError(f"tune optimises on the validation prompts; eval.split={cfg.eval.split} is not allowed "
                         "(drop that override: tune sets eval.split=val)")
    missing = object()
    for p in spec.params:
        if OmegaConf.select(cfg, p, default=missing) is missing:
            raise BenchError(f"unknown param path {p!r} in study {spec.name!r}: not a key of the job config "
                             "(e.g. method.beta, train.lr, method.ref_refresh_every)")
    example = {p: (d["choices"][0] if d["type"] == "categorical" else d["low"]) for p, d in spec.params.items()}
    validate(_compose(base + [f"{p}={v}" for p, v in example.items()]))
    if spec.objective not in cfg.eval.scorers:
        raise BenchError(f"study objective {spec.objective!r} is not among eval.scorers {list(cfg.eval.scorers)}")


def open_study(spec: StudySpec, out: Path):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    pruner = _build("pruner", spec.pruner, PRUNERS, optuna.pruners)
    sampler = _build("sampler", spec.sampler, SAMPLERS, optuna.samplers)
    out.mkdir(parents=True, exist_ok=True)
    journal = spec.storage is None or not ("://" in spec.storage)
    if journal:
        path = Path(spec.storage) if spec.storage else out / "journal.log"
        storage = JournalStorage(JournalFileBackend(str(path)))
    else:
        storage = spec.storage
    lock = _file_lock(out / ".create.lock") if journal else contextlib.nullcontext()
    with lock:       # one worker creates the study and enqueues its first trials
        study = optuna.create_study(storage=storage, study_name=spec.name, direction=spec.direction,
                                    sampler=sampler, pruner=pruner, load_if_exists=True)
        for params in spec.enqueue:
            study.enqueue_trial(dict(params), skip_if_exists=True)
    return study


@contextlib.contextmanager
def _file_lock(path: Path):
    import fcntl
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _counts(study) -> tuple[int, int]:
    from optuna.trial import TrialState
    trials = study.get_trials(deepcopy=False)
    done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    return done, running


def _surplus(study, number: int, n_trials: int) -> bool:
    """True when n_trials trials numbered below `number` are already finished or running."""
    from optuna.trial import TrialState
    live = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    return sum(t.number < number and t.state in live for t in study.get_trials(deepcopy=False)) >= n_trials


def run_worker(spec: StudySpec, cli: list[str], progress: bool = True) -> Path:
    import optuna
    from optuna.trial import TrialState
    from tqdm.auto import tqdm
    from bench.runner import Probe, run_job
    out = Path(spec.out) if spec.out else Path("outputs") / "tune" / spec.name
    base = job_overrides(spec, cli, out)
    check(spec, base)
    study = open_study(spec, out)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    bar = tqdm(total=spec.n_trials, desc=f"tune {spec.name}", disable=not progress)
    failures = 0
    while True:
        done, running = _counts(study)
        bar.n = done
        bar.refresh()
        if done + running >= spec.n_trials:
            break
        trial = study.ask()
        if _surplus(study, trial.number, spec.n_trials):
            trial.set_user_attr("surplus", True)
            study.tell(trial, state=TrialState.FAIL)
            break
        values = {p: suggest(trial, p, d) for p, d in spec.params.items()}
        trial.set_user_attr("worker", f"{os.uname().nodename}:{os.getpid()}")

        def report(step, value, trial=trial):
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step} (intermediate {spec.objective} win rate {value:.3f})")
        probe = Probe(spec.report_every, spec.report_prompts, spec.objective, report) if spec.report_every > 0 else None
        log.info("trial %d: %s", trial.number, values)
        try:
            job = run_job(_compose(base + [f"{p}={v}" for p, v in values.items()]), probe=probe)
        except optuna.TrialPruned as e:
            log.info("trial %d %s", trial.number, e)
            study.tell(trial, state=TrialState.PRUNED)
            failures = 0
            continue
        except BenchError as e:            # e.g. a NaN loss at an extreme beta: a failed trial
            trial.set_user_attr("error", str(e))
            study.tell(trial, state=TrialState.FAIL)
            failures += 1
            log.warning("trial %d failed: %s", trial.number, e)
            if failures >= spec.max_failures:
                raise BenchError(f"{failures} trials in a row failed, the last with: {e}") from None
            continue
        except BaseException:
            study.tell(trial, state=TrialState.FAIL)
            raise
        res = json.loads((job / "result.json").read_text())
        vs = res["scorers"][spec.objective]["vs_base"]
        trial.set_user_attr("job", str(job))
        trial.set_user_attr("ci", [vs["ci_low"], vs["ci_high"]])
        study.tell(trial, vs["win_rate"])
        failures = 0
        log.info("trial %d: %s win rate vs base on val %.3f [%.3f, %.3f]", trial.number, spec.objective,
                 vs["win_rate"], vs["ci_low"], vs["ci_high"])
        try:
            bar.set_postfix(best=f"{study.best_value:.3f}")
        except ValueError:
            pass
    bar.close()
    write_outputs(study, spec, out)
    return out


def _atomic(path: Path, write) -> None:
    with atomic(path) as tmp:
        write(tmp)


def write_outputs(study, spec: StudySpec, out: Path) -> list[str]:
    """best_params.json, trials.csv and the plots; returns notes on what could not be made."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm
    from optuna.trial import TrialState
    notes = []
    trials = study.get_trials(deepcopy=False)
    states = {s.name.lower(): sum(t.state == s for t in trials) for s in (TrialState.COMPLETE, TrialState.PRUNED,
                                                                         TrialState.FAIL, TrialState.RUNNING)}
    best: dict = {"study": spec.name, "objective": f"{spec.objective} win rate vs base (eval.split=val)",
                  "direction": spec.direction, "n_trials": spec.n_trials, "trials": states}
    try:
        b = study.best_trial
        best.update({"best_trial": b.number, "value": b.value, "params": b.params,
                     "ci": b.user_attrs.get("ci"), "job": b.user_attrs.get("job")})
    except ValueError:
        notes.append("no completed trial yet: best_params.json has no best trial")
    _atomic(out / "best_params.json", lambda p: p.write_text(json.dumps(best, indent=2)))
    df = study.trials_dataframe()
    _atomic(out / "trials.csv", lambda p: df.to_csv(p, index=False))
    plots = {"optimization_history.png": ovm.plot_optimization_history,
             "param_importances.png": ovm.plot_param_importances,
             "intermediate_values.png": ovm.plot_intermediate_values}
    import warnings
    for name, plot in plots.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")      # optuna marks its matplotlib plots experimental
                ax = plot(study)
            fig = (ax.flat[0] if hasattr(ax, "flat") else ax).get_figure()
            fig.set_size_inches(7, 4.5)
            fig.tight_layout()
            _atomic(out / name, lambda p: fig.savefig(p, dpi=110, format="png"))
            plt.close(fig)
        except Exception as e:  # noqa: BLE001  (e.g. importances need >= 2 finished trials)
            notes.append(f"{name} not written: {' '.join(str(e).split())[:200]}")
    for n in notes:
        log.warning("%s", n)
    return notes


def main(args: list[str]) -> None:
    study_ref, dotlist, cli = None, [], []
    for a in args:
        key, sep, value = a.partition("=")
        if key.lstrip("+") == "study" and sep:
            study_ref = value
        elif key.startswith("tune.") and sep:
            dotlist.append(f"{key[len('tune.'):]}={value}")
        elif a.startswith("-"):
            raise BenchError(f"tune: unrecognised option {a!r}; pass +study=NAME, tune.FIELD=VALUE and job overrides")
        else:
            cli.append(a)
    if study_ref is None:
        raise BenchError(f"tune needs +study=NAME; valid: {', '.join(study_names())} (or a path to a study .yaml)")
    spec = load_spec(study_ref, dotlist)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s",
                        stream=sys.stderr)
    progress = not any(a.strip() in ("progress=false", "progress=False") for a in cli)
    out = run_worker(spec, cli, progress=progress)
    journal = Path(spec.storage) if spec.storage and "://" not in spec.storage else out / "journal.log"
    print(out / "best_params.json")
    if spec.storage is None or "://" not in spec.storage:
        print(f"dashboard: optuna-dashboard {journal}", file=sys.stderr)
