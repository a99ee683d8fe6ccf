#!/bin/sh
# The canary experiment (docs/benchmarks/canary.md): builds the CLI once, then runs every selection × update × F on the
# committed language models of testdata/experiments/canary/ and writes docs/benchmarks/canary-<arch>.{md,json}.
# Usage: benchmarks/canary.sh [lstm] [transformer]. Needs the .NET 10 SDK and python3 (no numpy, no torch).
# The models and data are regenerated (optional, needs python3-torch) with testdata/experiments/canary.py.
set -eu
cd "$(dirname "$0")/.."
dotnet build tool -c Release -v quiet -nologo >/dev/null
[ $# -gt 0 ] || set -- lstm
exec python3 benchmarks/canary.py "$@"
