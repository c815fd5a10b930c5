#!/usr/bin/env bash
# One-shot GPU check (issue 23): the CUDA tests and the CUDA rows of the benchmarks, in under 8 minutes
# on one H100/H200-class GPU. Figures go to stdout and to $OUT/<step>.txt (+ JSON where a benchmark
# writes it); copy them into benchmarks/README.md. Run from the repository root:
#
#     OUT=/tmp/gpu bash benchmarks/gpu_check.sh            # on the GPU machine
#     OUT=/tmp/gpu bash benchmarks/gpu_check.sh --dry-run  # on any CPU machine: every step at toy size
#
# The steps' time limits add up to 510 s (plus start-up) when every step runs to its limit; the expected run
# is under 8 minutes.
# --dry-run checks the script itself (each benchmark accepts the flags passed here) on the CPU in a few
# minutes; its figures mean nothing. Each step has its own time limit and a failing step does not stop
# the others; the summary at the end lists each step's exit status.
#
# Targets (one H100/H200): Fisher step <= 1.5x a plain forward+backward (bench_embed "MC ratio");
# fine-tuner >= 0.9x a plain PyTorch loop (bench_finetune); batched Mobius >= 100x the per-image CPU
# path (bench_mobius); embed >= 3,000 images/s JPEG to embedding for MobileNetV2 at 224 px (bench_embed
# "embed" row).
set -u -o pipefail

DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TASK2VEC_SHARED="${TASK2VEC_SHARED:-$PWD/../shared}"
export TASK2VEC_WEIGHTS="${TASK2VEC_WEIGHTS:-$TASK2VEC_SHARED/weights}"
if [ "$DRY" = 1 ]; then DEV=cpu; else DEV=cuda; fi
SUMMARY=()

step() {  # step NAME SECONDS COMMAND...: run with a time limit, output to stdout and $OUT/NAME.txt
    local name=$1 limit=$2
    shift 2
    local cmd="$*"
    cmd=${cmd//$'\n'/ }
    echo "=== $name (limit ${limit}s): ${cmd:0:300}"
    local t0=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.txt"
    local rc=${PIPESTATUS[0]}
    SUMMARY+=("$name: exit $rc, $((SECONDS - t0)) s")
    echo
}

python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" | tee "$OUT/device.txt"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv \
    | tee -a "$OUT/device.txt"

# 1. The CUDA tests (skipped on a CPU machine: then this only checks they are collected).
step pytest_cuda 90 python -m pytest -m cuda -q -p no:cacheprovider -rs tests

# The GPU rows (2-6). --dry-run has each benchmark's own argparse check these very flags (nothing runs),
# then runs every step at toy size on the CPU.
GPU_EMBED=(benchmarks/bench_embed.py --devices cuda --size 224 --batch-size 64 --repeats 5 --images 2000)
GPU_LIBS=(benchmarks/bench_fisher_libs.py --devices cuda --sizes 32,112,224 --images 64,32,16 --repeats 3
          --mc-draws 16 --mc-sizes 32)
GPU_FINETUNE=(benchmarks/bench_finetune.py --device cuda --size 224 --batch 64 --images 2048
              --json "$OUT/bench_finetune.json")
GPU_MOBIUS=(benchmarks/bench_mobius.py --device cuda --batch 256 --size 224 --repeats 5 --json "$OUT/bench_mobius.json")
GPU_INDEX=(benchmarks/bench_index.py --device cuda --n 100000 --queries 20 --flat-n 10000)

# python -c "$PARSE_ONLY" SCRIPT ARGS...: exit 0 when the benchmark's own argparse accepts ARGS, 2 when not.
PARSE_ONLY='
import argparse, runpy, sys
parse_args = argparse.ArgumentParser.parse_args
def parse(self, *args, **kwargs):
    parse_args(self, *args, **kwargs)  # exits 2 on a flag or value the benchmark does not take
    print(sys.argv[0] + ": flags accepted")
    raise SystemExit(0)
argparse.ArgumentParser.parse_args = parse
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
'

if [ "$DRY" = 1 ]; then
    for cmd in GPU_EMBED GPU_LIBS GPU_FINETUNE GPU_MOBIUS GPU_INDEX; do
        declare -n args=$cmd
        step "flags_${cmd,,}" 120 python -c "$PARSE_ONLY" "${args[@]}"
    done
    step bench_embed 300 python benchmarks/bench_embed.py --devices cpu --probes mobilenet_v2 --size 32 \
        --batch-size 4 --repeats 1 --images 10
    step bench_fisher_libs 300 python benchmarks/bench_fisher_libs.py --devices cpu --dry-run
    step bench_finetune 300 python benchmarks/bench_finetune.py --device cpu --size 32 --batch 8 --images 32 \
        --json "$OUT/bench_finetune.json"
    step bench_mobius 120 python benchmarks/bench_mobius.py --device cpu --batch 8 --size 32 --repeats 1 \
        --json "$OUT/bench_mobius.json"
    step bench_index 300 python benchmarks/bench_index.py --device cpu --n 2000 --dim 256 --queries 4 \
        --nprobe 4 --rerank 20 --flat-n 500
else
    # 2. Fisher step vs forward+backward at 224 px, and embed end to end (JPEG files -> embedding).
    step bench_embed 120 python "${GPU_EMBED[@]}"
    # 3. Against BackPACK and nngeometry on the GPU (same images, same head).
    step bench_fisher_libs 90 python "${GPU_LIBS[@]}"
    # 4. Fine-tuner vs a plain PyTorch loop (bf16 autocast, channels_last).
    step bench_finetune 75 python "${GPU_FINETUNE[@]}"
    # 5. Batched Mobius on the GPU vs the per-image CPU path.
    step bench_mobius 30 python "${GPU_MOBIUS[@]}"
    # 6. The nearest-model index on faiss GPU (fails with a one-line error when faiss has no GPU support).
    step bench_index 60 python "${GPU_INDEX[@]}"
fi

# 7. The NCCL rows of the distributed benchmark (issue 22): a torchrun embedding with one rank per GPU against
#    one process (equality, wall time). With one GPU only the 1-process rows run: NCCL refuses two ranks on
#    one GPU, and a group of one is no group. On the CPU (--dry-run) the gloo rows at toy size instead.
if [ "$DRY" = 1 ]; then
    step bench_distributed 120 python benchmarks/bench_distributed.py --modes embed --max-samples 32 --image-size 32 \
        --json "$OUT/bench_distributed.json"
else
    step bench_distributed 45 python benchmarks/bench_distributed.py --modes nccl --image-size 224 --max-samples 512 \
        --batch-size 64 --json "$OUT/bench_distributed_nccl.json"
fi

echo "=== summary (figures in $OUT)"
printf '%s\n' "${SUMMARY[@]}" | tee "$OUT/summary.txt"
