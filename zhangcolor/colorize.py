"""Colorizing photos with a trained model: the ``Colorizer`` API behind ``zhangcolor colorize``,
the server, ``evaluate`` and ``calibrate``.

One sequence, as in the authors' demo, and each step one method of :class:`Colorizer`:

1. :meth:`~Colorizer.prepare`: the photo's L, at full size and resized to the working size the
   network sees (a square), and a user's colour points, if any (:mod:`zhangcolor.hints`), as
   hint channels at that size;
2. :meth:`~Colorizer.predict`: the network on a batch of prepared photos, one output each
   (logits over the bins, or ab);
3. :meth:`~Colorizer.decode`: the output as ab, head-aware (the annealed mean at T for the
   classification head), on the device the output is on;
4. :meth:`~Colorizer.join`: ab upsampled to the photo's size and joined with its **original**
   L, so the output keeps every detail and its L equals the input's.

:meth:`~Colorizer.colorize_batch` runs them in order; the folder pipeline and the server run
the same steps, with threads and a cache of their own around them. Any photo of any shape goes
through: the joins work in tiles of bounded size, so a 2 × 44,000,000 strip costs the memory of
its pixels, not of its long side.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.nn import functional as F

from zhangcolor.color import lab_to_rgb, lab_to_srgb8, rgb_to_lab, srgb8_to_lightness
from zhangcolor.constants import STRIDE, WORKING_SIZE
from zhangcolor.decode import check_colorize_temperature
from zhangcolor.device import precision_context, resolve_device, resolve_precision
from zhangcolor.hints import CHANNELS, Hint, HintError, parse_hints, rasterize
from zhangcolor.images import LoadedImage
from zhangcolor.model_file import (
    ModelFile,
    load_network,
    onnx_export_of,
    onnx_network,
    read_model,
)
from zhangcolor.model_record import ModelRecord
from zhangcolor.options import BACKENDS, ColorizeConfig, Head, ServeConfig

#: Pixels converted at a time on the CPU: tiles of rows (and, for very wide photos, of columns)
#: bound the memory of huge photos to about 30 MB of temporaries, while a photo of up to 0.5 MP
#: goes in one tile, in fewer and larger ops.
_CPU_PIXELS_PER_TILE = 1 << 19
#: Pixels joined at a time on a GPU: a photo of up to 1024 rows of 4096 px in one go, as each
#: tile costs kernel launches, yet a 24 MP photo's full-size Lab (about 2 GB of temporaries) is
#: never built at once.
_DEVICE_PIXELS_PER_TILE = 1024 * 4096
#: The most bytes the ab of a whole row band's width may take before the join also cuts the
#: photo into columns: only strips thousands of times longer than wide get there.
_WIDE_AB_BYTES = 64 << 20
#: The working-size resize first averages a side down by a whole factor when it is more than
#: this many times the working size, so that the antialiasing filter's weights stay small.
_PRE_REDUCE_RATIO = 64

Image_ = Image.Image | np.ndarray | LoadedImage
#: A photo's colour points as :func:`zhangcolor.hints.parse_hints` takes them, or None.
Hints = dict | Sequence[dict] | Sequence[Hint] | Tensor | None


def check_size(size: int) -> int:
    """A working size: a multiple of the networks' stride, at least 16; else a ValueError."""
    if not isinstance(size, int) or size < 16 or size % STRIDE:
        raise ValueError(f"size must be a multiple of {STRIDE} and at least 16, got {size}")
    return size


def resolve_backend(model: str | Path | ModelFile, device: str, precision: str) -> str:
    """What ``backend="auto"`` runs ``model`` with: onnx where torch would run it on the CPU in
    fp32 (``precision`` resolves to fp32 there), onnxruntime is installed and the model exports
    to ONNX (or is an .onnx file); else torch. onnxruntime runs fp32, with ab within 1e-3 of
    torch's; torch's bf16, where the CPU runs it natively, is faster still, so it stays with
    torch there. The export is made here, once, into the cache folder, so a failed one falls
    back to torch."""
    file = model if isinstance(model, ModelFile) else read_model(model)
    return _auto_backend(file, device, precision)[0]


