"""Training worker for multi-process (multi-GPU) jobs: `accelerate launch ... -m bench.worker SPEC`.

The Hydra job (bench.runner.train_distributed) resolves its config, writes SPEC (worker.yaml in
the job's checkpoint directory: the resolved job config, the preference data file it already
made, the checkpoint directory) and starts `accelerate launch --num_processes N` on this module.
Every process reads SPEC with OmegaConf (no Hydra here: one Hydra run per job, no per-rank output
directories), builds the same backbone, method and data (all cache hits), and trains with an
`Accelerator` (DDP; gloo on CPU). `train.batch_size` is the global micro-batch: each process
takes its share of every batch (bench.train.train). Only the main process writes: resumable
checkpoints, the final policy weights (unet.safetensors) and worker_result.json (history and
what the method made of its feedback), which the Hydra job reads back before sampling and
scoring in its own process.
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from bench.registry import BenchError
from bench.files import write_text

log = logging.getLogger("bench.worker")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not Path(argv[0]).is_file():
        print("error: usage: accelerate launch ... -m bench.worker <worker.yaml written by the job>", file=sys.stderr)
        return 2
    from accelerate import Accelerator
    from omegaconf import OmegaConf
    import torch

    spec = OmegaConf.load(argv[0])
    acc = Accelerator(cpu=not torch.cuda.is_available())
    logging.basicConfig(level=logging.INFO if acc.is_main_process else logging.WARNING,
                        format=f"[rank {acc.process_index}] %(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        from bench.data.loaders import load_for_method
        from bench.registry import BACKBONES, METHODS
        from bench.runner import WORKER_RESULT, validate
        from bench.train import train
        job = validate(OmegaConf.create(OmegaConf.to_container(spec.job)))
        cache, ckpt_dir = Path(job.paths.cache), Path(spec.ckpt_dir)
        method = METHODS.get(job.method.name)(job.method)
        backbone = BACKBONES.get(job.backbone.name)(job.backbone, job.world, cache)
        data, data_info = load_for_method(method, Path(spec.data_path), job.data, cache, backbone.resolution,
                                          world=bool(spec.world), scorer_options=job.eval.scorer_options)
        info: dict = {}
        _, history = train(backbone, method, data, job.train, job.seed, ckpt_dir=ckpt_dir,
                           progress=job.progress, accelerator=acc, ref_cache_dir=cache / "reference", info=info)
        from accelerate.utils import gather_object
        ranks = gather_object([{"rank": acc.process_index, **info}])     # every rank's device and placement
        if acc.is_main_process:
            data_info.update(getattr(method, "data_info", {}))
            out = ckpt_dir / WORKER_RESULT
            training = {k: v for k, v in info.items() if k != "placement"}
            training["ranks"] = [{"rank": r["rank"], "device": r["device"], "placement": r["placement"]}
                                 for r in ranks]
            write_text(out, json.dumps({"history": history, "data_info": data_info,
                                        "num_processes": acc.num_processes, "training": training}, default=str))
        acc.wait_for_everyone()
    except BenchError as e:
        print(f"error: [rank {acc.process_index}] {e}", file=sys.stderr)
        return 2
    finally:
        acc.end_training()           # destroys the process group (else gloo aborts at exit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
