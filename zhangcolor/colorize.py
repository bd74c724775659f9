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
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.nn import functional as F

from zhangcolor.checkpoint import (
    default_model_path,
    load_checkpoint,
    model_path,
    model_temperature,
    read_metadata,
)
from zhangcolor.color import lab_to_srgb8, rgb_to_lab, srgb8_to_lightness
from zhangcolor.constants import STRIDE, TEMPERATURE, WORKING_SIZE
from zhangcolor.decode import check_colorize_temperature
from zhangcolor.device import precision_context, resolve_device, resolve_precision
from zhangcolor.images import LoadedImage
from zhangcolor.options import BACKENDS, Head

#: Rows of the full-resolution image converted at a time, to bound memory on huge photos.
_ROWS_PER_CHUNK = 128


def check_size(size: int) -> int:
    """A working size: a multiple of the networks' stride, at least 16; else a ValueError."""
    if not isinstance(size, int) or size < 16 or size % STRIDE:
        raise ValueError(f"size must be a multiple of {STRIDE} and at least 16, got {size}")
    return size


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
        ``.onnx`` file from ``zhangcolor export onnx`` (``"default"`` exports the shipped model
        once into the cache folder).
        """
        check_size(size)
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
            model=net,
            centers=net.centers,
            kind=net.kind,
            device=cpu,
            autocast=None,
            size=size,
            temperature=net.temperature,
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
        t = check_colorize_temperature(self.temperature if temperature is None else temperature)
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