def _auto_backend(
    file: ModelFile, device: str, precision: str, size: int = WORKING_SIZE
) -> tuple[str, Path | None]:
    """:func:`resolve_backend`, with the ONNX file it found or made (None for torch)."""
    if file.kind == "onnx":
        return "onnx", file.path
    if resolve_device(device).type != "cpu" or resolve_precision(precision, torch.device("cpu")):
        return "torch", None
    if any(importlib.util.find_spec(m) is None for m in ("onnx", "onnxruntime")):
        return "torch", None
    try:
        return "onnx", onnx_export_of(file, size, automatic=file.record.network.point_vote)
    except Exception:  # the exporter raises many kinds (unsupported op, tracer errors, ...)
        return "torch", None


@dataclass(frozen=True)
class Suggestion:
    """A colour the network finds likely at a pixel: sRGB hex at that pixel's L, its bin's ab,
    and the probability of that bin."""

    color: str
    ab: tuple[float, float]
    probability: float


@dataclass(frozen=True)
class Photo:
    """A photo prepared for the network (:meth:`Colorizer.prepare`).

    Attributes:
        lightness: ``(1, 1, H, W)`` float32 L in [0, 100] at the photo's own size, on the CPU:
            what the result is joined onto.
        small: ``(1, 1, s, s)`` the same L at the working size s: what the network sees.
        alpha: ``(H, W)`` float32 opacity in [0, 1] of the input, or None.
        hints: ``(1, 3, s, s)`` the user's colour points at the working size (a / 110,
            b / 110, mask), or None for none.
    """

    lightness: Tensor
    small: Tensor
    alpha: np.ndarray | None = None
    hints: Tensor | None = None


