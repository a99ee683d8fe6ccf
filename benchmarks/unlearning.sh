#!/bin/sh
# The unlearning experiments (docs/benchmarks/unlearning.md): builds the CLI once, then runs every
# scenario × selection × update on the committed models of testdata/experiments/ and writes
# docs/benchmarks/unlearning-<arch>.{md,json}. Usage: benchmarks/unlearning.sh [mlp] [cnn];
# the extra tables: benchmarks/unlearning.sh --damping-sweep mlp cnn, --tau-sweep mlp cnn, --overlap mlp cnn
# Needs the .NET 10 SDK and Debian's /usr/bin/python3 with numpy (no torch, no onnxruntime).
# The models and data are regenerated (optional, needs python3-torch) with testdata/experiments/generate.py;
# the PyTorch cross-check is testdata/experiments/reference_unlearn.py.
set -eu
cd "$(dirname "$0")/.."
dotnet build tool -c Release -v quiet -nologo >/dev/null
[ $# -gt 0 ] || set -- mlp
exec /usr/bin/python3 benchmarks/unlearning.py "$@"
