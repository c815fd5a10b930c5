#!/usr/bin/env bash
# The distributed part of the one-shot GPU check (issue 22): the NCCL rows of bench_distributed.py, a
# torchrun embedding with one rank per GPU compared with the single-process one (equality, wall time).
# On a machine with one GPU only the 1-process rows run: NCCL refuses two ranks on one GPU, and a group of
# one is no group (task2vec.distributed does nothing then), so the NCCL collectives need 2+ GPUs.
# Meant to be joined into benchmarks/gpu_check.sh; run from the repository root on a CUDA machine:
#   TASK2VEC_SHARED=../shared bash benchmarks/gpu_check_distributed.sh [OUT_DIR]
set -euo pipefail
OUT=${1:-${OUT:-gpu_check_out}}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
: "${TASK2VEC_SHARED:?set TASK2VEC_SHARED to the shared data folder}"
export TASK2VEC_WEIGHTS=${TASK2VEC_WEIGHTS:-$TASK2VEC_SHARED/weights}

python - <<'EOF' | tee "$OUT/distributed_env.txt"
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "gpus", torch.cuda.device_count(),
      "nccl", torch.cuda.nccl.version() if torch.cuda.is_available() else None)
EOF

# NCCL rows: plain run, 1 torchrun process, one per GPU (1 process only where there is one GPU); 224 px, 1024 images
timeout 480 python benchmarks/bench_distributed.py --modes nccl --image-size 224 --max-samples 1024 --batch-size 64 \
    --json "$OUT/bench_distributed_nccl.json" 2>&1 | tee "$OUT/bench_distributed_nccl.log"
