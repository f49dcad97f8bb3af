#!/bin/bash

# Parameters
#SBATCH --account=prefs
#SBATCH --array=0-53%6
#SBATCH --cpus-per-task=8
#SBATCH --error=/shared/sweep/.submitit/%A_%a/%A_%a_0_log.err
#SBATCH --gpus-per-node=2
#SBATCH --job-name=bench
#SBATCH --mem=64GB
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --open-mode=append
#SBATCH --output=/shared/sweep/.submitit/%A_%a/%A_%a_0_log.out
#SBATCH --partition=gpu
#SBATCH --signal=USR2@120
#SBATCH --time=120
#SBATCH --wckey=submitit

# setup
export OMP_NUM_THREADS=8
export DIFFPREF_CACHE=/shared/cache

# command
export SUBMITIT_EXECUTOR=slurm
srun --unbuffered --output /shared/sweep/.submitit/%A_%a/%A_%a_%t_log.out --error /shared/sweep/.submitit/%A_%a/%A_%a_%t_log.err PYTHON -u -m submitit.core._submit /shared/sweep/.submitit/%j
