"""A user's colour points (Zhang et al., SIGGRAPH 2017): what they are, how they are checked,
and how they reach the network.

A hint is a point of the input photo, in its pixel coordinates (origin top-left, x to the right,
y down), with a CSS hex sRGB colour whose ab is used (the photo's own L is kept), and optionally
the side of the square patch it covers, in the photo's pixels::

    {"points": [{"x": 120, "y": 45, "color": "#c03020"}, {"x": 10, "y": 300, "color": "#2050a0",
                 "size": 12}]}

The network sees hints as three channels at its working size: the hinted ab divided by 110 (as
its ab), and a mask, 1 where a pixel is hinted and 0 elsewhere. No hints is all zeros: automatic
colorization.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from zhangcolor.color import rgb_to_lab
from zhangcolor.constants import AB_NORM

#: The most points one photo's hints may hold.
MAX_POINTS = 1000
#: The side (pixels of the working size) of a point's patch when it gives no ``size``.
DEFAULT_PATCH = 3
#: The largest hint file read, in bytes (1,000 points take well under 200 KB).
MAX_FILE_BYTES = 1 << 20
#: Hint channels: a / 110, b / 110, mask.
CHANNELS = 3
_HEX = re.compile(r"#([0-9a-fA-F]{3}|[0-9a-fA-F]{6})")
_KEYS = {"x", "y", "color", "size"}


class HintError(ValueError):
    """Hints that cannot be used; the message names where they came from and the point."""


@dataclass(frozen=True)
class Hint:
    """One colour point: its place in the photo's pixels, its colour, the ab of that colour, and
    the side of its patch in the photo's pixels (None: :data:`DEFAULT_PATCH` working pixels)."""

    x: float
    y: float
    color: str
    ab: tuple[float, float]
    size: float | None = None

    def as_json(self) -> dict[str, Any]:
        point: dict[str, Any] = {"x": self.x, "y": self.y, "color": self.color}
        if self.size is not None:
            point["size"] = self.size
        return point


def hex_to_ab(color: str) -> tuple[float, float]:
    """The CIE ab of a CSS hex sRGB colour (``#rgb`` or ``#rrggbb``); ValueError otherwise."""
    if not isinstance(color, str) or not _HEX.fullmatch(color):
        raise ValueError(f"{_short(color)} is not a CSS hex colour like #c03020")
    digits = color[1:]
    if len(digits) == 3:
        digits = "".join(d * 2 for d in digits)
    rgb = torch.tensor([int(digits[i : i + 2], 16) for i in (0, 2, 4)], dtype=torch.float64)
    lab = rgb_to_lab((rgb / 255.0).view(3, 1, 1))[:, 0, 0]
    return float(lab[1]), float(lab[2])


def parse_hints(value: Any, width: int, height: int, where: str = "hints") -> list[Hint]:
    """Hints as a user gives them, checked against a ``width × height`` photo.

    ``value`` is ``{"points": [...]}``, a list of points, or a list of :class:`Hint`. Raises
    :class:`HintError` naming ``where`` and the first bad point: not a mapping, an unknown or
    missing key, a coordinate outside the photo or not a number, a bad colour or size, or more
    than :data:`MAX_POINTS` points.
    """
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - {"points"})
        if unknown or "points" not in value:
            raise HintError(f'{where}: expected {{"points": [...]}}, got the keys {_keys(value)}')
        value = value["points"]
    if not isinstance(value, list | tuple):
        raise HintError(f"{where}: the points must be a list, got {type(value).__name__}")
    if len(value) > MAX_POINTS:
        raise HintError(f"{where}: {len(value):,} points; at most {MAX_POINTS:,} are taken")
    return [_point(p, i, width, height, where) for i, p in enumerate(value)]


