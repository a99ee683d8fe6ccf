#!/bin/sh
# Forgetting with the defaults (docs/benchmarks/forgetting.md): `unlearn` with no tuning flag on the digits label flips
# and backdoors of testdata/experiments/ (CNN and MLP), against the retrained models PyTorch trained next to them.
# Prints the table (docs/benchmarks/forgetting.md) and, run without flags, writes docs/benchmarks/forgetting.json.
# Usage: benchmarks/forgetting.sh [extra unlearn flags, e.g. --decision-patience 0 or --select gradient]
# Needs the .NET 10 SDK and Debian's /usr/bin/python3 with numpy (no torch).
set -eu
cd "$(dirname "$0")/.."
dotnet build tool -c Release -v quiet -nologo >/dev/null
exec /usr/bin/python3 benchmarks/forgetting.py "$@"
