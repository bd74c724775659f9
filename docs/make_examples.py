"""Draw the model card's examples in docs/examples/ with the shipped model (or --model).

    python docs/make_examples.py --old OLD_PHOTOS --photos TRAINING_PHOTOS [--model default]
        [--temperature T] [--points 4] [--rgb-model CKPT --lab-model CKPT]

- Historic photos (``--old``: the folder of historic black-and-white photos listed in the
  model card): gray input | colorized, one JPEG each.
- Validation photos (VAL, openly licensed groups only, from ``--photos``, the training photos'
  folder): gray | ours | truth.
- Colour points, for a model that takes them: historic photos (OLD_POINTS, placed by hand) as
  gray with the points | automatic | with the points, and validation photos (GUIDED) as gray
  with the points | automatic | with the points | truth. A validation photo's points are a
  simulated user's: each goes where the automatic colours are most wrong (the largest ab error
  averaged over a square of a fifth of the photo's short side, away from the points already
  placed), with the true colour there.
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
#: Colour points for historic photos, as a user would place them: (x, y) as fractions of the
#: photo's width and height, and the colour the user knows (or believes) is there.
OLD_POINTS = {
    "stdlib-nagasaki-boats.jpg": [
        (0.12, 0.72, "#4f6a70"),  # the water of the bay
        (0.80, 0.74, "#4f6a70"),
        (0.18, 0.38, "#5d7347"),  # the wooded hill
        (0.55, 0.08, "#b4c4d2"),  # a hazy sky
        (0.12, 0.10, "#b4c4d2"),
    ],
    "stdlib-dust-bowl-home.jpg": [
        (0.25, 0.82, "#c9b08a"),  # the dry, sandy ground
        (0.75, 0.85, "#c9b08a"),
        (0.58, 0.45, "#7d6e60"),  # weathered boards
        (0.15, 0.20, "#9fb7cf"),  # a pale sky
    ],
    "stdlib-french-alpine-landscape.jpg": [
        (0.25, 0.62, "#2f4a33"),  # firs
        (0.72, 0.55, "#2f4a33"),
        (0.33, 0.22, "#e4e6ea"),  # snow
        (0.62, 0.22, "#e4e6ea"),
    ],
}
#: Validation photos for the colour-point examples.
GUIDED = [
    "interior-5604956.jpg",
    "wallpapers/ubuntu-cherries.jpg",
    "wallpapers/ubuntu-signpost-by-maroubal2.jpg",
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


def _worst_points(truth: Image.Image, automatic: Image.Image, count: int) -> list[dict]:
    """A simulated user's ``count`` points: where ``automatic`` is furthest from ``truth`` in ab
    (averaged over a square a fifth of the short side, half of it in from the edges), each
    away from the earlier ones, with the true colour (the mean over a 5 × 5 patch) there."""
    import torch
    from torch.nn import functional as F

    from zhangcolor.color import rgb_to_lab

    def ab(image: Image.Image):
        pixels = torch.from_numpy(np.asarray(image.convert("RGB"), np.float32) / 255)
        return rgb_to_lab(pixels.permute(2, 0, 1))[1:]

    side = max(3, min(truth.size) // 5) | 1
    error = (ab(truth) - ab(automatic)).norm(dim=0)[None, None]
    error = F.avg_pool2d(error, side, stride=1, padding=side // 2, count_include_pad=False)[0, 0]
    margin = side // 2  # a user clicks within the photo, not on its edge
    error[:margin], error[-margin:], error[:, :margin], error[:, -margin:] = -1, -1, -1, -1
    rgb = np.asarray(truth.convert("RGB"), np.float32)
    ys, xs = np.mgrid[: error.shape[0], : error.shape[1]]
    points = []
    for _ in range(count):
        y, x = divmod(int(error.argmax()), error.shape[1])
        patch = rgb[max(0, y - 2) : y + 3, max(0, x - 2) : x + 3].reshape(-1, 3).mean(0)
        color = "#" + "".join(f"{round(float(c)):02x}" for c in patch)
        points.append({"x": x, "y": y, "color": color, "size": 5})
        near = (ys - y) ** 2 + (xs - x) ** 2 < (1.5 * side) ** 2
        error[torch.from_numpy(near)] = -1
    return points


def _marked(image: Image.Image, points: list[dict]) -> Image.Image:
    """``image`` with each point drawn as a dot of its colour, ringed in white and black."""
    from PIL import ImageDraw

    image = image.convert("RGB")
    draw = ImageDraw.Draw(image)
    radius = max(4, min(image.size) // 40)
    for p in points:
        box = (p["x"] - radius, p["y"] - radius, p["x"] + radius, p["y"] + radius)
        draw.ellipse(box, fill=p["color"], outline="white", width=2)
        outer = (box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2)
        draw.ellipse(outer, outline="black", width=1)
    return image


def _guided_row(colorizer: Colorizer, truth: Image.Image, count: int, t) -> Image.Image:
    gray = _gray(truth)
    automatic = colorizer.colorize(gray, t)
    points = _worst_points(truth, automatic, count)
    guided = colorizer.colorize(gray, t, hints={"points": points})
    return _row([_marked(gray, points), automatic, guided, truth])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--temperature", type=float, default=None, help="default: the model's own")
    parser.add_argument("--old", type=Path, required=True, help="historic photos' folder")
    parser.add_argument("--photos", type=Path, required=True, help="training photos' folder")
    parser.add_argument("--points", type=int, default=4, help="colour points per example")
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
    if colorizer.takes_hints:
        for name, chosen in OLD_POINTS.items():
            image = _open(args.old / name)
            points = [
                {
                    "x": round(fx * (image.width - 1)),
                    "y": round(fy * (image.height - 1)),
                    "color": c,
                }
                for fx, fy, c in chosen
            ]
            guided = colorizer.colorize(image, t, hints={"points": points})
            row = _row([_marked(image, points), colorizer.colorize(image, t), guided])
            row.save(OUT / f"points-{name}", quality=88)
            print(OUT / f"points-{name}")
        for name in GUIDED:
            out = OUT / f"points-{Path(name).stem}.jpg"
            _guided_row(colorizer, _open(args.photos / name), args.points, t).save(out, quality=88)
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
