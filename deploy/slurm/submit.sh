#!/usr/bin/env bash
# Queues the shards as an array job and the merge after them: run from deploy/ (deploy/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
set -a; . slurm/params.env; set +a
jobs=$(sbatch --parsable --array="0-$((SHARDS - 1))" --export=ALL,ONNX_UNLEARN_DEPLOY="$PWD" slurm/shards.sbatch)
sbatch --dependency=afterok:"${jobs%%;*}" --export=ALL,ONNX_UNLEARN_DEPLOY="$PWD" slurm/merge.sbatch