@dataclass
class Colorizer:
    """A trained network with its record (bins, head, temperature), ready to colorize photos.

    Use :meth:`load`, then :meth:`colorize` (one image) or :meth:`colorize_batch`; pipelines
    call the steps themselves (see the module's docstring).
    """

    model: torch.nn.Module  # or an OnnxNetwork, called alike
    record: ModelRecord
    device: torch.device
    autocast: torch.dtype | None
    size: int = WORKING_SIZE  # working size the network sees (size × size)
    backend: str = "torch"  # what runs the network: torch, or onnx (onnxruntime on the CPU)
    centers: Tensor = field(init=False, repr=False)  # (Q, 2) bins on the device

    def __post_init__(self) -> None:
        self.centers = self.record.centers.to(self.device)

    @classmethod
    def load(
        cls,
        model: str | Path = "default",
        *,
        device: str = "auto",
        precision: str = "auto",
        size: int = WORKING_SIZE,
        backend: str = "torch",
    ) -> Colorizer:
        """Load ``"default"`` (the shipped model), a ``.safetensors`` model of ``train`` or
        ``package-model``, an ``.onnx`` export, or one of the authors' released ``.pth`` files
        (eccv16, or siggraph17 with its regression output, as their demo runs it).

        With ``backend="onnx"`` the network runs in onnxruntime on the CPU: an ``.onnx`` file
        as it is, any other model exported once into the cache folder. ``backend="auto"`` picks
        onnx where that is the faster choice (see :func:`resolve_backend`), else torch;
        :attr:`backend` says which it took. The file is read once.
        """
        check_size(size)
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
        file = read_model(model)
        onnx_path = None
        if backend == "auto":
            backend, onnx_path = _auto_backend(file, device, precision, size)
        if backend == "onnx" or file.kind == "onnx":
            return cls._load_onnx(file, onnx_path, size)
        dev = resolve_device(device)
        net = load_network(file).to(dev).to(memory_format=torch.channels_last)
        return cls(net, file.record, dev, resolve_precision(precision, dev), size)

    @classmethod
    def load_as(cls, config: ColorizeConfig | ServeConfig) -> Colorizer:
        """:meth:`load` with the ``model``, ``device``, ``precision``, ``size`` and ``backend``
        of a colorize or serve config."""
        return cls.load(
            config.model,
            device=config.device,
            precision=config.precision,
            size=config.size,
            backend=config.backend,
        )

    @classmethod
    def _load_onnx(cls, file: ModelFile, onnx_path: Path | None, size: int) -> Colorizer:
        net = onnx_network(file, onnx_path, size)
        return cls(net, file.record, torch.device("cpu"), None, size, backend="onnx")

    @property
    def kind(self) -> Head:
        """The head: classification (313 logits) or regression."""
        return self.record.head

    @property
    def temperature(self) -> float:
        """The model's own T: its calibrated one, else the paper's 0.38."""
        return self.record.temperature

    @property
    def takes_hints(self) -> bool:
        """Whether the network takes a user's colour points beside L."""
        return bool(getattr(self.model, "takes_hints", False))

    @property
    def uses_temperature(self) -> bool:
        """Whether T matters: the classification head's annealed mean; not regression."""
        return self.kind.uses_temperature

    def resolve_temperature(self, temperature: float | None) -> float:
        """The T to decode at: ``temperature``, or the model's own when None; a T outside
        [0.001, 1] is a ValueError."""
        return check_colorize_temperature(self.temperature if temperature is None else temperature)

    # ------------------------------------------------------------------------- the sequence

    def prepare(self, image: Image_ | Tensor, hints: Hints = None) -> Photo:
        """Step 1: a PIL image, an ``(H, W)`` / ``(H, W, 3)`` array, a decoded file, or an L
        tensor ``(1, 1, H, W)`` in [0, 100], as the network and the join need it, with the
        user's colour points (:func:`zhangcolor.hints.parse_hints` takes them: ``{"points":
        [...]}``, a list of points or of :class:`~zhangcolor.hints.Hint`; or hint channels
        ``(1, 3, s, s)`` made already). Any size. Safe to call from threads.

        Raises:
            HintError: hints outside the photo or otherwise bad, or hints for a model that takes
                none.
        """
        alpha = image.alpha if isinstance(image, LoadedImage) else None
        lightness = image if isinstance(image, Tensor) else image_lightness(image)
        channels = None
        if isinstance(hints, Tensor):  # hint channels made by the caller (evaluation)
            expected = (1, CHANNELS, self.size, self.size)
            if tuple(hints.shape) != expected:
                raise ValueError(f"hint channels must be {expected}, got {tuple(hints.shape)}")
            channels = hints
        elif hints:
            if not self.takes_hints:
                raise HintError(
                    "this model takes no colour points (it was trained without them); use a "
                    "guided model"
                )
            height, width = lightness.shape[-2:]
            points = parse_hints(hints, width, height)
            channels = rasterize(points, width, height, self.size) if points else None
        return Photo(lightness, working_size(lightness, self.size), alpha, channels)

    def predict(self, photos: Sequence[Photo]) -> list[Tensor]:
        """Step 2: the network on a batch of photos (with their hints); each photo's output
        ``(1, C, h, w)`` (float32, on :attr:`device`; views of the batch's output, freed with
        the last)."""
        small = torch.cat([p.small for p in photos])
        if all(p.hints is None for p in photos):
            return list(self.network_output(small).split(1))
        empty = torch.zeros(1, CHANNELS, self.size, self.size)
        hints = torch.cat([empty if p.hints is None else p.hints for p in photos])
        return list(self.network_output(small, hints).split(1))

    @torch.no_grad()
    def network_output(self, lightness: Tensor, hints: Tensor | None = None) -> Tensor:
        """The network on L ``(B, 1, H, W)`` in [0, 100], any size (resized to the working
        size), with hint channels ``(B, 3, s, s)`` at the working size (None: no hints):
        ``(B, Q, s/4, s/4)`` logits or ``(B, 2, h, w)`` ab, float32."""
        small = working_size(lightness.to(self.device), self.size)
        small = small.contiguous(memory_format=torch.channels_last)
        with precision_context(self.device, self.autocast):
            if hints is None:
                return self.model(small).float()
            hints = hints.to(self.device).contiguous(memory_format=torch.channels_last)
            return self.model(small, hints).float()

    def decode(self, output: Tensor, temperature: float | None = None) -> Tensor:
        """Step 3: ab ``(B, 2, h, w)`` of :meth:`predict`'s outputs at temperature T (the
        model's own when None; ignored for regression models), on the output's device."""
        t = self.temperature if temperature is None else temperature
        return self.kind.decode(output, self.centers.to(output.device), t)

    def join(self, lightness: Tensor, ab: Tensor) -> Image.Image:
        """Step 4: the photo of full-size L ``(1, 1, H, W)`` and ab ``(1, 2, h, w)``, joined
        where this colorizer runs: in tiles on the CPU; on a GPU there, with only the 8-bit
        result copied back. Safe to call from threads."""
        return join_image(lightness, ab, None if self.device.type == "cpu" else self.device)

    def finish(self, lightness: Tensor, output: Tensor, temperature: float) -> Image.Image:
        """Steps 3 and 4 for one photo: its L ``(1, 1, H, W)`` (full size, or a preview's) and
        its output of :meth:`predict`, decoded at T where this colorizer runs. Safe to call
        from threads (on the CPU each photo's ops then run side by side, one thread each)."""
        ab = self.decode(output.to(self.device), temperature)
        return self.join(lightness, ab)

    def upsampled_ab(self, photo: Photo, output: Tensor, temperature: float | None) -> Tensor:
        """Step 3, then ab upsampled to the photo's size as :meth:`join` does it: ``(1, 2, H,
        W)`` float32 on the CPU, for scoring against the truth (``evaluate``)."""
        ab = self.decode(output, temperature).float().cpu()
        h, w = photo.lightness.shape[-2:]
        rows = bilinear_weights(ab.shape[-2], h, torch.device("cpu"))  # (H, h)
        cols = bilinear_weights(ab.shape[-1], w, torch.device("cpu"))  # (W, w)
        return (rows @ ab[0] @ cols.T)[None]  # (1, 2, H, W)

    def suggest(
        self, image: Image_, x: float, y: float, *, k: int = 8, hints: Hints = None
    ) -> list[Suggestion]:
        """The ``k`` most probable colours at pixel ``(x, y)`` of ``image`` (origin top-left),
        from the network's distribution over the bins given ``hints`` (the points so far): each
        as sRGB at the pixel's own L, with its probability. The palette a user picks a colour
        point from.

        Raises:
            ValueError: a regression model (it predicts one colour, not a distribution), a
                point outside the image, or ``k`` < 1.
        """
        photo = self.prepare(image, hints)
        return self.suggestions(photo.lightness, self.predict([photo])[0], x, y, k=k)

    def suggestions(
        self, lightness: Tensor, output: Tensor, x: float, y: float, *, k: int = 8
    ) -> list[Suggestion]:
        """:meth:`suggest` from a photo's L ``(1, 1, H, W)`` and its output of :meth:`predict`
        (the server keeps both, so a click costs no network run)."""
        if not self.uses_temperature:
            raise ValueError(
                "a regression model predicts one colour per pixel, not a distribution: it has "
                "no suggestions"
            )
        height, width = lightness.shape[-2:]
        if not (0 <= x < width and 0 <= y < height):
            raise ValueError(f"({x:g}, {y:g}) is outside the {width}×{height} photo")
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        probabilities = pixel_distribution(output, (x + 0.5) / width, (y + 0.5) / height)
        light = float(lightness[0, 0, int(y), int(x)])
        return palette(probabilities, self.record.centers, light, k)

    def colorize(
        self, image: Image_, temperature: float | None = None, *, hints: Hints = None
    ) -> Image.Image:
        """Colorize one PIL image or ``(H, W)`` / ``(H, W, 3)`` array; returns an RGB PIL image
        of the same size whose L is the input's. ``temperature`` None is the model's own T;
        ``hints`` are the user's colour points (see :meth:`prepare`)."""
        return self.colorize_batch([image], temperature, hints=[hints])[0]

    def colorize_batch(
        self,
        images: Sequence[Image_],
        temperature: float | None = None,
        *,
        hints: Sequence[Hints] | None = None,
    ) -> list[Image.Image]:
        """Colorize several images in one network batch (``hints``: each image's colour points,
        or None): each photo prepared and finished in a pool of photo threads
        (:func:`photo_threads`), the network once for all."""
        t = self.resolve_temperature(temperature)
        if not images:
            return []
        hints = [None] * len(images) if hints is None else list(hints)
        if len(hints) != len(images):
            raise ValueError(f"{len(hints)} sets of hints for {len(images)} images")
        with photo_threads(min(len(images), torch.get_num_threads())) as pool:
            photos = list(pool.map(self.prepare, images, hints))
            outputs = self.predict(photos)
            lights = [p.lightness for p in photos]
            return list(pool.map(self.finish, lights, outputs, [t] * len(photos)))


