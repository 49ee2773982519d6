#!/bin/bash
# The study as a SLURM array, one slice of its runs per task, sharing results through the project's default
# DVC remote (a folder every node mounts, or s3://..., set once: `dvc remote add -d shared /shared/dvc`,
# committed in .dvc/config). Copy this file, adjust the #SBATCH lines and the clone step, then:
#
#   sbatch --array=1-4 examples/slurm_study.sh                       # 4 slices, one per task
#   STUDY_ARGS="-S study.seeds=[0,1,2,3,4]" sbatch --array=1-8 examples/slurm_study.sh
#
# The array's range is yours (1-4, 0-3, ...): slice K of N is this task's place in it, K from 1, and N the
# array's task count. Assemble afterwards, on any machine with the remote (or as a dependent job:
# `sbatch --dependency=afterany:<jobid> --wrap 'cd <clone> && make study'`):
#
#   make study            # restores every run a slice pushed, trains only what is missing, prints the table
#
#SBATCH --job-name=semisup-study
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --time=04:00:00
set -euo pipefail

# Each task works in a clone of the project at the commit the study is of (node-local disk is best):
#   git clone --quiet "$REPO_URL" "$TMPDIR/semisup" && cd "$TMPDIR/semisup" && git checkout "$COMMIT"
#   make setup && source .venv/bin/activate
# (here: this script runs in such a clone, with dvc and python on PATH)

# --- slice command (tests/test_slices.py runs these lines) ---
K=$(( SLURM_ARRAY_TASK_ID - ${SLURM_ARRAY_TASK_MIN:-1} + 1 ))
N=${SLURM_ARRAY_TASK_COUNT:?run this file with sbatch --array}
read -ra args <<< "${STUDY_ARGS:-}"
python -m drivers.study --slice "$K/$N" "${args[@]}"
# --- end ---
