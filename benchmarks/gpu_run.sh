#!/usr/bin/env bash
# Everything this project checks on a GPU, in one call of about 5 minutes (its timeouts allow
# 9.5), on a machine with no package registry (the `device` tool's). Results go to $OUT (else
# ./gpu-results).
#
# Prepare here, where pip reaches the registry (fills .device-carry/, ignored by git):
#   bash benchmarks/gpu_prep.sh
# then a device call that carries .device-carry runs it (DEVELOPERS.md: after gpu_train.sh's call):
#   bash benchmarks/gpu_run.sh
#
# 1. tests/test_cuda.py: CPU-equal bins and soft-encoding, 20 training steps of every backbone ×
#    head, bf16, colorize/serve/evaluate against the CPU, torchrun with nccl (about 2 minutes);
# 2. benchmarks/bench_training.py --device cuda: the shipped U-Net and the full-width eccv16 at
#    224² × 32, step only, loader only and end to end, and the GPU memory (about 2 minutes);
# 3. benchmarks/bench_colorize.py --device cuda: the folder pipeline on 0.3 MP JPEGs written as
#    PNG, against the bare forward (about 1 minute).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-results}
mkdir -p "$out"
export PYTHONPATH="$PWD:$PWD/.device-carry/site:$PWD/tests${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 ZHANGCOLOR_CACHE="${TMPDIR:-/tmp}/zhangcolor-cache"
photos=.device-carry/photos
[ -d "$photos" ] || photos=""
n=$(nproc); workers=$(( n > 10 ? 8 : (n > 2 ? n - 2 : 1) ))

{ nvidia-smi; python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())"; } \
    > "$out/machine.txt" 2>&1
status=0
timeout 240 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 \
    | tee "$out/cuda-tests.txt" || status=1
timeout 180 python3 benchmarks/bench_training.py --device cuda ${photos:+--data "$photos"} \
    --configs unet-effnet-classification eccv16 --crop 224 --batch 32 --workers "$workers" \
    --steps 20 2>&1 | tee "$out/bench-training.txt" || status=1
timeout 150 python3 benchmarks/bench_colorize.py --device cuda --files 256 --workers 16 \
    --batch-size 16 --only folder --only batch 2>&1 | tee "$out/bench-colorize.txt" || status=1
exit $status