def _point(point: Any, index: int, width: int, height: int, where: str) -> Hint:
    if isinstance(point, Hint):
        point = point.as_json()
    name = f"{where}: point {index}"
    if not isinstance(point, Mapping):
        raise HintError(f'{name} is a {type(point).__name__}, not {{"x", "y", "color"}}')
    unknown, missing = sorted(set(point) - _KEYS), sorted({"x", "y", "color"} - set(point))
    if unknown or missing:
        problem = f"unknown keys {unknown}" if unknown else f"no {', '.join(missing)}"
        raise HintError(f"{name}: {problem} (a point has x, y, color and optionally size)")
    x, y = _number(point["x"], f"{name}: x"), _number(point["y"], f"{name}: y")
    if not (0 <= x < width and 0 <= y < height):
        raise HintError(
            f"{name}: ({x:g}, {y:g}) is outside the {width}×{height} photo "
            f"(0 ≤ x < {width}, 0 ≤ y < {height})"
        )
    size = point.get("size")
    if size is not None:
        size = _number(size, f"{name}: size")
        if not 0 < size <= max(width, height):
            raise HintError(f"{name}: size {size:g} is not in (0, {max(width, height)}]")
    try:
        ab = hex_to_ab(point["color"])
    except ValueError as e:
        raise HintError(f"{name}: color {e}") from None
    return Hint(x, y, point["color"], ab, size)


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise HintError(f"{name} is {_short(value)}, not a finite number")
    return float(value)


def _keys(value: Mapping) -> str:
    return ", ".join(_short(k, 20) for k in list(value)[:5]) or "none"


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def load_hints(path: str | Path, width: int, height: int) -> list[Hint]:
    """A hint file (``{"points": [...]}``, UTF-8 JSON) checked against a ``width × height``
    photo; :class:`HintError` naming the file when it cannot be used."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise HintError(f"{path}: {size:,} bytes; a hint file is at most {MAX_FILE_BYTES:,}")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise HintError(f"{path}: not a UTF-8 text file") from None
    except OSError as e:
        raise HintError(f"{path}: cannot read it ({e.strerror or e})") from None
    try:
        value = json.loads(text)
    except ValueError as e:
        raise HintError(f"{path}: not JSON ({e})") from None
    return parse_hints(value, width, height, where=str(path))


def hints_json(hints: Iterable[Hint]) -> str:
    """Hints as the JSON a hint file holds."""
    return json.dumps({"points": [h.as_json() for h in hints]}, indent=1) + "\n"


def rasterize(hints: Sequence[Hint], width: int, height: int, size: int) -> Tensor:
    """Hints of a ``width × height`` photo as the network's hint channels at its working size.

    Each point covers a square patch (its ``size`` in the photo's pixels, scaled to the working
    size along each axis and at least one pixel; else :data:`DEFAULT_PATCH` working pixels)
    centred on it; where patches overlap, the later point wins.

    Returns:
        ``(1, 3, size, size)`` float32: a / 110 and b / 110 where hinted (0 elsewhere), and the
        mask, 1 where hinted.
    """
    out = torch.zeros(1, CHANNELS, size, size)
    sx, sy = size / width, size / height
    for hint in hints:
        side_x = DEFAULT_PATCH if hint.size is None else max(1.0, hint.size * sx)
        side_y = DEFAULT_PATCH if hint.size is None else max(1.0, hint.size * sy)
        left, right = _span((hint.x + 0.5) * sx, side_x, size)
        top, bottom = _span((hint.y + 0.5) * sy, side_y, size)
        out[0, 0, top:bottom, left:right] = hint.ab[0] / AB_NORM
        out[0, 1, top:bottom, left:right] = hint.ab[1] / AB_NORM
        out[0, 2, top:bottom, left:right] = 1.0
    return out


def _span(centre: float, side: float, limit: int) -> tuple[int, int]:
    """The pixels ``[start, stop)`` of a run of ``round(side)`` pixels centred on ``centre`` (in
    pixel units, where pixel i spans [i, i + 1)), within ``[0, limit)``."""
    count = max(1, round(side))
    start = math.floor(centre - count / 2 + 0.5)
    start = min(max(start, 0), limit - count) if count <= limit else 0
    return start, min(limit, start + count)
