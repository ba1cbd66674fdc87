#!/usr/bin/env bash
# Benchmarks 1 and 2 and a QLoRA run on one CUDA GPU, against the same Trainer baseline scripts (run with
# --device cuda), then DPO's and ORPO's held-out preference accuracy over 3 epochs, in one invocation:
# bench/RESULTS-gpu.md.  About 7 minutes on an H200 without the last part (2026-12-04), 2 repeats.
# Needs the installed environment (make install) with a CUDA build of torch, and bitsandbytes for QLoRA
# (without it the QLoRA benchmark is left out and the file says so).
# Then the ~1 B Llama workload (bench/gpu_1b.py: full fine-tuning and LoRA at 2,048 tokens, packed, with and
# without Liger and torch.compile, against the tuned Trainer): bench/RESULTS-gpu-1b.md; GPU_1B=0 leaves it out.
# Liger needs liger-kernel; without it the Liger sides are left out and the file says so.
# Then GRPO on SVAMP (bench/grpo_svamp.py: zero-shot, LoRA SFT, SFT then 100 GRPO steps, exact match on 300
# held-out problems, sampling and training tokens/s): bench/RESULTS-gpu-grpo.md; GPU_GRPO=0 leaves it out.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
export HF_HUB_OFFLINE=1
"$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'bench/gpu.sh needs a CUDA GPU')"
only=classification,causal_lm
if "$PYTHON" -c "import bitsandbytes" 2>/dev/null; then only=$only,qlora; else echo "bitsandbytes missing: QLoRA left out" >&2; fi
only=$only,preference_accuracy  # last: the speed figures are written first (run.py writes after each benchmark)
"$PYTHON" bench/run.py --device cuda --repeats "${REPEATS:-2}" --only "$only" --results bench/RESULTS-gpu.md
if [ "${GPU_1B:-1}" != 0 ]; then
  "$PYTHON" bench/gpu_1b.py --results bench/RESULTS-gpu-1b.md
fi
if [ "${GPU_GRPO:-1}" != 0 ]; then
  "$PYTHON" bench/grpo_svamp.py --grpo-steps 100 --runs bench/out/gpu-runs --results bench/RESULTS-gpu-grpo.md
fi
