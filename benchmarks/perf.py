"""How fast the suite runs on this machine, against plain references (issue 16).

    python benchmarks/perf.py [--backbone tiny-sd15] [--steps 20] [--reps 5] [--parts peak,dpo,sample,parallel]
    python benchmarks/perf.py --model sd15|sdxl ...     real-size UNets: see benchmarks/perf_real.py (issue 19)

Prints, as medians of interleaved repetitions (absolute times on a shared machine are noisy; the
ratios are what to compare):
  peak      single- and two-thread fp32 matmul GFLOP/s, and the UNet's training-step FLOP rate as a
            fraction of the one-thread peak (FLOPs counted by torch.utils.flop_counter)
  dpo       Diffusion-DPO steps/s of bench.train against the reference formulation (the inner step of
            diffusers' examples/research_projects/diffusion_dpo/train_diffusion_dpo.py, re-written
            from its description: encode, shared noise and timestep per pair, policy forward on
            winners and losers, reference forward without gradients, -logsigmoid(-beta/2 * ...)),
            at the same pairs and batch, with the loss of both on identical noise and timesteps;
            ours with live reference and with train.ref_draws (precomputed reference errors)
  sample    images/s of bench.sample.generate (eager and torch.compile'd) against a direct pipeline
            call (same latents), and how many compiled images differ from eager ones
  parallel  the same sampling work (256 images, each process loading its model) as two 1-thread
            processes side by side against one 2-thread process (what
            sweeps/hydra/launcher/parallel.yaml does with a sweep's jobs), eager and compiled
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def _backbone(name: str, cache: Path):
    from bench.registry import BACKBONES
    from bench.runner import compose_config, validate
    job = validate(compose_config([f"backbone={name}", "method=dpo"]))
    return BACKBONES.get(name)(job.backbone, job.world, cache), job


def _median_time(fn, reps: int) -> float:
    fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def peak(args) -> dict:
    out = {}
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        out[f"matmul_gflops_{threads}t"] = 2 * 1024 ** 3 / _median_time(lambda: a @ b, 20) / 1e9
    torch.set_num_threads(1)
    from torch.utils.flop_counter import FlopCounterMode
    bb, _ = _backbone(args.backbone, Path(args.cache))
    unet = bb.unet.train()
    x = torch.randn(32, unet.config.in_channels, 16, 16)
    enc = bb.encode_prompts(["one red circle on a blue background"] * 32)["encoder_hidden_states"]
    t = torch.randint(0, 1000, (32,))

    def step():
        unet.zero_grad()
        unet(x, t, encoder_hidden_states=enc).sample.pow(2).mean().backward()
    with FlopCounterMode(display=False) as fc:
        step()
    flops = fc.get_total_flops()
    out["unet_train_gflop_per_32"] = flops / 1e9
    out["unet_train_gflops_1t"] = flops / _median_time(step, args.reps) / 1e9
    out["fraction_of_1t_matmul_peak"] = out["unet_train_gflops_1t"] / out["matmul_gflops_1t"]
    torch.set_num_threads(args.threads)
    return out


def _reference_step(bb, unet, ref, opt, w_img, l_img, enc, beta, gen):
    """The reference formulation's inner step (diffusers train_diffusion_dpo.py, as described in
    the module docstring). Returns the loss."""
    feed = torch.cat([w_img, l_img]).float() / 255.0
    latents = bb.pipe.vae.encode(feed * 2 - 1).latent_dist.sample() * bb.pipe.vae.config.scaling_factor
    n = len(w_img)
    noise = torch.randn((n,) + latents.shape[1:], generator=gen).repeat(2, 1, 1, 1)
    t = torch.randint(0, 1000, (n,), generator=gen).repeat(2)
    noisy = bb.noise_scheduler.add_noise(latents, noise, t)
    cond = torch.cat([enc, enc])
    pred = unet(noisy, t, encoder_hidden_states=cond).sample
    losses = (pred.float() - noise.float()).pow(2).mean(dim=(1, 2, 3))
    mw, ml = losses.chunk(2)
    with torch.no_grad():
        rpred = ref(noisy, t, encoder_hidden_states=cond).sample
        rl = (rpred.float() - noise.float()).pow(2).mean(dim=(1, 2, 3))
    rw, rll = rl.chunk(2)
    inside = -0.5 * beta * ((mw - ml) - (rw - rll))
    loss = -torch.nn.functional.logsigmoid(inside).mean()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss


WARM = 5          # steps excluded from the steps/s of both (set-up, first-call allocations)


DPO_CAPTION = "two red circles on a blue background"


def dpo_setup(backbone: str, cache: Path, n: int = 64):
    """The DPO benchmarks' backbone, job config, n pairs of base samples of one caption and the
    base UNet's state (to reset the policy before each run)."""
    import copy
    from bench.data.pairs import PairData
    from bench.sample import generate
    bb, job = _backbone(backbone, cache)
    imgs = generate(bb, [DPO_CAPTION] * (2 * n), list(range(2 * n)), progress=False)
    data = PairData(imgs[:n], imgs[n:], [DPO_CAPTION] * n, torch.zeros(n, dtype=torch.bool))
    return bb, job, data, copy.deepcopy(bb.pipe.unet.state_dict())


