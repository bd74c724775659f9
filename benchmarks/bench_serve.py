"""zhangcolor serve: how fast a temperature change and a colour-point change answer, against the
first colorize of the same photo, measured through HTTP on loopback in the same run.

    python benchmarks/bench_serve.py [--model default] [--repeat 5]

The server runs as ``zhangcolor serve`` in its own process, as deployed; this script is the
client. For photos of 0.3 to 12 megapixels (a real photo from the shipped model's training
photos when their folder is beside the checkout, else skimage's astronaut, resized and saved as
a gray JPEG, like an old photo), two flows:
- the page's: JPEG previews with max_side 928, as the page asks for them in a 1000-px window;
- the API at full size: PNG at the upload's own size.
"first" is a POST of bytes the server has not seen (the network runs); "T change" is the GET
that re-decodes the cached output at another T.

Then the page's colour points: "points" is the POST of a new set of points for a cached upload,
which runs the network again on its L and answers with the preview (``--model`` must take
colour points for that; the shipped model does). Medians of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import io
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table
from skimage import data

SIZES = {"0.3 MP": (640, 480), "1.2 MP": (1280, 960), "3 MP": (2000, 1500), "12 MP": (4000, 3000)}
# The page asks for previews as wide as its box in device pixels: 928 in a 1000-px window.
FLOWS = {"page (jpg, max_side 928)": ("jpg", 928), "API full size (png)": ("png", None)}
#: The photos whose colour-point changes are measured.
POINT_SIZES = {"0.3 MP": (640, 480), "1.2 MP": (1280, 960)}


def source_photo() -> Image.Image:
    shared = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "photos"
    photos = sorted(shared.glob("*.jpg")) if shared.is_dir() else []
    for path in photos:
        with Image.open(path) as image:
            if min(image.size) >= 400:
                return image.convert("RGB")
    return Image.fromarray(data.astronaut())


def variants(photo: Image.Image, size: tuple[int, int], n: int, row: int) -> list[bytes]:
    """``n`` gray JPEGs of the photo at ``size`` whose bytes differ (a one-pixel mark each, in
    ``row``), so that the server has never seen them."""
    gray = photo.convert("L").resize(size, Image.Resampling.LANCZOS)
    out = []
    for i in range(n):
        marked = np.array(gray)
        marked[row, i] = (int(marked[row, i]) + 128) % 256
        buffer = io.BytesIO()
        Image.fromarray(marked).save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


@contextmanager
def server_process(model: str):
    """``zhangcolor serve`` on a free loopback port; yields its base URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "zhangcolor", "serve", "--model", model, "--port", str(port)]
    # The log goes to a file: a pipe nobody reads would fill up with access lines and stop it.
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            if process.poll() is not None:
                log.seek(0)
                raise RuntimeError(log.read().decode(errors="replace"))
            try:
                httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(10)
        log.close()


def measure_t_changes(client: httpx.Client, photo: Image.Image, repeat: int, table: Table):
    for label, size in SIZES.items():
        for row, (flow, (fmt, max_side)) in enumerate(FLOWS.items()):
            uploads = variants(photo, size, repeat + 1, row)
            extra = {"format": fmt} | ({"max_side": str(max_side)} if max_side else {})
            firsts, changes = [], []
            for i, content in enumerate(uploads):
                start = time.perf_counter()
                response = client.post(
                    "/api/colorize",
                    files={"image": ("photo.jpg", content)},
                    data={"temperature": "0.38", **extra},
                )
                first = time.perf_counter() - start
                assert response.headers.get("x-network") == "ran", response.status_code
                start = time.perf_counter()
                again = client.get(
                    f"/api/colorize/{response.headers['x-upload-id']}",
                    params={"temperature": "0.7", **extra},
                )
                change = time.perf_counter() - start
                assert again.headers.get("x-network") == "cached", again.status_code
                if i:  # the first pair warms up
                    firsts.append(first)
                    changes.append(change)
            f, c = statistics.median(firsts), statistics.median(changes)
            table.add_row(
                label, flow, "T change", f"{f * 1e3:.0f}", f"{c * 1e3:.0f}", f"{c / f:.2f}",
            )  # fmt: skip


def measure_point_changes(client: httpx.Client, photo: Image.Image, repeat: int, table: Table):
    """Per photo: one upload, then ``repeat`` new sets of points (one more point each time, as a
    user adds them), each running the network again; the first set warms up."""
    preview = {"format": "jpg", "max_side": "928"}
    for label, size in POINT_SIZES.items():
        firsts, changes = [], []
        for i, content in enumerate(variants(photo, size, 3, 2)):
            start = time.perf_counter()
            response = client.post(
                "/api/colorize", files={"image": ("photo.jpg", content)}, data=preview
            )
            if i:
                firsts.append(time.perf_counter() - start)
            assert response.headers.get("x-network") == "ran", response.status_code
            url = f"/api/colorize/{response.headers['x-upload-id']}"
            points = []
            for n in range(repeat + 1):
                x, y = (size[0] * (n + 1)) // (repeat + 3), (size[1] * (n + 2)) // (repeat + 4)
                points.append({"x": x, "y": y, "color": f"#{40 * n % 256:02x}6030"})
                start = time.perf_counter()
                answer = client.post(url, params=preview, json={"points": points})
                took = time.perf_counter() - start
                assert answer.headers.get("x-network") == "ran", answer.text[:200]
                if n:
                    changes.append(took)
        f, c = statistics.median(firsts), statistics.median(changes)
        table.add_row(
            label, "page (jpg, max_side 928)", "new points", f"{f * 1e3:.0f}", f"{c * 1e3:.0f}",
            f"{c / f:.2f}",
        )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    console = Console(width=110)
    photo = source_photo()
    table = Table(title="serve: a change against the first colorize of the same photo, over HTTP")
    for column in ("photo", "flow", "change", "first (ms)", "change (ms)", "ratio"):
        table.add_column(
            column, justify="left" if column in ("photo", "flow", "change") else "right"
        )
    with (
        server_process(args.model) as url,
        httpx.Client(base_url=url, timeout=300) as client,
    ):
        measure_t_changes(client, photo, args.repeat, table)
        if client.get("/api/model").json()["takes_hints"]:
            measure_point_changes(client, photo, args.repeat, table)
    console.print(table)


if __name__ == "__main__":
    main()
