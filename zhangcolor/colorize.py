"""Colorizing photos with a trained model: the ``Colorizer`` API behind ``zhangcolor colorize``.

As in the authors' demo, the network sees L resized to a working size; its ab prediction is
upsampled to the photo's own size and joined with the photo's **original** L, so the output keeps
every detail and its L equals the input's.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.nn import functional as F

from zhangcolor.checkpoint import (
    load_checkpoint,
    model_path,
    model_temperature,
    read_metadata,
)
from zhangcolor.color import lab_to_srgb8, rgb_to_lab, srgb8_to_lightness
from zhangcolor.constants import MAX_ASPECT, STRIDE, TEMPERATURE, WORKING_SIZE
from zhangcolor.decode import check_colorize_temperature
from zhangcolor.device import precision_context, resolve_device, resolve_precision
from zhangcolor.images import LoadedImage
from zhangcolor.options import BACKENDS, ColorizeConfig, Head, ServeConfig

#: Pixels of the full-resolution image converted at a time on the CPU: bands of rows bound the
#: memory of huge photos (about 30 MB of temporaries a band), while a photo of up to 0.5 MP goes
#: in one band, in fewer and larger ops (a 256² photo's L: 0.56 -> 0.38 ms against 128-row bands).
_CPU_PIXELS_PER_BAND = 1 << 19
#: Rows joined at a time on a GPU: a photo of up to 1024 rows (1 MP and more) in one go, as each
#: band costs kernel launches, yet a 24 MP photo's full-size Lab (about 2 GB of temporaries) is
#: never built at once.
_DEVICE_ROWS_PER_BAND = 1024


def check_size(size: int) -> int:
    """A working size: a multiple of the networks' stride, at least 16; else a ValueError."""
    if not isinstance(size, int) or size < 16 or size % STRIDE:
        raise ValueError(f"size must be a multiple of {STRIDE} and at least 16, got {size}")
    return size


def resolve_backend(model: str | Path, device: str, precision: str) -> str:
    """What ``backend="auto"`` runs ``model`` with: onnx where torch would run it on the CPU in
    fp32 (``precision`` resolves to fp32 there), onnxruntime is installed and the model exports
    to ONNX (or is an .onnx file); else torch. onnxruntime runs fp32, with ab within 1e-3 of
    torch's. Per core on this project's AVX-512-BF16 CPU, the shipped model's forward ran at 51
    img/s in onnxruntime, 31 in torch fp32 and 75 in torch's native bf16: so bf16, where the
    CPU has it, stays with torch. The export is made here, once, into the cache folder, so a
    failed one falls back to torch. An .onnx file is always onnx."""
    if Path(model).suffix == ".onnx":
        return "onnx"
    if resolve_device(device).type != "cpu" or resolve_precision(precision, torch.device("cpu")):
        return "torch"
    if any(importlib.util.find_spec(m) is None for m in ("onnx", "onnxruntime")):
        return "torch"
    from zhangcolor.export import cached_onnx

    model_path(model)  # a missing model is an error, not a reason to fall back
    try:
        cached_onnx(model)
    except Exception:  # the exporter raises many kinds (unsupported op, tracer errors, ...)
        return "torch"
    return "onnx"