def dpo(args) -> dict:
    import copy
    from bench.train import TrainConfig, train
    from methods.dpo import DPO, DPOConfig
    n, caption = 64, DPO_CAPTION
    bb, job, data, base = dpo_setup(args.backbone, Path(args.cache), n)
    B = job.train.batch_size

    def ours(ref_draws: int, ema) -> float:
        bb.pipe.unet.load_state_dict(base)
        cfg = TrainConfig(steps=args.steps, batch_size=B, lr=1e-5, ref_draws=ref_draws, ema_decay=ema,
                          empty_prompt_prob=0.0, log_every=WARM, checkpoint_every=0)
        _, hist = train(bb, DPO(DPOConfig()), data, cfg, seed=0, progress=False,
                        ref_cache_dir=Path(args.cache) / "reference")
        # steady state: from the end of step WARM to the last step (set-up and first steps excluded)
        return (hist[-1]["step"] - hist[0]["step"]) / (hist[-1]["wall_s"] - hist[0]["wall_s"])

    def reference() -> float:
        bb.pipe.unet.load_state_dict(base)
        unet = bb.pipe.unet.train().requires_grad_(True)
        ref = copy.deepcopy(unet).requires_grad_(False).eval()
        opt = torch.optim.AdamW(unet.parameters(), lr=1e-5, weight_decay=1e-2)
        enc = bb.encode_prompts([caption] * B)["encoder_hidden_states"]
        gen = torch.Generator().manual_seed(0)
        for s in range(args.steps):
            if s == WARM:
                t = time.perf_counter()
            i = torch.randint(0, n, (B,), generator=gen)
            _reference_step(bb, unet, ref, opt, data.winners[i], data.losers[i], enc, 5000.0, gen)
        return (args.steps - WARM) / (time.perf_counter() - t)

    ours(args.ref_draws, None)            # fills the reference-error cache (its cost is reported below)
    runs = {"reference": [], "ours_live_ref_no_ema": [], "ours_live_ref_ema": [],
            f"ours_ref_draws{args.ref_draws}_no_ema": [], f"ours_ref_draws{args.ref_draws}_ema": []}
    for _ in range(args.reps):            # interleaved
        runs["reference"].append(reference())
        runs["ours_live_ref_no_ema"].append(ours(0, None))
        runs["ours_live_ref_ema"].append(ours(0, 0.99))
        runs[f"ours_ref_draws{args.ref_draws}_no_ema"].append(ours(args.ref_draws, None))
        runs[f"ours_ref_draws{args.ref_draws}_ema"].append(ours(args.ref_draws, 0.99))
    out = {f"{k}_steps_per_s": statistics.median(v) for k, v in runs.items()}
    ref_sps = out["reference_steps_per_s"]
    out.update({f"{k}_ratio": out[f"{k}_steps_per_s"] / ref_sps for k in runs if k != "reference"})
    out["loss_gap_same_noise"] = _loss_gap(bb, data, base, B, caption)
    return out


def _loss_gap(bb, data, base, B, caption) -> float:
    """|loss(ours, cached reference errors) - loss(reference formulation)| on identical weights,
    noise and timesteps (the draws of train.ref_draws), at initialisation."""
    import copy
    from bench.objective import per_sample_error
    from bench.train import Batch, TrainConfig, _reference_draws, setup_policy
    from methods.dpo import DPO, DPOConfig
    bb.pipe.unet.load_state_dict(base)
    cfg = TrainConfig(batch_size=B, ref_draws=2, empty_prompt_prob=0.0)
    captions = sorted({caption, ""})
    enc = bb.encode_prompts(captions)
    unet, reference = setup_policy(bb.pipe.unet, cfg)
    draws = _reference_draws(bb, DPO(DPOConfig()), data, reference, enc, {c: i for i, c in enumerate(captions)},
                             cfg, 1000, None, False)
    i = torch.arange(B)
    b = Batch(torch.cat([data.winners[i], data.losers[i]]), [caption] * (2 * B), True, groups=i)
    noise, t, _, cached = draws.take(b, torch.Generator().manual_seed(3))
    latents = bb.encode_images(b.images.float() / 255.0)
    cond = {"encoder_hidden_states": enc["encoder_hidden_states"][[captions.index(caption)] * (2 * B)]}
    with torch.no_grad():
        err = per_sample_error(bb, unet, latents, noise, t, cond)
        ref = copy.deepcopy(unet)
        live = per_sample_error(bb, ref, latents, noise, t, cond)
    perturb = torch.linspace(-1e-4, 1e-4, 2 * B)            # a policy that differs from the reference
    ours, _ = DPO(DPOConfig()).loss(err + perturb, cached)
    theirs, _ = DPO(DPOConfig()).loss(err + perturb, live)
    return float((ours - theirs).abs())