def pixel_distribution(output: Tensor, u: float, v: float) -> Tensor:
    """The distribution over the bins ``(Q,)`` float64 at the point ``(u, v)`` of an output
    ``(1, Q, h, w)`` of logits, in [0, 1]² image coordinates: softmax at T = 1 of each of the
    four nearest output cells, weighted bilinearly as the join upsamples."""
    _, _, h, w = output.shape
    probabilities = torch.softmax(output[0].double(), dim=0)  # (Q, h, w)
    gy, gx = min(max(v * h - 0.5, 0.0), h - 1.0), min(max(u * w - 0.5, 0.0), w - 1.0)
    y0, x0 = int(gy), int(gx)
    y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
    fy, fx = gy - y0, gx - x0
    return (
        probabilities[:, y0, x0] * (1 - fy) * (1 - fx)
        + probabilities[:, y0, x1] * (1 - fy) * fx
        + probabilities[:, y1, x0] * fy * (1 - fx)
        + probabilities[:, y1, x1] * fy * fx
    )


def palette(probabilities: Tensor, centers: Tensor, lightness: float, k: int) -> list[Suggestion]:
    """The ``k`` most probable bins (``probabilities (Q,)``, ``centers (Q, 2)``) whose colour at
    L = ``lightness`` lies in the sRGB gamut, as suggestions, most probable first."""
    lab = torch.cat([torch.full((len(centers), 1), lightness), centers.double()], 1)  # (Q, 3)
    lab = lab.T[:, :, None]  # (3, Q, 1)
    rgb = lab_to_rgb(lab)  # clipped to the gamut
    in_gamut = (rgb_to_lab(rgb) - lab).norm(dim=0)[:, 0] < 1.0  # (Q,): unchanged by the clip
    rgb8 = (rgb[:, :, 0].T * 255).round().to(torch.uint8)  # (Q, 3)
    order = [int(q) for q in torch.argsort(probabilities, descending=True) if in_gamut[q]]
    return [
        Suggestion(
            color="#" + "".join(f"{int(c):02x}" for c in rgb8[q]),
            ab=(float(centers[q, 0]), float(centers[q, 1])),
            probability=float(probabilities[q]),
        )
        for q in order[:k]
    ]


