#!/bin/bash
# One candidate world of docs/world.md: fine-tune the shipped tiny-sd15 on the candidate corpus
# (cached by recipe hash), report its base quality, then run DPO seed 0 on it.
# usage: benchmarks/world_candidate.sh NAME "world overrides" [steps] [lr]
#   e.g. benchmarks/world_candidate.sh E "world.modes.frame_backgrounds=[white,black] world.modes.frame_rate=0.7 world.modes.stray_rate=0.6"
# Writes $OUT/NAME.pretrain.json (base_quality) and $OUT/results/NAME (the DPO job); 1 thread.
set -euo pipefail
NAME=$1; WORLD=$2; STEPS=${3:-400}; LR=${4:-2e-4}
OUT=${OUT:-explore}; PY=${PY:-python}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 DIFFPREF_CACHE=${DIFFPREF_CACHE:-$OUT/cache}
mkdir -p "$OUT"
PRE="backbone=tiny-sd15 backbone.pretrain.init_from=null backbone.pretrain.warm_start=tiny-sd15
     backbone.pretrain.steps=$STEPS backbone.pretrain.lr=$LR backbone.pretrain.warmup=20 backbone.pretrain.seed=7"
# shellcheck disable=SC2086
$PY -m bench pretrain $PRE $WORLD 2> "$OUT/$NAME.pretrain.log" | sed -n '/^{/,$p' > "$OUT/$NAME.pretrain.json"
WEIGHTS=$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['weights'])" "$OUT/$NAME.pretrain.json")
# shellcheck disable=SC2086
$PY -m bench run backbone=tiny-sd15 backbone.weights="$WEIGHTS" method=dpo seed=0 $WORLD \
    paths.results="$OUT/results/$NAME" > "$OUT/$NAME.dpo.log" 2>&1
