#!/usr/bin/env bash
# The equal-budget rerun: every method but DPO at 1000 steps, in this order; finished jobs are skipped
cd "$(git rev-parse --show-toplevel)"   # these ran from a clean checkout of a263c88
export DIFFPREF_CACHE=${DIFFPREF_CACHE:-.cache/diffpref}
PY=${PY:-python}
B=tiny-sd15,tiny-sd21,tiny-sdxl
run() { echo "== $(date -u +%H:%M:%S) $*"; $PY -m bench run -m "$@" seed=0,1,2 hydra/launcher=parallel progress=false; echo "== $(date -u +%H:%M:%S) rc=$?"; }
run method=kto backbone=$B train.steps=1000
run method=sft backbone=$B train.steps=1000
run method=balanced_dpo backbone=$B method.beta=2500 method.ref_refresh_every=333 train.steps=1000
run method=cpo backbone=$B method.beta=2500 train.steps=1000
