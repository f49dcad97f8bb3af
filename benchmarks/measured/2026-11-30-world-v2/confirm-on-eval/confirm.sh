#!/bin/bash
# issue 17: the settings the train-prompt sweep favoured, confirmed on the eval split over seeds 0-2
cd /work/wt5   # a worktree of main at b45f0ad
export DIFFPREF_CACHE=/work/cache-v2 PYTHONPATH=/work/wt5
PY=/work/main/.venv/bin/python
$PY -m bench run -m method=dpo backbone=tiny-sd21 method.beta=1000 seed=0,1,2 hydra/launcher=parallel paths.results=/work/explore/confirm progress=false > /work/explore/confirm_sd21.log 2>&1
$PY -m bench run -m method=dpo backbone=tiny-sdxl method.beta=2500 train.steps=1000 seed=0,1,2 hydra/launcher=parallel paths.results=/work/explore/confirm progress=false > /work/explore/confirm_sdxl.log 2>&1
# then, after tiny-sdxl's result (not chosen by the train-prompt sweep, where it gave 0.527 on tiny-sd15):
# DIFFPREF_JOBS=3 $PY -m bench run -m method=dpo backbone=tiny-sd15 method.beta=2500 train.steps=1000 seed=0,1,2 hydra/launcher=parallel paths.results=/work/explore/confirm progress=false
