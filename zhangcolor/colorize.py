"""Colorizing photos with a trained model: the ``Colorizer`` API behind ``zhangcolor colorize``.

As in the authors' demo, the network sees L resized to a working size; its ab prediction is
upsampled to the photo's own size and joined with the photo's **original** L, so the output keeps
every detail and its L equals the input's.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.nn import functional as F

from zhangcolor.color import lab_to_srgb8, rgb_to_lab, srgb8_to_lightness
from zhangcolor.constants import COLORIZE_SUFFIXES, TEMPERATURE
from zhangcolor.decode import check_temperature, decode_output
from zhangcolor.device import precision_context, resolve_device, resolve_precision
from zhangcolor.images import LoadedImage, load_image

#: Rows of the full-resolution image converted at a time, to bound memory on huge photos.
_ROWS_PER_CHUNK = 128


def default_model_path() -> Path:
    """The model shipped inside the package."""
    return Path(str(resources.files("zhangcolor").joinpath("weights", "default.safetensors")))


def check_colorize_temperature(temperature: float) -> float:
    """T in (0, 1], as the paper sweeps it; anything else is a ValueError that says so."""
    t = check_temperature(temperature)
    if t > 1.0:
        raise ValueError(f"temperature must be in (0, 1], got {temperature}; the paper uses 0.38")
    return t


@dataclass
class Colorizer:
    """A trained network with its bins, ready to colorize photos.

    Use :meth:`load`, then :meth:`colorize` (one image) or :meth:`colorize_batch`.
    """

    model: torch.nn.Module
    centers: Tensor  # (Q, 2) bins the model was trained with
    head: str  # classification or regression
    device: torch.device
    autocast: torch.dtype | None
    size: int = 256  # working size the network sees (size × size)

    @classmethod
    def load(
        cls,
        model: str | Path = "default",
        *,
        device: str = "auto",
        precision: str = "auto",
        size: int = 256,
        backend: str = "torch",
    ) -> Colorizer:
        """Load ``"default"`` (the shipped model) or a ``.safetensors`` checkpoint of ``train``.

        With ``backend="onnx"`` the network runs in onnxruntime on the CPU: ``model`` is then an
        ``.onnx`` file from ``zhangcolor export onnx`` (``"default"`` exports the shipped model
        once into the cache folder).
        """
        from zhangcolor.train import load_checkpoint

        if size < 16 or size % 4:
            raise ValueError(f"size must be a multiple of 4 and at least 16, got {size}")
        if backend == "onnx":
            return cls._load_onnx(model, size)
        if backend != "torch":
            raise ValueError(f"unknown backend {backend!r}; valid: torch, onnx")

        path = default_model_path() if str(model) == "default" else Path(model)
        if not path.is_file():
            if str(model) == "default":
                raise FileNotFoundError(f"the shipped default model is missing ({path}); reinstall")
            raise FileNotFoundError(f"no model file at {path}")
        net, config, bins = load_checkpoint(path)
        dev = resolve_device(device)
        net = net.to(dev).eval().to(memory_format=torch.channels_last)
        return cls(
            model=net,
            centers=bins["centers"].to(dev),
            head=config.model.head,
            device=dev,
            autocast=resolve_precision(precision, dev),
            size=size,
        )

    @classmethod
    def _load_onnx(cls, model: str | Path, size: int) -> Colorizer:
        from zhangcolor.export import OnnxNetwork, export_onnx
        from zhangcolor.files import cache_dir

        path = Path(model)
        if str(model) == "default":
            # Named by the shipped file's hash, so a new default model gets a new export.
            digest = hashlib.sha256(default_model_path().read_bytes()).hexdigest()[:16]
            path = cache_dir() / f"default-{digest}.onnx"
            if not path.is_file():
                export_onnx("default", path)
        net = OnnxNetwork(path)
        cpu = torch.device("cpu")
        return cls(
            model=net, centers=net.centers, head=net.head, device=cpu, autocast=None, size=size
        )

    @torch.no_grad()
    def network_output(self, lightness: Tensor) -> Tensor:
        """Run the network on L at the working size.

        Args:
            lightness: ``(B, 1, H, W)`` L in [0, 100], any size.

        Returns:
            ``(B, Q, s/4, s/4)`` logits or ``(B, 2, s/4, s/4)`` ab (s = working size), float32.
        """
        small = _working_size(lightness.to(self.device), self.size)
        small = small.contiguous(memory_format=torch.channels_last)
        with precision_context(self.device, self.autocast):
            return self.model(small).float()

    def decode(self, output: Tensor, temperature: float = TEMPERATURE) -> Tensor:
        """ab ``(B, 2, h, w)`` from :meth:`network_output` at temperature T (ignored for
        regression models)."""
        return decode_output(output, self.head, self.centers, temperature)

    def colorize(
        self, image: Image.Image | np.ndarray, temperature: float = TEMPERATURE
    ) -> Image.Image:
        """Colorize one PIL image or ``(H, W)`` / ``(H, W, 3)`` array; returns an RGB PIL image
        of the same size whose L is the input's."""
        return self.colorize_batch([image], temperature)[0]

    def colorize_batch(
        self,
        images: Sequence[Image.Image | np.ndarray | LoadedImage],
        temperature: float = TEMPERATURE,
    ) -> list[Image.Image]:
        """Colorize several images in one network batch."""
        t = check_colorize_temperature(temperature)
        lights = [image_lightness(image) for image in images]  # full size, (1, 1, H, W) each
        small = torch.cat([_working_size(light, self.size) for light in lights])
        ab = self.decode(self.network_output(small), t).cpu()  # (B, 2, s/4, s/4)
        return [join(light, ab[i : i + 1]) for i, light in enumerate(lights)]


