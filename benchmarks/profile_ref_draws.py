"""Per-op profile of bench.train's DPO step, live reference vs train.ref_draws=4 (1 thread; issue 16).

    python benchmarks/profile_ref_draws.py [STEPS]      # ~3 min; prints steps/s per run, then two profiles
"""
import contextlib, sys, tempfile, time
from pathlib import Path
import torch
torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.perf import dpo_setup
from bench.train import TrainConfig, train
from methods.dpo import DPO, DPOConfig
from torch.profiler import profile, ProfilerActivity

cache = Path(tempfile.mkdtemp(prefix="prof-cache-"))
bb, job, data, base = dpo_setup("tiny-sd15", cache)
STEPS = int(sys.argv[1]) if len(sys.argv) > 1 else 20

def run(ref_draws, prof=False):
    bb.pipe.unet.load_state_dict(base)
    cfg = TrainConfig(steps=STEPS, batch_size=16, lr=1e-5, ref_draws=ref_draws, ema_decay=None,
                      empty_prompt_prob=0.0, log_every=5, checkpoint_every=0)
    t = time.process_time()
    with (profile(activities=[ProfilerActivity.CPU]) if prof else contextlib.nullcontext()) as p:
        _, hist = train(bb, DPO(DPOConfig()), data, cfg, seed=0, progress=False, ref_cache_dir=cache / "reference")
    cpu = time.process_time() - t
    sps = (hist[-1]["step"] - hist[0]["step"]) / (hist[-1]["wall_s"] - hist[0]["wall_s"])
    return p, cpu, sps

run(4); run(0)   # warm: fills the reference cache, oneDNN primitives
for rd in (0, 4, 0, 4):
    _, cpu, sps = run(rd)
    print(f"ref_draws={rd}: process cpu {cpu:.2f}s, steady {sps:.3f} steps/s", flush=True)
for rd in (0, 4):
    p, cpu, sps = run(rd, prof=True)
    print(f"\n===== ref_draws={rd} profiled: cpu {cpu:.2f}s")
    print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=30, max_name_column_width=55))
