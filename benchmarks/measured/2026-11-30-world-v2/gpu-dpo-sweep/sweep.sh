#!/bin/bash
# issue 17: DPO settings per tiny backbone on world v2, judged on the TRAIN prompts (not eval).
# Ran on the lent H200 machine (16 CPU cores, torch 2.11.0+cu130, fp32 on the GPU), 16 jobs at a time.
# The repo root there held .dev/: code/ = bench, methods, scorers, sweeps of branch world-v2 at aa71745
# (world-v2 assets plus v1's json files), whl/ = wheels of the packages that image lacks (diffusers
# 0.42.1, transformers 5.24.0, huggingface_hub 2.4.0 + httpx2/httpcore2/truststore, hydra-core 1.3.8,
# omegaconf 2.3.1, hydra-joblib-launcher 1.2.0, tokenizers 0.23.3), antlr4/ (4.9.3, sdist only),
# summ.py = summarise.py here. Stages A and B in one call (A cut at 220 s: 32 of 36 jobs), C in a second.
set -u
T0=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .dev/whl/*.whl || exit 3
cp -r .dev/antlr4 /tmp/site/
export PYTHONPATH=$PWD/.dev/code:/tmp/site DIFFPREF_CACHE=/tmp/cache PYTHONUNBUFFERED=1 HYDRA_FULL_ERROR=1
cd .dev/code
python3 -c "import bench.cli, diffusers, transformers, hydra, torch; print('imports ok', torch.__version__, torch.cuda.is_available(), diffusers.__version__, transformers.__version__)" || exit 4
nvidia-smi -L; nproc
COMMON="method=dpo eval.split=train eval.seeds_per_prompt=4 paths.results=/tmp/sw hydra/launcher=parallel progress=false"
stage() {  # name, seconds, overrides...
  local name=$1 secs=$2; shift 2
  echo "=== stage $name at $(( $(date +%s) - T0 ))s"
  timeout $secs python3 -m bench run -m $COMMON hydra.sweep.dir=/tmp/sw/hydra-$name "$@" > $OUT/log-$name.txt 2>&1
  echo "=== stage $name rc=$? at $(( $(date +%s) - T0 ))s"; grep -E "done tiny|Error|error" $OUT/log-$name.txt | tail -5
}
stage A 220 seed=0,1,2 method.beta=1000,2500,5000,10000 backbone=tiny-sd15,tiny-sd21,tiny-sdxl
stage B 110 seed=0,1 train.lr=3e-5 method.beta=2500,5000 backbone=tiny-sd15,tiny-sd21,tiny-sdxl
stage C 215 seed=0,1,2 train.steps=1000 method.beta=2500 backbone=tiny-sd15,tiny-sd21,tiny-sdxl
python3 ../summ.py /tmp/sw $OUT/sweep.json | tee $OUT/summary.txt
echo "total $(( $(date +%s) - T0 ))s"