def sample(args) -> dict:
    """Eager and torch.compile'd sampling against a direct pipeline call, on 64 eval prompts x seeds;
    the compiled images are compared with the eager ones pixel by pixel and by their judged
    attributes (a change of sampler speed must not change what the base model draws)."""
    bb, job = _backbone(args.backbone, Path(args.cache))
    from bench.evaluate import attribute_table, eval_set
    from bench.sample import generate, initial_latents
    prompts = [p.text for p in eval_set(job.eval, job.world)][:64]
    seeds = [i % 8 for i in range(len(prompts))]

    def direct():
        return bb.pipe(prompts, latents=initial_latents(bb, prompts, seeds), height=bb.resolution, width=bb.resolution,
                       num_inference_steps=bb.num_inference_steps, guidance_scale=bb.guidance_scale, output_type="pt")
    t = time.perf_counter()
    compiled_first = generate(bb, prompts, seeds, progress=False, compile=True)
    compile_s = time.perf_counter() - t
    fns = {"direct": direct, "ours": lambda: generate(bb, prompts, seeds, progress=False),
           "ours_compiled": lambda: generate(bb, prompts, seeds, progress=False, compile=True)}
    res = {k: [] for k in fns}
    for _ in range(args.reps):                     # interleaved
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            res[name].append(len(prompts) / (time.perf_counter() - t))
    out = {f"{k}_images_per_s": statistics.median(v) for k, v in res.items()}
    out["ours_vs_direct"] = out["ours_images_per_s"] / out["direct_images_per_s"]
    out["compiled_vs_ours"] = out["ours_compiled_images_per_s"] / out["ours_images_per_s"]
    out["first_compiled_call_s"] = compile_s
    eager = generate(bb, prompts, seeds, progress=False)
    diff = (eager.int() - compiled_first.int()).abs()
    out["compiled_pixels_differing"] = float((diff > 0).float().mean())
    out["compiled_max_pixel_diff"] = int(diff.max())
    a, b = attribute_table(eager, prompts), attribute_table(compiled_first, prompts)
    out["compiled_images_judged_differently"] = int((a != b).any(axis=1).sum())
    return out


WORK = """
import sys, time, torch
sys.argv = ["x"]
from benchmarks.perf import _backbone
from bench.sample import generate
from pathlib import Path
bb, _ = _backbone("{backbone}", Path("{cache}"))
t = time.perf_counter()
generate(bb, ["two red circles on a blue background"] * 128, list(range(128)), progress=False, compile={compile})
print(time.perf_counter() - t)
"""


def parallel(args) -> dict:
    """Two 1-thread processes doing one unit each vs one 2-thread process doing two units."""
    root = Path(__file__).resolve().parent.parent

    def procs(n: int, threads: int, units: int, compile: bool) -> float:
        code = WORK.format(backbone=args.backbone, cache=args.cache, compile=compile)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(root),
               "TORCHINDUCTOR_CACHE_DIR": str(Path(args.cache) / "inductor")}
        t = time.perf_counter()
        ps = [subprocess.Popen([sys.executable, "-c", code * units], env=env, stdout=subprocess.PIPE) for _ in range(n)]
        for p in ps:
            p.wait()
        return time.perf_counter() - t
    procs(1, 1, 1, True)                            # fills inductor's on-disk cache
    runs = {"one_2thread": [], "two_1thread": [], "two_1thread_compiled": []}
    for _ in range(max(1, args.reps // 2)):        # the same 256 images each way, interleaved
        runs["one_2thread"].append(procs(1, 2, 2, False))
        runs["two_1thread"].append(procs(2, 1, 1, False))
        runs["two_1thread_compiled"].append(procs(2, 1, 1, True))
    med = {k: statistics.median(v) for k, v in runs.items()}
    return {**{f"{k}_wall_s": v for k, v in med.items()},
            "throughput_two_1thread_vs_one_2thread": med["one_2thread"] / med["two_1thread"],
            "throughput_two_1thread_compiled_vs_one_2thread": med["one_2thread"] / med["two_1thread_compiled"]}


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if any(a == "--model" or a.startswith("--model=") for a in argv):     # real-size UNets (issue 19)
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from perf_real import main as real_main
        real_main(argv)
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="tiny-sd15")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch threads for dpo and sample (1: as a parallel job)")
    p.add_argument("--ref-draws", type=int, default=4)
    p.add_argument("--parts", default="peak,dpo,sample,parallel")
    p.add_argument("--cache", default=None)
    a = p.parse_args(argv)
    if a.cache is None:
        a.cache = tempfile.mkdtemp(prefix="perf-cache-")
    torch.set_num_threads(a.threads)
    out = {"threads": a.threads, "backbone": a.backbone}
    for part in a.parts.split(","):
        t = time.time()
        out[part] = {k: round(v, 6) if isinstance(v, float) and not math.isnan(v) else v
                     for k, v in globals()[part](a).items()}
        print(json.dumps({part: out[part], "wall_s": round(time.time() - t, 1)}), flush=True)


if __name__ == "__main__":
    main()
