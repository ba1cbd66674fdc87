#!/usr/bin/env bash
# Benchmarks 1 and 2 and a QLoRA run on one CUDA GPU, against the same Trainer baseline scripts (run with
# --device cuda), in one invocation: bench/RESULTS-gpu.md.  Under 10 minutes on one recent GPU.
# Needs the installed environment (make install) with a CUDA build of torch, and bitsandbytes for QLoRA
# (without it the QLoRA benchmark is left out and the file says so).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
export HF_HUB_OFFLINE=1
"$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'bench/gpu.sh needs a CUDA GPU')"
only=classification,causal_lm
if "$PYTHON" -c "import bitsandbytes" 2>/dev/null; then only=$only,qlora; else echo "bitsandbytes missing: QLoRA left out" >&2; fi
"$PYTHON" bench/run.py --device cuda --repeats "${REPEATS:-2}" --only "$only" --results bench/RESULTS-gpu.md
