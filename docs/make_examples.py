"""Draw the model card's examples in docs/examples/ with the shipped model (or --model).

    python docs/make_examples.py [--model default] [--old ../shared/data/old-photos]
        [--photos ../shared/data/photos] [--temperature T] [--rgb-model CKPT]

- Historic photos (``--old``): gray input | colorized, one JPEG each.
- Validation photos (VAL, openly licensed groups only): gray | ours | truth.
- With ``--rgb-model`` (a ``--color-space rgb`` checkpoint) and ``--lab-model`` (an L2 Lab one):
  one grid, gray | Lab L2 | RGB L2 | truth, for docs/model-comparison.md.

Every panel is at most 320 px high; the images are written as JPEG quality 88.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from zhangcolor import Colorizer
from zhangcolor.images import load_image
from zhangcolor.split import is_validation

OLD = [
    "stdlib-nagasaki-boats.jpg",
    "stdlib-french-alpine-landscape.jpg",
    "stdlib-dust-bowl-home.jpg",
    "stdlib-march-pastoral.jpg",
    "stdlib-black-canyon.jpg",
]
# Validation photos from openly licensed groups (the imagenet-* and bsds500 groups are not).
VAL = [
    "wallpapers/ubuntu-bosque-tk.jpg",
    "wallpapers/budgie-sunset-beach.jpg",
    "wallpapers/ubuntu-thingvellir-by-pattersa.jpg",
    "wallpapers/ubuntu-roof-tiles-by-finn-sturdy.jpg",
    "interior-5604956.jpg",
    "gcompris-machu-picchu.jpg",
]
HEIGHT = 320
OUT = Path(__file__).parent / "examples"


def _fit(image: Image.Image) -> Image.Image:
    image = image.convert("RGB")
    scale = HEIGHT / image.height
    return image.resize((max(1, round(image.width * scale)), HEIGHT), Image.LANCZOS)


def _row(panels: list[Image.Image]) -> Image.Image:
    panels = [_fit(p) for p in panels]
    gap = 6
    row = Image.new(
        "RGB", (sum(p.width for p in panels) + gap * (len(panels) - 1), HEIGHT), "white"
    )
    x = 0
    for panel in panels:
        row.paste(panel, (x, 0))
        x += panel.width + gap
    return row


def _open(path: Path) -> Image.Image:
    """The photo at ``path`` as 8-bit RGB, EXIF orientation applied, short side at most 512."""
    pixels = load_image(path, short_side=min(512, min(Image.open(path).size))).pixels
    if pixels.dtype != np.uint8:
        pixels = (pixels * 255).round().clip(0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def _gray(image: Image.Image) -> Image.Image:
    return image.convert("L").convert("RGB")


def _val_photos(photos: Path) -> list[Path]:
    """The validation photos of the examples; each is checked to be held out of training."""
    for name in VAL:
        if not is_validation(name):
            raise SystemExit(f"{name} is not in the validation split")
    return [photos / name for name in VAL]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--temperature", type=float, default=None, help="default: the model's own")
    parser.add_argument("--old", type=Path, default=Path("../shared/data/old-photos"))
    parser.add_argument("--photos", type=Path, default=Path("../shared/data/photos"))
    parser.add_argument("--rgb-model", type=Path, default=None)
    parser.add_argument("--lab-model", type=Path, default=None)
    args = parser.parse_args()

    OUT.mkdir(exist_ok=True)
    colorizer = Colorizer.load(args.model, precision="fp32")
    t = args.temperature
    for name in OLD:
        image = _open(args.old / name)
        _row([image, colorizer.colorize(image, t)]).save(OUT / name, quality=88)
        print(OUT / name)
    val = _val_photos(args.photos)
    for path in val:
        truth = _open(path)
        gray = _gray(truth)
        out = OUT / f"val-{path.stem}.jpg"
        _row([gray, colorizer.colorize(gray, t), truth]).save(out, quality=88)
        print(out)
    if args.rgb_model and args.lab_model:
        lab, rgb = Colorizer.load(args.lab_model), Colorizer.load(args.rgb_model)
        rows = []
        for path in val[:4]:
            truth = _open(path)
            gray = _gray(truth)
            rows.append(_row([gray, lab.colorize(gray), rgb.colorize(gray), truth]))
        grid = Image.new(
            "RGB", (max(r.width for r in rows), sum(r.height + 6 for r in rows)), "white"
        )
        y = 0
        for row in rows:
            grid.paste(row, (0, y))
            y += row.height + 6
        grid.save(OUT / "rgb-vs-lab.jpg", quality=88)
        print(OUT / "rgb-vs-lab.jpg")


if __name__ == "__main__":
    main()