def _working_size(lightness: Tensor, size: int) -> Tensor:
    """L ``(B, 1, H, W)`` resized to ``(B, 1, size, size)``: the network's view."""
    return resize_lightness(lightness, (size, size))


def resize_lightness(lightness: Tensor, size: tuple[int, int]) -> Tensor:
    """L ``(B, 1, H, W)`` resized bilinearly, antialiased, to ``(B, 1, *size)``."""
    if tuple(lightness.shape[-2:]) == tuple(size):
        return lightness
    return F.interpolate(lightness, size=size, mode="bilinear", align_corners=False, antialias=True)


def image_lightness(image: Image.Image | np.ndarray | LoadedImage) -> Tensor:
    """The input's L ``(1, 1, H, W)`` in [0, 100], float32, converted in row chunks."""
    if isinstance(image, LoadedImage):
        pixels = image.pixels
    elif isinstance(image, Image.Image):
        pixels = np.asarray(image.convert("RGB"))
    else:
        pixels = np.asarray(image)
        if pixels.ndim == 2:
            pixels = np.repeat(pixels[..., None], 3, axis=2)
        if pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
            raise ValueError(f"an image array must be (H, W) or (H, W, 3), got {pixels.shape}")
        pixels = pixels[..., :3]
    h, w = pixels.shape[:2]
    out = torch.empty(1, 1, h, w)
    for top in range(0, h, _ROWS_PER_CHUNK):
        rows = torch.tensor(pixels[top : top + _ROWS_PER_CHUNK])  # a copy: inputs may be read-only
        rows = rows.permute(2, 0, 1)  # (3, r, W)
        if rows.dtype == torch.uint8:
            light = srgb8_to_lightness(rows)
        else:
            scale = 65535.0 if pixels.dtype == np.uint16 else 1.0
            light = rgb_to_lab(rows.float() / scale)[:1]
        out[0, :, top : top + rows.shape[1]] = light
    return out


def join(lightness: Tensor, ab: Tensor) -> Image.Image:
    """Upsample ab ``(1, 2, h, w)`` bilinearly to L's size ``(1, 1, H, W)``, join, and convert to
    sRGB, in bands of rows (a full-resolution ab is what would cost memory on a 24 MP photo)."""
    h, w = lightness.shape[-2:]
    rows = _bilinear_weights(ab.shape[-2], h)  # (H, h)
    wide = ab[0].float() @ _bilinear_weights(ab.shape[-1], w).T  # (2, h, W)
    out = np.empty((h, w, 3), dtype=np.uint8)
    for top in range(0, h, _ROWS_PER_CHUNK):
        bottom = min(h, top + _ROWS_PER_CHUNK)
        band = rows[top:bottom] @ wide  # (2, r, W)
        lab = torch.cat([lightness[0, :, top:bottom], band])  # (3, r, W)
        out[top:bottom] = lab_to_srgb8(lab).permute(1, 2, 0).numpy()
    return Image.fromarray(out, "RGB")


