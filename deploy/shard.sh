#!/usr/bin/env bash
# The one step both schedulers run (deploy/README.md):
#   shard.sh part [COMMAND ARGS...]  shard K of $SHARDS, K from JOB_COMPLETION_INDEX (Kubernetes Indexed Job) or
#                                    SLURM_ARRAY_TASK_ID (Slurm array job): runs
#                                    onnx-unlearn COMMAND ARGS --shard K/$SHARDS --out $PARTS/part-K-of-$SHARDS.npz
#                                    (COMMAND ARGS default to $ARGS, split on spaces, for manifests that cannot pass a list)
#   shard.sh merge [OUT]             onnx-unlearn merge $PARTS/part-*-of-$SHARDS.npz --out OUT (default $OUT); merge
#                                    itself names any missing shard
# ONNX_UNLEARN is the tool's command line (default: onnx-unlearn), e.g. "dotnet /opt/onnx-unlearn/onnx-unlearn.dll".
set -euo pipefail
: "${SHARDS:?set SHARDS to the number of shards M}"
PARTS=${PARTS:-/work/parts}
read -r -a tool <<< "${ONNX_UNLEARN:-onnx-unlearn}"
mkdir -p "$PARTS"
case "${1:-}" in
  part)
    shift
    index=${JOB_COMPLETION_INDEX:-${SLURM_ARRAY_TASK_ID:-}}
    if [ -z "$index" ]; then
      echo "error: shard.sh part needs JOB_COMPLETION_INDEX (Kubernetes Indexed Job) or SLURM_ARRAY_TASK_ID (Slurm array job); neither is set" >&2
      exit 2
    fi
    if [ $# -eq 0 ]; then read -r -a args <<< "${ARGS:?set ARGS to the command and its arguments, e.g. 'sharpness /work/model.onnx --data /work/data.npz --estimator hutchinson'}"; set -- "${args[@]}"; fi
    exec "${tool[@]}" "$@" --shard "$index/$SHARDS" --out "$PARTS/part-$index-of-$SHARDS.npz"
    ;;
  merge)
    out=${2:-${OUT:?set OUT (or pass it) to the merged file}}
    shopt -s nullglob
    parts=("$PARTS"/part-*-of-"$SHARDS".npz)
    if [ ${#parts[@]} -eq 0 ]; then echo "error: no part files $PARTS/part-*-of-$SHARDS.npz; run the shards first" >&2; exit 2; fi
    exec "${tool[@]}" merge "${parts[@]}" --out "$out"
    ;;
  *)
    echo "error: usage: shard.sh part [COMMAND ARGS...] | shard.sh merge [OUT]" >&2
    exit 2
    ;;
esac
