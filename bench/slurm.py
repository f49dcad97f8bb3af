"""The sbatch script a sweep would submit, rendered without a cluster (`python -m bench sbatch`).

`python -m bench run +suite=full hydra/launcher=slurm ...` hands the sweep to Hydra's submitit
launcher (hydra_plugins.hydra_submitit_launcher.SlurmLauncher), which submits one SLURM array
job whose sbatch script submitit writes (submitit.slurm.slurm._make_sbatch_string). `render`
runs that launcher's real `launch` on the composed config with two things replaced: the `srun`
check (so no cluster is needed) and the submission (the script is captured instead of passed to
`sbatch`). So the text is exactly what would be submitted for these overrides: partition,
GPUs, time limit, `--array=0-(N-1)%array_parallelism`, requeue signal, setup lines.
"""
from __future__ import annotations

from unittest import mock

from bench.registry import BenchError


class _Captured(Exception):
    def __init__(self, text: str):
        super().__init__("sbatch script captured")
        self.text = text


def render(overrides: list[str]) -> str:
    """The sbatch script for `python -m bench run <overrides>` (a sweep on hydra/launcher=slurm)."""
    from hydra import compose, initialize_config_module
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.utils import setup_globals
    from hydra.errors import HydraException
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from submitit.slurm.slurm import SlurmExecutor

    from bench.config import register_configs
    register_configs()
    setup_globals()                                  # the ${now:...} resolver of sweep dirs
    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides(list(overrides))
        fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
        with initialize_config_module("bench.conf", version_base="1.3"):
            cfg = compose("config", overrides=fixed, return_hydra_config=True)
    except HydraException as e:
        raise BenchError(f"sbatch: {str(e).splitlines()[0]}") from None
    launcher_cfg = cfg.hydra.launcher
    if "SlurmLauncher" not in str(launcher_cfg.get("_target_", "")):
        raise BenchError("sbatch: the launcher is not SLURM; add hydra/launcher=slurm (or submitit_slurm)")
    HydraConfig.instance().set_config(cfg)
    # the sweep's jobs, as Hydra's basic sweeper splits them: the sweeper's params, then the
    # command line's task overrides (sweeps like method=a,b included)
    params = cfg.hydra.sweeper.get("params")
    params = OmegaConf.to_container(params, resolve=True) if params else {}
    task = [o.input_line for o in parsed if not o.get_key_element().lstrip("+~").startswith("hydra")]
    jobs = BasicSweeper.split_arguments(parser.parse_overrides([f"{k}={v}" for k, v in params.items()] + task),
                                        max_batch_size=None)[0]

    launcher = instantiate(launcher_cfg)
    launcher.setup(hydra_context=None, task_function=None, config=cfg)

    def capture(executor, submissions):
        array_ex = SlurmExecutor(executor.folder, executor.max_num_timeout)
        array_ex.update_parameters(**executor.parameters)
        if len(submissions) > 1:
            array_ex.parameters["map_count"] = len(submissions)
        raise _Captured(array_ex._make_submission_file_text(array_ex._submitit_command_str, "uid"))

    with mock.patch.object(SlurmExecutor, "affinity", classmethod(lambda cls: 2)), \
            mock.patch.object(SlurmExecutor, "_internal_process_submissions", capture), \
            mock.patch("pathlib.Path.mkdir"), mock.patch("os.chmod"):
        try:
            launcher.launch(jobs, initial_job_idx=0)
        except _Captured as c:
            return c.text
    raise RuntimeError("the submitit launcher submitted nothing")


def main(overrides: list[str]) -> None:
    print(render(overrides), end="")

