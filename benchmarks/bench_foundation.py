"""Foundation benchmarks: every row is a ratio against a reference measured in the same run.

    python benchmarks/bench_foundation.py [--data PHOTOS] [--compile]

Rows:
- rgb_to_lab on a batch of 256² images vs skimage.color.rgb2lab one image at a time;
- soft_encode vs the authors' encoder (sklearn NearestNeighbors ball tree + dense assignment);
- build-bins images/s vs decoding and resizing the same files alone, with the same threads.
"""

from __future__ import annotations

import argparse
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from skimage import color, data
from sklearn.neighbors import NearestNeighbors
from timing import median_seconds

from zhangcolor.bins import ab_bins
from zhangcolor.color import rgb_to_lab
from zhangcolor.encode import soft_encode, soft_encode_sparse
from zhangcolor.images import find_images, load_image
from zhangcolor.prior import PriorConfig, estimate_prior


def add_ms_row(table: Table, what: str, size: str, ours: float, ref: float) -> None:
    """A row of times in ms; the ratio is how many times faster ours is."""
    table.add_row(what, size, f"{ours * 1e3:.1f} ms", f"{ref * 1e3:.1f} ms", f"{ref / ours:.1f}×")


def image_batch(n: int = 16, size: int = 256) -> np.ndarray:
    """(n, size, size, 3) float32 crops of skimage's sample photos."""
    sources = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    rng = np.random.default_rng(0)
    crops = []
    for i in range(n):
        image = sources[i % len(sources)]
        y = rng.integers(0, image.shape[0] - size)
        x = rng.integers(0, image.shape[1] - size)
        crops.append(image[y : y + size, x : x + size])
    return np.stack(crops).astype(np.float32) / 255.0


def authors_encode(ab: np.ndarray, nbrs: NearestNeighbors, q: int, sigma: float = 5.0):
    """The authors' NNEncode.encode_points_mtx_nd (caffe/colorization, util), in numpy."""
    b, _, h, w = ab.shape
    pts = ab.transpose(0, 2, 3, 1).reshape(-1, 2)
    dists, inds = nbrs.kneighbors(pts)
    wts = np.exp(-(dists**2) / (2 * sigma**2))
    wts = wts / np.sum(wts, axis=1)[:, None]
    enc = np.zeros((pts.shape[0], q))
    enc[np.arange(pts.shape[0])[:, None], inds] = wts
    return enc.reshape(b, h, w, q).transpose(0, 3, 1, 2)


def bench_lab(table: Table, compile_: bool) -> None:
    batch = image_batch()
    tensor = torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous()
    reference = median_seconds(lambda: [color.rgb2lab(image) for image in batch], 3)
    eager = median_seconds(lambda: rgb_to_lab(tensor))
    n = f"{len(batch)}×256²"
    add_ms_row(table, "rgb_to_lab, eager fp32", n, eager, reference)
    if compile_:
        compiled = torch.compile(rgb_to_lab, dynamic=False)
        took = median_seconds(lambda: compiled(tensor))
        add_ms_row(table, "rgb_to_lab, torch.compile fp32", n, took, reference)


def bench_encode(table: Table) -> None:
    batch = image_batch(8, 128)
    tensor = torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous()
    ab = rgb_to_lab(tensor)[:, 1:].contiguous()
    centers = ab_bins()
    nbrs = NearestNeighbors(n_neighbors=5, algorithm="ball_tree").fit(centers.double().numpy())
    ab_np = ab.double().numpy()
    reference = median_seconds(lambda: authors_encode(ab_np, nbrs, len(centers)), 3)
    dense = median_seconds(lambda: soft_encode(ab, centers))
    sparse = median_seconds(lambda: soft_encode_sparse(ab, centers))
    n = "8×128²"
    add_ms_row(table, "soft_encode (dense Q=313)", n, dense, reference)
    add_ms_row(table, "soft_encode_sparse (k=5, training)", n, sparse, reference)


def bench_build_bins(table: Table, folder: Path | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        if folder is None:
            folder = Path(tmp)
            rng = np.random.default_rng(0)
            from PIL import Image

            for i in range(64):
                pixels = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=90)
        paths = find_images(folder)
        config = PriorConfig()

        def decode_only() -> None:
            def one(path: Path) -> None:
                try:
                    load_image(path, short_side=config.size)
                except Exception:  # the same files build-bins skips
                    pass

            with ThreadPoolExecutor(config.workers) as pool:
                list(pool.map(one, paths))

        decode = median_seconds(decode_only, 2)
        full = median_seconds(lambda: estimate_prior(folder, config), 2)
    ours, ref = len(paths) / full, len(paths) / decode
    table.add_row(
        "build-bins",
        f"{len(paths)} files",
        f"{ours:.1f} img/s",
        f"{ref:.1f} img/s (decode)",
        f"{ours / ref:.2f}×",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="folder of photos for the build-bins row (default: generated)",
    )
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd Lab")
    args = parser.parse_args()
    table = Table(
        title=f"zhangcolor foundation benchmarks (torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads)"
    )
    for column in ["what", "size", "ours", "reference", "ratio"]:
        table.add_column(column, justify="right" if column != "what" else "left")
    bench_lab(table, args.compile)
    bench_encode(table)
    bench_build_bins(table, args.data)
    Console().print(table)


if __name__ == "__main__":
    main()
