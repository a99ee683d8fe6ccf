#!/usr/bin/env bash
# Side-by-side benchmark of OnnxUnlearn (ONNX Runtime) and PyTorch: gradients and Hessian-vector products on the
# testdata fixtures, same model, data, batch size and thread count on both sides.
#
#   benchmarks/run.sh                 # writes docs/benchmarks/{gradients,hvp}.md and .json
#
# Environment knobs (defaults in brackets):
#   THREADS   thread counts, ORT IntraOpNumThreads = torch.set_num_threads      ["1 2"]
#   CONFIGS   batch:tile pairs; tile K repeats the 64 fixture samples K times   ["64:1 256:64"]
#   FIXTURES  comma-separated fixture names                                     [logreg,mlp,cnn,transformer]
#   ROUNDS    alternating rounds (ours/torch, then torch/ours...); the report
#             keeps each side's best round (lowest median), against noise      [2]
#   PROBES    Hutchinson probes                                                 [16]
#   REPEATS   timed samples per measurement                                     [7]
#   OUT       output folder                                                     [docs/benchmarks]
#   PYTHON    Debian's python with python3-torch and python3-onnx               [/usr/bin/python3]
set -euo pipefail
cd "$(dirname "$0")/.."

THREADS=${THREADS:-"1 2"}
CONFIGS=${CONFIGS:-"64:1 256:64"}
FIXTURES=${FIXTURES:-logreg,mlp,cnn,transformer}
ROUNDS=${ROUNDS:-2}
PROBES=${PROBES:-16}
REPEATS=${REPEATS:-7}
OUT=${OUT:-docs/benchmarks}
PYTHON=${PYTHON:-/usr/bin/python3}

# These two slow down torch's OpenBLAS on this machine; they are not wanted for either side.
unset OPENBLAS_CORETYPE OPENBLAS_L2_SIZE

dotnet build benchmarks/Bench/Bench.csproj -c Release -nologo -v quiet >&2
BENCH=(dotnet benchmarks/Bench/bin/Release/net10.0/Bench.dll)

raw=$(mktemp -d)
trap 'rm -rf "$raw"' EXIT

# Machine and versions.
cpu=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
os=$(. /etc/os-release && echo "$PRETTY_NAME")
torchpkg=$(dpkg-query -W -f '${Version}' python3-torch 2>/dev/null || echo "?")
ort=$(sed -n 's/.*Include="Microsoft.ML.OnnxRuntime" Version="\([^"]*\)".*/\1/p' lib/OnnxUnlearn.csproj)
blaslib=$(readlink -f /usr/lib/"$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)"/libblas.so.3 2>/dev/null || echo '?')
"$PYTHON" - "$raw/meta.json" "$cpu" "$(nproc)" "$(dotnet --version)" "$ort" "$os" "$(git rev-parse --short HEAD)" \
  "$(cut -d' ' -f1-3 /proc/loadavg)" "$THREADS" "$CONFIGS" "$ROUNDS" "$PROBES" "$REPEATS" "$blaslib" "$torchpkg" <<'PY'
import datetime, json, platform, re, sys, numpy, onnx, torch
out, cpu, cores, dotnet, ort, os_, commit, load, threads, configs, rounds, probes, repeats, blaslib, torchpkg = sys.argv[1:]
m = re.search(r"BLAS_INFO=([^,\s]+)", torch.__config__.show())
blas = f"{m.group(1) if m else '?'} -> {blaslib}"
json.dump({"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "cpu": cpu,
           "cores": int(cores), "os": os_, "kernel": platform.release(), "dotnet": dotnet, "onnxruntime": ort,
           "torch": torch.__version__, "torch_package": torchpkg, "torch_blas": blas, "python": platform.python_version(),
           "numpy": numpy.__version__, "onnx": onnx.__version__, "commit": commit, "loadavg_start": load,
           "threads": threads.split(), "configs": configs.split(), "rounds": int(rounds), "probes": int(probes),
           "repeats": int(repeats)}, open(out, "w"))
PY

ours() { "${BENCH[@]}" "$@"; }
torch_() { OMP_NUM_THREADS=$t OPENBLAS_NUM_THREADS=$t "$PYTHON" benchmarks/torch_bench.py "$@"; }

for mode in grad hvp; do
  for t in $THREADS; do
    for cfg in $CONFIGS; do
      batch=${cfg%%:*} tile=${cfg##*:}
      for fixture in ${FIXTURES//,/ }; do
        args=("$mode" --fixtures "$fixture" --threads "$t" --batch "$batch" --tile "$tile" --probes "$PROBES" --repeats "$REPEATS")
        for ((r = 0; r < ROUNDS; r++)); do
          echo "[$mode threads=$t batch=$batch tile=$tile $fixture round $r]" >&2
          if ((r % 2 == 0)); then order="ours torch_"; else order="torch_ ours"; fi
          for side in $order; do
            $side "${args[@]}" | sed "s/}\$/, \"round\": $r}/" >> "$raw/$mode.jsonl"
          done
        done
      done
    done
  done
done

"$PYTHON" - "$raw/meta.json" "$(cut -d' ' -f1-3 /proc/loadavg)" <<'PY'
import json, sys
m = json.load(open(sys.argv[1])); m["loadavg_end"] = sys.argv[2]; json.dump(m, open(sys.argv[1], "w"))
PY
mkdir -p "$OUT"
"$PYTHON" benchmarks/report.py "$raw" "$OUT"