@dataclass
class Colorizer:
    """A trained network with its bins, ready to colorize photos.

    Use :meth:`load`, then :meth:`colorize` (one image) or :meth:`colorize_batch`.
    """

    model: torch.nn.Module
    centers: Tensor  # (Q, 2) bins the model was trained with
    kind: Head  # classification or regression
    device: torch.device
    autocast: torch.dtype | None
    size: int = WORKING_SIZE  # working size the network sees (size × size)
    temperature: float = TEMPERATURE  # the model's default T (its calibrated one, if packaged)
    backend: str = "torch"  # what runs the network: torch, or onnx (onnxruntime on the CPU)

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
        """Load ``"default"`` (the shipped model), a ``.safetensors`` checkpoint of ``train``,
        or the authors' released eccv16 ``.pth``.

        With ``backend="onnx"`` the network runs in onnxruntime on the CPU: ``model`` is then an
        ``.onnx`` file from ``zhangcolor export onnx``, or any model above, exported once into
        the cache folder. ``backend="auto"`` picks onnx where that is the faster choice (see
        :func:`resolve_backend`), else torch; :attr:`backend` says which it took.
        """
        check_size(size)
        if backend == "auto":
            backend = resolve_backend(model, device, precision)
        if backend == "onnx":
            return cls._load_onnx(model, size)
        if backend != "torch":
            raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
        path = model_path(model)
        net, _, bins = load_checkpoint(path)
        metadata = read_metadata(path) if path.suffix == ".safetensors" else {}
        dev = resolve_device(device)
        net = net.to(dev).eval().to(memory_format=torch.channels_last)
        return cls(
            model=net,
            centers=bins["centers"].to(dev),
            kind=net.kind,
            device=dev,
            autocast=resolve_precision(precision, dev),
            size=size,
            temperature=model_temperature(metadata),
        )

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
    def _load_onnx(cls, model: str | Path, size: int) -> Colorizer:
        from zhangcolor.export import OnnxNetwork, cached_onnx

        path = Path(model)
        if path.suffix != ".onnx":
            path = cached_onnx(model)
        net = OnnxNetwork(path)
        cpu = torch.device("cpu")
        return cls(
            model=net,
            centers=net.centers,
            kind=net.kind,
            device=cpu,
            autocast=None,
            size=size,
            temperature=net.temperature,
            backend="onnx",
        )

    @property
    def uses_temperature(self) -> bool:
        """Whether T matters: the classification head's annealed mean; not regression."""
        return self.kind.uses_temperature

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

    def resolve_temperature(self, temperature: float | None) -> float:
        """The T to decode at: ``temperature``, or the model's own when None; a T outside
        [0.001, 1] is a ValueError."""
        return check_colorize_temperature(self.temperature if temperature is None else temperature)

    def decode(self, output: Tensor, temperature: float | None = None) -> Tensor:
        """ab ``(B, 2, h, w)`` from :meth:`network_output` at temperature T (the model's own
        when None; ignored for regression models)."""
        t = self.temperature if temperature is None else temperature
        return self.kind.decode(output, self.centers, t)

    def colorize(
        self, image: Image.Image | np.ndarray, temperature: float | None = None
    ) -> Image.Image:
        """Colorize one PIL image or ``(H, W)`` / ``(H, W, 3)`` array; returns an RGB PIL image
        of the same size whose L is the input's. ``temperature`` None is the model's own T."""
        return self.colorize_batch([image], temperature)[0]

    def colorize_batch(
        self,
        images: Sequence[Image.Image | np.ndarray | LoadedImage],
        temperature: float | None = None,
    ) -> list[Image.Image]:
        """Colorize several images in one network batch."""
        t = self.resolve_temperature(temperature)
        if not images:
            return []
        with photo_threads(min(len(images), torch.get_num_threads())) as pool:
            prepared = list(pool.map(self.prepare, images))
            predicted = self.predict(torch.cat([small for _, small in prepared]), t)
            lights = [light for light, _ in prepared]
            return list(pool.map(self.finish, lights, predicted, [t] * len(lights)))

    # The steps of colorize_batch, for pipelines (colorize_files) that run the per-photo steps,
    # prepare and finish, in threads around the network.

    def prepare(self, image: Image.Image | np.ndarray | LoadedImage) -> tuple[Tensor, Tensor]:
        """A photo's L at full size ``(1, 1, H, W)`` (for :meth:`join`) and at the working size
        ``(1, 1, s, s)`` (for the network), float32 on the CPU. Safe to call from threads."""
        lightness = image_lightness(image)
        return lightness, _working_size(lightness, self.size)

    def predict_ab(self, lightness: Tensor, temperature: float | None = None) -> Tensor:
        """ab ``(B, 2, s/4, s/4)`` on :attr:`device` of L ``(B, 1, s, s)``: the network and
        decoding at T (the model's own when None)."""
        return self.decode(self.network_output(lightness), temperature)

    def predict(self, lightness: Tensor, temperature: float) -> list[Tensor]:
        """The network on L ``(B, 1, s, s)``, per photo as :meth:`finish` takes it (pair the
        two; :meth:`join` takes ab): on a GPU, its ab ``(1, 2, s/4, s/4)`` (the batch decoded
        there at once); on the CPU, its network output, which :meth:`finish` decodes in the
        caller's photo thread, where the ops of one photo run without waking torch's thread
        team for each. The parts are views of the batch's output, freed with the last of its
        photos (copying each part out measured slower and no smaller in peak memory)."""
        output = self.network_output(lightness)
        if not self._decodes_per_photo:
            output = self.decode(output, temperature)
        return list(output.split(1))

    def finish(self, lightness: Tensor, predicted: Tensor, temperature: float) -> Image.Image:
        """The photo of full-size L ``(1, 1, H, W)`` and its part of :meth:`predict` (decoded
        here at T on the CPU). Safe to call from threads."""
        ab = self.decode(predicted, temperature) if self._decodes_per_photo else predicted
        return self.join(lightness, ab)

    @property
    def _decodes_per_photo(self) -> bool:
        """Whether :meth:`finish` decodes (on the CPU) or :meth:`predict` did (on a GPU): the
        one place the two agree on it."""
        return self.device.type == "cpu"

    def join(self, lightness: Tensor, ab: Tensor) -> Image.Image:
        """The photo of full-size L ``(1, 1, H, W)`` and ab ``(1, 2, h, w)``, joined where this
        colorizer runs: in row bands on the CPU, whose memory bound matters for huge photos; on a
        GPU there, with only the 8-bit result copied back. Safe to call from threads."""
        if self.device.type == "cpu":
            return join(lightness, ab.cpu())
        return join_on_device(lightness, ab, self.device)


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
    if max(h, w) > MAX_ASPECT * min(h, w):
        # The network sees a square: a thin strip means nothing to it, and joining its ab at
        # full size would cost a (long side × s/4) matrix, 22 GB for a 2×44,000,000 strip.
        raise ValueError(f"too thin a strip to colorize ({w}×{h}; at most {MAX_ASPECT}:1)")
    out = torch.empty(1, 1, h, w)
    band = _cpu_rows_per_band(w)
    for top in range(0, h, band):
        rows = torch.tensor(pixels[top : top + band])  # a copy: inputs may be read-only
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
    sRGB, on the CPU in bands of rows (a full-resolution ab is what would cost memory on a 24 MP
    photo)."""
    band = _cpu_rows_per_band(lightness.shape[-1])
    return Image.fromarray(join_srgb8(lightness, ab, band).numpy(), "RGB")


def _cpu_rows_per_band(width: int) -> int:
    """Rows of a ``width``-pixel-wide photo converted at a time on the CPU."""
    return max(1, _CPU_PIXELS_PER_BAND // width)


def join_on_device(lightness: Tensor, ab: Tensor, device: torch.device) -> Image.Image:
    """:func:`join` on ``device`` (a GPU, or the CPU to check it against :func:`join`): the
    upsampling and the conversion run there, in wide bands; only the 8-bit result comes back."""
    rgb = join_srgb8(lightness.to(device), ab.to(device), _DEVICE_ROWS_PER_BAND)
    return Image.fromarray(rgb.cpu().numpy(), "RGB")


def join_srgb8(lightness: Tensor, ab: Tensor, rows_per_band: int) -> Tensor:
    """8-bit sRGB ``(H, W, 3)`` of L ``(1, 1, H, W)`` and ab ``(1, 2, h, w)`` upsampled
    bilinearly to L's size, on L's device, ``rows_per_band`` rows at a time."""
    device = lightness.device
    h, w = lightness.shape[-2:]
    rows = _bilinear_weights(ab.shape[-2], h, device)  # (H, h)
    wide = ab[0].float().to(device) @ _bilinear_weights(ab.shape[-1], w, device).T  # (2, h, W)
    out = torch.empty((h, w, 3), dtype=torch.uint8, device=device)
    for top in range(0, h, rows_per_band):
        bottom = min(h, top + rows_per_band)
        band = rows[top:bottom] @ wide  # (2, r, W)
        lab = torch.cat([lightness[0, :, top:bottom].float(), band])  # (3, r, W)
        out[top:bottom] = lab_to_srgb8(lab).permute(1, 2, 0)  # (r, W, 3)
    return out


def _bilinear_weights(n_in: int, n_out: int, device: torch.device) -> Tensor:
    """``(n_out, n_in)`` float32 on ``device``: bilinear resampling along one axis as a matrix,
    with the pixel-centre alignment and edge clamping of ``F.interpolate(align_corners=False)``.
    Matrices of up to 4 MB are kept for the next photo of that size; larger ones are not, so the
    cache stays under 256 MB whatever the photos' sizes."""
    if n_in * n_out <= _CACHED_WEIGHTS:
        return _cached_bilinear_weights(n_in, n_out, device)
    return _bilinear_matrix(n_in, n_out, device)


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
    return _bilinear_matrix(n_in, n_out, device)


def _bilinear_matrix(n_in: int, n_out: int, device: torch.device) -> Tensor:
    source = (torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5
    source = source.clamp(0, n_in - 1)
    left = source.floor().long()
    right = (left + 1).clamp(max=n_in - 1)
    frac = source - left
    weights = torch.zeros(n_out, n_in, dtype=torch.float64)
    out = torch.arange(n_out)
    weights.index_put_((out, left), 1 - frac, accumulate=True)
    weights.index_put_((out, right), frac, accumulate=True)
    return weights.float().to(device)
