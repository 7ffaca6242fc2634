#!/usr/bin/env bash
# Times `infaas-real profile zoo=digits` cold (empty cache) and warm (same cache) side by side
# and prints the ratio. Issue 3 asks: cold < 3 min on 2 vCPUs, warm >= 5x faster.
# Usage: benchmarks/bench_profile_digits.sh [extra overrides...]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
CACHE=$(mktemp -d)
OUT=$(mktemp -d)
trap 'rm -rf "$CACHE" "$OUT"' EXIT
run() {
  local start end
  start=$(date +%s.%N)
  "$PY" -m infaas_real profile zoo=digits cache_dir="$CACHE" out="$OUT/$1.csv" progress=false "${@:2}" >/dev/null 2>&1
  end=$(date +%s.%N)
  echo "$end - $start" | bc
}
cold=$(run cold "$@")
warm=$(run warm "$@")
printf 'digits profile: cold %.1f s, warm %.1f s, ratio %.1fx (nproc=%s, load=%s)\n' \
  "$cold" "$warm" "$(echo "$cold / $warm" | bc -l)" "$(nproc)" "$(cut -d' ' -f1 /proc/loadavg)"
