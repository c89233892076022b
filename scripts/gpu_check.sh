#!/usr/bin/env bash
# Everything this project checks on a GPU, in one run (issue 3, item 4): the CUDA tests (the fused path
# on the GPU against the CPU reference in float64, bf16 autocast for every cell, "auto" choosing cuDNN or
# the fused kernels), then the cell benchmark against cuDNN in float32 and under bf16 autocast.
#
#   scripts/gpu_check.sh [OUTDIR]          # OUTDIR: where the logs and the benchmark tables go (default gpu-check)
#
# It needs only a Python with torch and pytest (PYTHON, default: .venv/bin/python, else python3): the
# package is taken from src/ (PYTHONPATH), and the tests run without tests/conftest.py (Hydra), so it
# also runs on a bare GPU machine with nothing installed from this project. The benchmark sections are
# written into a copy of docs/benchmarks.md in OUTDIR: compare, then copy it over the real one.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-gpu-check}
mkdir -p "$OUT_DIR"
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
status=0

"$PY" - <<'EOF' || exit 1
import torch
if not torch.cuda.is_available():
    raise SystemExit("gpu_check: torch sees no CUDA device; nothing to check here")
print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, cuDNN {torch.backends.cudnn.version()}")
EOF
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv

echo "== CUDA tests"
"$PY" -m pytest -q --noconftest -p no:cacheprovider -m gpu tests/layers/test_fast_paths.py 2>&1 \
  | tee "$OUT_DIR/tests.log" || status=1

echo "== benchmark against cuDNN"
cp docs/benchmarks.md "$OUT_DIR/benchmarks.md"
name=$("$PY" -c "import torch; print(torch.cuda.get_device_name())")
for dtype in float32 bf16-autocast; do
  "$PY" -m recur_attn.cli.bench --device cuda --cells all --impls auto --dtype "$dtype" --repeats 11 --warmup 2 \
    --title "GPU: $name, $dtype" --out "$OUT_DIR/benchmarks.md" --json "$OUT_DIR/bench-$dtype.json" 2>&1 \
    | tee "$OUT_DIR/bench-$dtype.log" || status=1
done
echo "gpu_check: done, status $status; results in $OUT_DIR"
exit $status