@functools.lru_cache(maxsize=32)
def _bilinear_weights(n_in: int, n_out: int) -> Tensor:
    """``(n_out, n_in)`` float32: bilinear resampling along one axis as a matrix, with the
    pixel-centre alignment and edge clamping of ``F.interpolate(align_corners=False)``."""
    source = (torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5
    source = source.clamp(0, n_in - 1)
    left = source.floor().long()
    right = (left + 1).clamp(max=n_in - 1)
    frac = source - left
    weights = torch.zeros(n_out, n_in, dtype=torch.float64)
    out = torch.arange(n_out)
    weights.index_put_((out, left), 1 - frac, accumulate=True)
    weights.index_put_((out, right), frac, accumulate=True)
    return weights.float()


# ----------------------------------------------------------------------------- files

FORMATS = ("png", "jpg")


@dataclass
class Job:
    """One input file and where its result goes."""

    source: Path
    target: Path


@dataclass
class Outcome:
    source: Path
    status: str  # done, skipped or failed
    detail: str = ""


def plan_jobs(inputs: Sequence[str], out_dir: Path, fmt: str) -> tuple[list[Job], list[Outcome]]:
    """Expand files, folders (recursively) and globs into jobs.

    Each output mirrors its input's path relative to the common root of the inputs given, so
    ``a/x.jpg`` and ``b/x.jpg`` become ``OUT/a/x.png`` and ``OUT/b/x.png``. The output folder
    is never walked, so a rerun does not colorize its own results. Inputs that match nothing,
    and an input whose output another input already claims (``x.jpg`` beside ``x.png``), are
    failed outcomes.
    """
    import glob
    import os

    from zhangcolor.images import find_images

    out_real = out_dir.resolve()
    found: list[tuple[Path, Path]] = []  # (file, the folder its output path is relative to)
    failed: list[Outcome] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            files = find_images(path, COLORIZE_SUFFIXES, exclude=out_dir)
            found += [(f, path) for f in files]
            if not files:
                failed.append(Outcome(path, "failed", "folder holds no images"))
        elif path.is_file():
            found.append((path, path.parent))
        else:
            matches = [Path(m) for m in sorted(glob.glob(raw, recursive=True))]
            matches = [m for m in matches if m.is_file() and not _inside(m, out_real)]
            found += [(m, m.parent) for m in matches]
            if not matches:
                failed.append(Outcome(path, "failed", "no such file, folder or glob match"))
    if not found:
        return [], failed
    root = Path(os.path.commonpath([os.path.abspath(base) for _, base in found]))
    jobs: list[Job] = []
    claimed: dict[Path, Path] = {}  # output -> the input that has it
    seen: set[Path] = set()
    for source, _ in found:
        if source.resolve() in seen:  # the same file given twice
            continue
        seen.add(source.resolve())
        relative = Path(os.path.abspath(source)).relative_to(root)
        target = out_dir / relative.with_suffix(f".{fmt}")
        if target in claimed:
            failed.append(
                Outcome(
                    source,
                    "failed",
                    f"its output {target} is already that of {claimed[target]}; "
                    "rename one of them, or colorize them into different --out folders",
                )
            )
            continue
        claimed[target] = source
        jobs.append(Job(source, target))
    return jobs, failed


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` lies in ``folder`` (a resolved path)."""
    return path.resolve().is_relative_to(folder)


def finished_image(
    colour: Image.Image, alpha: np.ndarray | None, fmt: str, side_by_side: bool = False
) -> Image.Image:
    """The image to write: the colour result with the input's alpha (PNG only), or gray | colour
    when ``side_by_side``. ``alpha`` is ``(H, W)`` float opacity in [0, 1]."""
    if side_by_side:
        gray = Image.fromarray(np.asarray(colour.convert("L")), "L").convert("RGB")
        both = Image.new("RGB", (colour.width * 2, colour.height), "white")
        both.paste(gray, (0, 0))
        both.paste(colour, (colour.width, 0))
        return both
    if alpha is not None and fmt == "png":
        colour = colour.copy()
        colour.putalpha(Image.fromarray((alpha * 255 + 0.5).astype(np.uint8), "L"))
    return colour


def write_image(image: Image.Image, target, fmt: str, *, fast: bool = False) -> None:
    """Save as ``png`` or ``jpg`` (quality 95) to a path or file object; ``fast`` trades PNG
    size for speed (zlib level 1 instead of 6), as a server answering live wants."""
    if fmt == "jpg":
        image.save(target, format="JPEG", quality=95)
    else:
        image.save(target, format="PNG", compress_level=1 if fast else 6)


def save_result(
    colour: Image.Image, image: LoadedImage, target: Path, fmt: str, side_by_side: bool
) -> None:
    """Write the colour result (next to the gray input when ``side_by_side``), atomically."""
    from zhangcolor.files import atomic_write

    result = finished_image(colour, image.alpha, fmt, side_by_side)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, lambda tmp: write_image(result, tmp, fmt))


def colorize_files(
    colorizer: Colorizer,
    jobs: Sequence[Job],
    *,
    temperature: float = TEMPERATURE,
    fmt: str = "png",
    batch_size: int = 4,
    side_by_side: bool = False,
    overwrite: bool = False,
):
    """Colorize each job's file; yields an :class:`Outcome` per file. A file that fails (cannot
    be read or written) is reported and the rest go on."""
    from zhangcolor.images import ImageError

    pending: list[tuple[Job, LoadedImage]] = []

    def flush():
        if not pending:
            return
        results = colorizer.colorize_batch([image for _, image in pending], temperature)
        for (job, image), colour in zip(pending, results, strict=True):
            try:
                save_result(colour, image, job.target, fmt, side_by_side)
                yield Outcome(job.source, "done", str(job.target))
            except OSError as e:
                yield Outcome(job.source, "failed", f"cannot write {job.target}: {e.strerror or e}")
        pending.clear()

    for job in jobs:
        if job.target.exists() and not overwrite:
            yield Outcome(job.source, "skipped", f"{job.target} exists (use --overwrite)")
            continue
        try:
            image = load_image(job.source)
        except ImageError as e:
            yield Outcome(job.source, "failed", str(e))
            continue
        if min(image.pixels.shape[:2]) < 2:
            h, w = image.pixels.shape[:2]
            yield Outcome(job.source, "failed", f"too small to colorize ({w}×{h} px)")
            continue
        pending.append((job, image))
        if len(pending) >= batch_size:
            yield from flush()
    yield from flush()
