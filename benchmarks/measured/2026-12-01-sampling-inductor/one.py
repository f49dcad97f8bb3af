"""One sampling mode in its own process, 1 thread: warm-up call (compile), then 3 timed calls on 64 eval
prompts of tiny-sd15; prints images/s and saves the images (.npy) for comparison with eager.
    PYTHONPATH=. python benchmarks/measured/2026-12-01-sampling-inductor/one.py MODE [OUT_DIR]
MODE: eager | compile | freeze | freeze_cl | freeze_max; OUT_DIR (default /tmp/sampling-inductor)
holds the cache (tiny-sd15's weights) and MODE.npy."""
import json, statistics, sys, time
from pathlib import Path
import numpy as np, torch
mode = sys.argv[1]
OUT = Path(sys.argv[2] if len(sys.argv) > 2 else "/tmp/sampling-inductor")
OUT.mkdir(parents=True, exist_ok=True)
sys.argv = ["x"]
torch.set_num_threads(1)
import torch._inductor.config as IC
IC.freezing = mode.startswith("freeze")
from benchmarks.perf import _backbone
from bench.evaluate import eval_set
from bench.sample import generate
bb, job = _backbone("tiny-sd15", OUT / "cache")
prompts = [p.text for p in eval_set(job.eval, job.world)][:64]
seeds = [i % 8 for i in range(len(prompts))]
c = mode != "eager"
import bench.sample as S
if mode in ("freeze_cl", "freeze_max"):
    u = bb.pipe.unet
    if mode == "freeze_cl":
        u.to(memory_format=torch.channels_last)
    S._COMPILED[u] = torch.compile(u, mode="max-autotune-no-cudagraphs" if mode == "freeze_max" else None)
t = time.perf_counter(); img = generate(bb, prompts, seeds, progress=False, compile=c); first = time.perf_counter() - t
np.save(OUT / f"{mode}.npy", img.numpy())
r = []
for _ in range(3):
    t = time.perf_counter(); generate(bb, prompts, seeds, progress=False, compile=c); r.append(64 / (time.perf_counter() - t))
print(json.dumps({"mode": mode, "first_s": round(first, 1), "images_per_s": [round(x, 3) for x in r], "median": round(statistics.median(r), 3)}), flush=True)
