"""zhangcolor serve: how fast a temperature change answers, against the first colorize of the
same photo, measured through HTTP on loopback in the same run (target: ≤ 1/5).

    python benchmarks/bench_serve.py [--model default] [--repeat 5]

For photos of 0.3 to 12 megapixels (a real photo from ../shared/data/photos when present, else
skimage's astronaut, resized and saved as a gray JPEG, like an old photo), two flows:
- the page's: JPEG previews with max_side 1280, as the web page asks for them;
- the API at full size: PNG at the upload's own size.
"first" is a POST of bytes the server has not seen (the network runs); "T change" is the GET
that re-decodes the cached output at another T. Medians of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table
from skimage import data

from zhangcolor.serve import ColorizeService, ServeConfig, background_server, create_app

SIZES = {"0.3 MP": (640, 480), "1.2 MP": (1280, 960), "3 MP": (2000, 1500), "12 MP": (4000, 3000)}
FLOWS = {"page (jpg, max_side 1280)": ("jpg", 1280), "API full size (png)": ("png", None)}


def source_photo() -> Image.Image:
    shared = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "photos"
    photos = sorted(shared.glob("*.jpg")) if shared.is_dir() else []
    for path in photos:
        with Image.open(path) as image:
            if min(image.size) >= 400:
                return image.convert("RGB")
    return Image.fromarray(data.astronaut())


def variants(photo: Image.Image, size: tuple[int, int], n: int) -> list[bytes]:
    """``n`` gray JPEGs of the photo at ``size`` whose bytes differ (a one-pixel mark each)."""
    gray = photo.convert("L").resize(size, Image.Resampling.LANCZOS)
    out = []
    for i in range(n):
        marked = np.array(gray)
        marked[0, i] = (int(marked[0, i]) + 128) % 256
        buffer = io.BytesIO()
        Image.fromarray(marked).save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    console = Console()
    service = ColorizeService.load(ServeConfig(model=args.model))
    photo = source_photo()
    table = Table(title="serve: T change vs first colorize of the same photo, over HTTP")
    for column in ("photo", "flow", "first (ms)", "T change (ms)", "ratio", "target"):
        table.add_column(column, justify="left" if column in ("photo", "flow") else "right")
    with (
        background_server(create_app(service=service)) as url,
        httpx.Client(base_url=url, timeout=300) as client,
    ):
        for label, size in SIZES.items():
            uploads = variants(photo, size, args.repeat + 1)
            for flow, (fmt, max_side) in FLOWS.items():
                extra = {"format": fmt} | ({"max_side": str(max_side)} if max_side else {})
                firsts, changes = [], []
                for i, content in enumerate(uploads):
                    service.cache = type(service.cache)(service.cache.max_bytes, 900)  # empty
                    start = time.perf_counter()
                    response = client.post(
                        "/api/colorize",
                        files={"image": ("photo.jpg", content)},
                        data={"temperature": "0.38", **extra},
                    )
                    first = time.perf_counter() - start
                    assert response.headers["x-network"] == "ran", response.text
                    start = time.perf_counter()
                    again = client.get(
                        f"/api/colorize/{response.headers['x-upload-id']}",
                        params={"temperature": "0.7", **extra},
                    )
                    change = time.perf_counter() - start
                    assert again.headers["x-network"] == "cached", again.text
                    if i:  # the first pair warms up
                        firsts.append(first)
                        changes.append(change)
                f, c = statistics.median(firsts), statistics.median(changes)
                table.add_row(
                    label, flow, f"{f * 1e3:.0f}", f"{c * 1e3:.0f}", f"{c / f:.2f}", "≤ 0.20"
                )
    console.print(table)


if __name__ == "__main__":
    main()