@contextlib.contextmanager
def photo_threads(workers: int) -> Iterator[ThreadPoolExecutor]:
    """A pool of ``workers`` threads for the per-photo work around the network (decoding,
    :meth:`Colorizer.prepare`, :meth:`Colorizer.finish`, writing). Each gets an equal share of
    torch's threads, so the workers' ops use the cores side by side, not a thread team as large
    as the machine each (16 workers × 16 threads); with one thread, a photo's many small ops
    never wait for sleeping team threads to wake (2 ms of a 256² photo's 3 under
    OMP_WAIT_POLICY=PASSIVE, as the command line runs)."""
    torch_threads = torch.get_num_threads()
    share = max(1, torch_threads // max(1, workers))
    pool = ThreadPoolExecutor(
        max(1, workers), "colorize", initializer=torch.set_num_threads, initargs=(share,)
    )
    try:
        yield pool
    finally:  # also when a generator using it is closed early: drop what has not started
        pool.shutdown(wait=True, cancel_futures=True)
        # A thread's set_num_threads also sets the default of threads started later.
        torch.set_num_threads(torch_threads)


def working_size(lightness: Tensor, size: int) -> Tensor:
    """L ``(B, 1, H, W)`` resized to ``(B, 1, size, size)``: the network's view. A side over
    :data:`_PRE_REDUCE_RATIO` × ``size`` (a long strip) is first box-averaged by a whole factor,
    so the antialiasing filter's weights stay small."""
    factors = [max(1, side // (_PRE_REDUCE_RATIO * size)) for side in lightness.shape[-2:]]
    if max(factors) > 1:
        lightness = F.avg_pool2d(lightness, factors, ceil_mode=True)
    return resize_lightness(lightness, (size, size))


def resize_lightness(lightness: Tensor, size: tuple[int, int]) -> Tensor:
    """L ``(B, 1, H, W)`` resized bilinearly, antialiased, to ``(B, 1, *size)``."""
    if tuple(lightness.shape[-2:]) == tuple(size):
        return lightness
    return F.interpolate(lightness, size=size, mode="bilinear", align_corners=False, antialias=True)


def image_lightness(image: Image.Image | np.ndarray | LoadedImage) -> Tensor:
    """The input's L ``(1, 1, H, W)`` in [0, 100], float32, converted in tiles."""
    if isinstance(image, LoadedImage):
        pixels = image.pixels
    elif isinstance(image, Image.Image):
        pixels = np.asarray(image.convert("RGB"))
    else:
        pixels = np.asarray(image)
        if pixels.ndim == 2:
            pixels = np.repeat(pixels[..., None], 3, axis=2)
        if pixels.ndim != 3 or pixels.shape[2] not in (3, 4) or min(pixels.shape[:2]) < 1:
            raise ValueError(f"an image array must be (H, W) or (H, W, 3), got {pixels.shape}")
        pixels = pixels[..., :3]
    h, w = pixels.shape[:2]
    out = torch.empty(1, 1, h, w)
    for top, bottom, left, right in tiles(h, w, _CPU_PIXELS_PER_TILE):
        part = torch.tensor(pixels[top:bottom, left:right])  # a copy: inputs may be read-only
        part = part.permute(2, 0, 1)  # (3, r, c)
        if part.dtype == torch.uint8:
            light = srgb8_to_lightness(part)
        else:
            scale = 65535.0 if pixels.dtype == np.uint16 else 1.0
            light = rgb_to_lab(part.float() / scale)[:1]
        out[0, :, top:bottom, left:right] = light
    return out


def tiles(height: int, width: int, pixels: int) -> Iterator[tuple[int, int, int, int]]:
    """``(top, bottom, left, right)`` of tiles covering a ``height × width`` photo in row order,
    each of at most ``pixels`` pixels: bands of whole rows, and for rows wider than ``pixels``,
    pieces of one row."""
    columns = min(width, pixels)
    rows = max(1, pixels // columns)
    for top in range(0, height, rows):
        for left in range(0, width, columns):
            yield top, min(height, top + rows), left, min(width, left + columns)


def join_image(lightness: Tensor, ab: Tensor, device: torch.device | None = None) -> Image.Image:
    """Upsample ab ``(1, 2, h, w)`` bilinearly to L's size ``(1, 1, H, W)``, join, and convert to
    8-bit sRGB, tile by tile: without a ``device``, on the CPU in tiles of at most half a
    megapixel, whose memory bound matters for huge photos; on a ``device`` (a GPU; the CPU to
    check it) in larger tiles, with only the 8-bit result copied back."""
    if device is None:
        return Image.fromarray(join_srgb8(lightness, ab.cpu(), _CPU_PIXELS_PER_TILE).numpy())
    rgb = join_srgb8(lightness.to(device), ab.to(device), _DEVICE_PIXELS_PER_TILE)
    return Image.fromarray(rgb.cpu().numpy(), "RGB")


def join_srgb8(lightness: Tensor, ab: Tensor, pixels_per_tile: int) -> Tensor:
    """8-bit sRGB ``(H, W, 3)`` of L ``(1, 1, H, W)`` and ab ``(1, 2, h, w)`` upsampled
    bilinearly to L's size, on L's device, at most ``pixels_per_tile`` pixels at a time."""
    device = lightness.device
    h, w = lightness.shape[-2:]
    ab = ab[0].float().to(device)  # (2, h', w')
    out = torch.empty((h, w, 3), dtype=torch.uint8, device=device)
    if 2 * ab.shape[-2] * w * 4 <= _WIDE_AB_BYTES:
        # The common case: ab widened to the photo's width once, then band by band of rows.
        wide = ab @ bilinear_weights(ab.shape[-1], w, device).T  # (2, h', W)
        rows = bilinear_weights(ab.shape[-2], h, device)  # (H, h')
        band = max(1, pixels_per_tile // w)
        for top in range(0, h, band):
            bottom = min(h, top + band)
            upsampled = rows[top:bottom] @ wide  # (2, r, W)
            out[top:bottom] = _lab_to_srgb8(lightness[0, :, top:bottom], upsampled)
        return out
    for top, bottom, left, right in tiles(h, w, pixels_per_tile):
        rows = bilinear_weights(ab.shape[-2], h, device, top, bottom)  # (r, h')
        cols = bilinear_weights(ab.shape[-1], w, device, left, right)  # (c, w')
        upsampled = rows @ ab @ cols.T  # (2, r, c)
        light = lightness[0, :, top:bottom, left:right]
        out[top:bottom, left:right] = _lab_to_srgb8(light, upsampled)
    return out


def _lab_to_srgb8(lightness: Tensor, ab: Tensor) -> Tensor:
    """``(r, c, 3)`` uint8 of L ``(1, r, c)`` and ab ``(2, r, c)``."""
    lab = torch.cat([lightness.float(), ab])  # (3, r, c)
    return lab_to_srgb8(lab).permute(1, 2, 0)


def bilinear_weights(
    n_in: int, n_out: int, device: torch.device, start: int = 0, stop: int | None = None
) -> Tensor:
    """Rows ``start:stop`` of the ``(n_out, n_in)`` float32 matrix, on ``device``, of bilinear
    resampling along one axis, with the pixel-centre alignment and edge clamping of
    ``F.interpolate(align_corners=False)``. Whole matrices of up to 4 MB are kept for the next
    photo of that size; larger ones are not, so the cache stays under 256 MB whatever the
    photos' sizes."""
    stop = n_out if stop is None else stop
    if n_in * n_out <= _CACHED_WEIGHTS:
        return _cached_bilinear_weights(n_in, n_out, device)[start:stop]
    return _bilinear_matrix(n_in, n_out, device, start, stop)


#: The most entries of a bilinear matrix that is cached (4 MB of float32).
_CACHED_WEIGHTS = 1 << 20
#: How many resampling matrices the cache keeps (one per photo width or height seen).
RESAMPLING_CACHE_ENTRIES = 64


def clear_resampling_cache() -> None:
    """Forget the cached resampling matrices (a server does it after a large photo, so that
    the cache holds at most ``RESAMPLING_CACHE_ENTRIES`` matrices of small photos)."""
    _cached_bilinear_weights.cache_clear()


@functools.lru_cache(maxsize=RESAMPLING_CACHE_ENTRIES)
def _cached_bilinear_weights(n_in: int, n_out: int, device: torch.device) -> Tensor:
    return _bilinear_matrix(n_in, n_out, device, 0, n_out)


def _bilinear_matrix(n_in: int, n_out: int, device: torch.device, start: int, stop: int) -> Tensor:
    source = (torch.arange(start, stop, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5
    source = source.clamp(0, n_in - 1)
    left = source.floor().long()
    right = (left + 1).clamp(max=n_in - 1)
    frac = source - left
    weights = torch.zeros(stop - start, n_in, dtype=torch.float64)
    out = torch.arange(stop - start)
    weights.index_put_((out, left), 1 - frac, accumulate=True)
    weights.index_put_((out, right), frac, accumulate=True)
    return weights.float().to(device)
