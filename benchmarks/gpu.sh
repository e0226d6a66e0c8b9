#!/usr/bin/env bash
# GPU benchmark of the four rows at the paper's scale, in under 5 minutes on one H100-class GPU:
#   1. float32: the step table (project vs naive, distill/plain ratios, data shares, memory) and
#      the per-model epoch-time estimates at the paper's training-set sizes (run.py --epochs-table:
#      MNIST 48,000 = 60,000 x 4/5; ModelNet40 ~7,874 = 9,843 x 4/5; jets ~504,000 = ~630,000
#      (hls4ml_LHCjet_150p_train, Zenodo 3602260) x 4/5; the constants are TRAIN_SPLIT in run.py);
#      and from them the GPU-hours of the whole grid of config.yaml (an estimate: job counts x
#      epoch times x epochs, at the maximum epochs and at 50 and 100 epochs);
#   2. the same steps under bfloat16 autocast (precision: bf16, the config's default on a GPU;
#      fewer steps; skipped with BF16=0).
# Each pass is capped by `timeout` (190 s + 90 s); progress goes to stderr, the tables to stdout,
# the CSVs to benchmarks/results-cuda-paper.csv and results-cuda-paper-bf16.csv.
#
#   bash benchmarks/gpu.sh [extra run.py options, e.g. --rows resnet-mlp]
#   PYTHON=/path/to/python STEPS=20 BF16=0 bash benchmarks/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
    if [[ -x .venv/bin/python ]] && .venv/bin/python -c "import torch" 2>/dev/null; then
        PY=.venv/bin/python
    else
        PY=python3
    fi
fi
STEPS="${STEPS:-20}"
BF16="${BF16:-1}"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"

# On `timeout`'s SIGTERM run.py prints (and writes) what it measured so far.
timeout 190 "$PY" benchmarks/run.py --device cuda --scale paper --steps "$STEPS" --epochs-table \
    --csv benchmarks/results-cuda-paper.csv "$@" || echo "# float32 pass ended with status $?"

if [[ "$BF16" != 0 ]]; then
    timeout 90 "$PY" benchmarks/run.py --device cuda --scale paper --steps $(( (STEPS + 1) / 2 )) \
        --min-chunk-ms 20 --eval-batches 1 --bf16 --csv benchmarks/results-cuda-paper-bf16.csv \
        "$@" || echo "# bf16 pass ended with status $?"
fi
