#!/usr/bin/env bash
# The shipped model's training run on one GPU, in one call of at most about 4 minutes
# (TRAIN_SECONDS=150) to 7 (the default 330), on a machine with no package registry (the
# `device` tool's), after benchmarks/gpu_prep.sh here. Results go to $OUT (else ./gpu-results),
# as three files (the device tool brings back at most 8 a call): default.safetensors and
# default.json, the model packaged in fp16 with its calibrated T, ready for zhangcolor/weights/
# if it beats the shipped one; and gpu-train.tar.gz with train.txt, calibrate.txt, the
# evaluation beside the shipped model (eval/) and the run's metrics, config and sample grids.
#
#   [TRAIN_SECONDS=330] [CARRY=.device-carry] bash benchmarks/gpu_train.sh [extra train flags]
#
# TRAIN_SECONDS bounds the training: then train gets SIGINT, saves after the step in hand and
# stops, and the best checkpoint so far is used (train.txt says so; it is not a failure).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-results}
carry=$(cd "${CARRY:-.device-carry}" && pwd) || exit 1
tmp=${TMPDIR:-/tmp}/zhangcolor-gpu-train
details="$tmp/details"  # what goes into gpu-train.tar.gz
pool="$tmp/photos"
rm -rf "$details" "$pool" "$tmp/run"
mkdir -p "$out" "$details"
rm -f "$out/default.safetensors" "$out/default.json" "$out/gpu-train.tar.gz"
export PYTHONPATH="$PWD:$carry/site${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 ZHANGCOLOR_CACHE="$tmp/cache"
n=$(nproc); workers=$(( n > 10 ? 8 : (n > 2 ? n - 2 : 1) ))
pack() { tar czf "$out/gpu-train.tar.gz" -C "$details" .; }

# The WebP copies under the pool's own names (the split is keyed on paths).
python3 - "$carry/photos" "$carry/photo-names.txt" "$pool" <<'PY' || exit 1
import sys
from pathlib import Path

copies, names, pool = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
names = names.read_text().splitlines()
missing = [n for n in names if not (copies / Path(n).with_suffix(".webp")).is_file()]
if missing:
    sys.exit(f"{len(missing)} of {len(names)} copies missing in {copies}, e.g. {missing[0]}")
for name in names:
    link = pool / name
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(copies / Path(name).with_suffix(".webp"))
print(f"{len(names)} photos under their own names in {pool}")
PY

run="$tmp/run"
status=0
timeout -s INT -k 60 "${TRAIN_SECONDS:-330}" python3 -m zhangcolor train --config default-gpu \
    --data "$pool" --out "$run" --workers "$workers" "$@" 2>&1 | tee "$details/train.txt"
trained=${PIPESTATUS[0]}
if [ "$trained" = 124 ]; then
    echo "stopped at TRAIN_SECONDS=${TRAIN_SECONDS:-330}: the best checkpoint so far is used" \
        | tee -a "$details/train.txt"
elif [ "$trained" != 0 ]; then
    status=1
fi
best="$run/checkpoints/best.safetensors"
[ -f "$best" ] || { echo "no best checkpoint" | tee -a "$details/train.txt"; pack; exit 1; }
mkdir -p "$details/run"
cp -r "$run/config.yaml" "$run/metrics.jsonl" "$run/samples" "$run/plots" "$details/run/" \
    2>/dev/null

t=$(timeout 120 python3 - "$pool" "$best" <<'PY' 2>"$details/calibrate.txt"
import sys
from zhangcolor.calibrate import calibrate

result = calibrate(sys.argv[1], sys.argv[2], split="val")
for row in result["rows"]:
    print(row["temperature"], round(row["auc_rebalanced"], 2), round(row["auc"], 2),
          round(row["colorfulness_ratio"], 3), file=sys.stderr)
print(result["temperature"])
PY
) || { status=1; t=0.38; }
echo "calibrated T = $t" | tee -a "$details/calibrate.txt"
# Beside the shipped model, on the same copies (WebP, so not quite the CPU runs' photos).
timeout 120 python3 -m zhangcolor evaluate "$pool" --split val --model "$best" --model default \
    --temperatures "$t,0.38" --out "$details/eval" 2>&1 | tail -20 || status=1
timeout 30 python3 -m zhangcolor package-model "$best" --half --temperature "$t" \
    -o "$out/default.safetensors" --overwrite || status=1
pack
exit $status
