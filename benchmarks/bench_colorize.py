"""Colorize speed and memory, against references measured in the same run.

    python benchmarks/bench_colorize.py [--model default] [--n 16]

Rows (256² inputs, this CPU):
- ``Colorizer.colorize_batch`` and ``.colorize`` img/s, fp32 and bf16, against the bare
  network forward at the same batch (target ≥ 0.75×);
- against a Zhang-demo-style pipeline: skimage Lab, fp32 network, one image at a time, numpy
  softmax and annealed mean (target ≥ 5×);
- the bare forward in onnxruntime against torch fp32 and bf16;
- peak RSS of colorizing one 24-megapixel photo, in a fresh process (target ≤ 1.5 GB).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from skimage import color, data, transform
from timing import median_seconds

from zhangcolor.colorize import Colorizer


def photos(n: int) -> list[np.ndarray]:
    sources = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    return [(transform.resize(sources[i % 4], (256, 256)) * 255).astype(np.uint8) for i in range(n)]


def demo_reference(colorizer: Colorizer, image: np.ndarray) -> np.ndarray:
    """The authors' demo flow: skimage Lab, the network in fp32 on one image, numpy decoding."""
    lab = color.rgb2lab(image)
    lightness = torch.from_numpy(lab[None, None, :, :, 0]).float()
    with torch.no_grad():
        logits = colorizer.model(lightness).numpy()[0]  # (Q, 64, 64)
    z = np.exp(logits - logits.max(0, keepdims=True))
    z /= z.sum(0, keepdims=True)
    f = np.exp(np.log(z + 1e-12) / 0.38)
    f /= f.sum(0, keepdims=True)
    ab = np.einsum("qhw,qc->hwc", f, colorizer.centers.cpu().numpy())
    ab = transform.resize(ab, image.shape[:2], order=1)
    return color.lab2rgb(np.concatenate([lab[..., :1], ab], -1))


def peak_rss_24mp(model: str) -> float:
    """Peak RSS in MB of a fresh process that colorizes a 6000×4000 photo."""
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "big.jpg"
        Image.fromarray(data.astronaut()).resize((6000, 4000)).save(big, quality=90)
        code = (
            "import resource, sys; from zhangcolor.colorize import Colorizer; "
            "from zhangcolor.images import load_image; "
            f"c = Colorizer.load({model!r}); img = load_image(sys.argv[1]); "
            "out = c.colorize(img); out.save(sys.argv[1] + '.png'); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
        )
        done = subprocess.run(
            [sys.executable, "-c", code, str(big)], capture_output=True, text=True
        )
        if done.returncode:
            raise RuntimeError(done.stderr)
        return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--n", type=int, default=16, help="images per batch")
    args = parser.parse_args()
    console = Console()
    images = photos(args.n)
    pil = [Image.fromarray(i) for i in images]
    reference = (
        median_seconds(
            lambda: [
                demo_reference(Colorizer.load(args.model, precision="fp32"), i) for i in images[:4]
            ],
            1,
        )
        / 4
    )
    console.print(f"Zhang-demo-style reference: {1 / reference:.1f} img/s (one at a time, fp32)")
    for precision in ("fp32", "bf16"):
        c = Colorizer.load(args.model, precision=precision)
        light = torch.rand(args.n, 1, 256, 256) * 100
        bare = median_seconds(lambda c=c, light=light: c.network_output(light)) / args.n
        batch = median_seconds(lambda c=c: c.colorize_batch(pil)) / args.n
        single = median_seconds(lambda c=c: [c.colorize(p) for p in pil[:4]], 1) / 4
        console.print(
            f"{precision}: batch {1 / batch:.1f} img/s, single {1 / single:.1f} img/s, "
            f"bare forward {1 / bare:.1f} img/s -> batch/bare {bare / batch:.2f}× (≥ 0.75×), "
            f"batch/reference {reference / batch:.1f}×, "
            f"single/reference {reference / single:.1f}× (≥ 5×)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        from zhangcolor.export import export_onnx

        onnx = Colorizer.load(export_onnx(args.model, Path(tmp) / "m.onnx"), backend="onnx")
        light = torch.rand(args.n, 1, 256, 256) * 100
        ort = median_seconds(lambda: onnx.network_output(light)) / args.n
        for precision in ("fp32", "bf16"):
            net = Colorizer.load(args.model, precision=precision)
            took = median_seconds(lambda net=net: net.network_output(light)) / args.n
            console.print(
                f"bare forward, batch {args.n}: onnxruntime {1 / ort:.1f} img/s, torch "
                f"{precision} {1 / took:.1f} img/s -> onnxruntime / torch {precision} "
                f"{took / ort:.2f}×"
            )
    console.print(f"peak RSS colorizing a 24 MP photo: {peak_rss_24mp(args.model):.0f} MB (≤ 1500)")


if __name__ == "__main__":
    main()
