#!/usr/bin/env bash
# Profile the imagenet zoo on this machine's GPU (torch fp16/bf16 up to batch 64; TensorRT
# fp16 when the `tensorrt` package imports, otherwise reported and skipped) and merge the
# measured rows into catalogs/imagenet.csv, replacing the modeled rows of that GPU class
# and framework. Without a CUDA GPU it says so and exits 0 without touching anything.
# Usage: benchmarks/gpu_profile.sh [extra overrides, e.g. models=[resnet50,vit_b_16]]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu_profile: no CUDA GPU visible to torch; nothing to do" >&2
  exit 0
fi
"$PY" -m infaas_real profile zoo=imagenet device=cuda out=catalogs/imagenet-gpu.csv "$@"
"$PY" -m infaas_real.merge_catalog catalogs/imagenet.csv catalogs/imagenet-gpu.csv
