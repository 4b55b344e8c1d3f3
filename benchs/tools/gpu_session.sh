#!/usr/bin/env bash
# One session on a lent GPU machine (issue 16): kbqa's GPU path measured, then the test suite run there.
# The machine has its own torch/CUDA and no registry; the other packages travel as wheels in .whl/, the models'
# configs and tokenizers in .gpu-assets/ (both made by benchs/tools/gpu_wheels.sh). Writes everything under $OUT.
#   bash benchs/tools/gpu_session.sh [seconds left for the tests]
set -u
OUT=${OUT:-/tmp/kbqa-gpu-out}
mkdir -p "$OUT"
TEST_SECONDS=${1:-240}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  >"$OUT/pip.log" 2>&1 || { tail -20 "$OUT/pip.log"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv | tee "$OUT/nvidia-smi.txt"
python3 -c "import torch, transformers, sentence_transformers as st; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__, 'st', st.__version__)"
python -m benchs.speed.gpu_check --assets .gpu-assets ${GPU_CHECK_ARGS:-} --out "$OUT/gpu_check.md" 2>&1 | grep -v -E "it/s\]|Loading weights" | tee "$OUT/gpu_check.log"
# The suite on this machine, with the tests that need the real prepared models left out (too large to travel).
timeout "$TEST_SECONDS" python3 -m pytest -q -m "not integration" -p no:cacheprovider -o addopts="" \
  --timeout 120 -n 8 -rfs 2>&1 | tail -60 | tee "$OUT/pytest.log"
echo "pytest exit: ${PIPESTATUS[0]}" | tee -a "$OUT/pytest.log"
