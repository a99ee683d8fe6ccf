#!/usr/bin/env bash
# A model-registry hook: when a deletion request arrives for an MLflow-style model version (a folder holding `MLmodel`
# with the ONNX flavour and the model file it names), run `onnx-unlearn unlearn` and either accept — write the next
# version folder: the new model, an updated MLmodel, report.json and report.md — or reject, leaving no next version and
# the reports in NEXT.rejected/ for a reviewer.
#
#   examples/registry/hook.sh VERSION_DIR REQUEST.json NEXT_VERSION_DIR
#
# REQUEST.json is an unlearning request (`onnx-unlearn unlearn --request`: train, forget, corrected, targets such as
# requireAccuracy or targetExposure; paths relative to the request file). The model, --out and --report come from here.
# Exit codes: 0 accepted, 1 rejected (a target missed, or no effective change), 2 bad input (nothing written).
# ONNX_UNLEARN names the tool (default: onnx-unlearn on PATH), e.g. "dotnet path/to/onnx-unlearn.dll".
set -uo pipefail

if [ $# -ne 3 ]; then echo "usage: $0 VERSION_DIR REQUEST.json NEXT_VERSION_DIR" >&2; exit 2; fi
version=$1 request=$2 next=$3
tool=${ONNX_UNLEARN:-onnx-unlearn}
read -r -a tool_cmd <<< "$tool"

fail() { echo "hook: $*" >&2; exit 2; }
[ -f "$version/MLmodel" ] || fail "'$version' has no MLmodel file; give an MLflow model version folder"
[ -f "$request" ] || fail "request file '$request' does not exist"
[ -e "$next" ] && fail "'$next' already exists; the next version folder must be new"

# The ONNX flavour's model file: `data:` under `flavors:` → `onnx:` (MLflow writes `data: model.onnx`).
model_file=$(awk '
  /^flavors:/ { in_flavors = 1; next }
  in_flavors && /^[^ ]/ { in_flavors = 0 }
  in_flavors && /^  onnx:/ { in_onnx = 1; next }
  in_onnx && /^  [^ ]/ { in_onnx = 0 }
  in_onnx && /^    data:/ { sub(/^    data:[ ]*/, ""); print; exit }
' "$version/MLmodel")
[ -n "$model_file" ] || fail "'$version/MLmodel' has no ONNX flavour (flavors: onnx: data: MODEL.onnx)"
[ -f "$version/$model_file" ] || fail "the ONNX flavour names '$model_file', which is not in '$version'"

staging=$(mktemp -d "${next%/}.staging.XXXXXX") || fail "cannot create a staging folder next to '$next'"
trap 'rm -rf "$staging"' EXIT
"${tool_cmd[@]}" unlearn --request "$request" "$version/$model_file" --out "$staging/$model_file" --report "$staging/report.json" > /dev/null
code=$?
if [ -f "$staging/report.json" ]; then
  "${tool_cmd[@]}" report "$staging/report.json" --out "$staging/report.md" > /dev/null || fail "could not render report.md"
fi

case $code in
  0)
    # The next version: the ONNX flavour unchanged but for a fresh creation time, and a note of what it came from.
    created=$(date -u +"%Y-%m-%d %H:%M:%S.000000")
    sed -e "s/^utc_time_created:.*/utc_time_created: '$created'/" -e '/^model_uuid:/d' "$version/MLmodel" > "$staging/MLmodel"
    {
      echo "model_uuid: $(cat /proc/sys/kernel/random/uuid 2>/dev/null || date +%s%N)"
      echo "metadata:"
      echo "  unlearned_from: $(cd "$version" && pwd)"
      echo "  unlearning_report: report.json"
    } >> "$staging/MLmodel"
    mv "$staging" "$next" && trap - EXIT
    echo "accepted: $next"
    exit 0 ;;
  3|4)
    rm -f "$staging/$model_file"
    mv "$staging" "${next%/}.rejected" && trap - EXIT
    why=$([ $code -eq 3 ] && echo "a stated target was missed" || echo "no effective change")
    echo "rejected ($why): reports in ${next%/}.rejected/" >&2
    exit 1 ;;
  *)
    echo "hook: onnx-unlearn failed with exit code $code; nothing written" >&2
    exit 2 ;;
esac
