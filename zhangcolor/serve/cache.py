"""The server's memory of uploads: each one's network output with the photo's L, so that a new T
only re-decodes (the annealed mean, paper section 2.3, is cheap; the network is not).

The cache is bounded in bytes (least recently used first out) and in time (a time-to-live after
the last use); the views of L that previews scale down count against it too.
"""

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from torch import Tensor

from zhangcolor.colorize import resize_lightness


@dataclass
class Upload:
    """What a T change needs of an upload: the network output and the photo's L (and alpha)."""

    output: Tensor  # (1, Q, h, w) logits or (1, 2, h, w) ab, float32
    lightness: Tensor  # (1, 1, H, W) L in [0, 100]
    alpha: np.ndarray | None  # (H, W) opacity in [0, 1]
    views: dict[int, tuple[Tensor, np.ndarray | None]] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        arrays = [self.output, self.lightness, self.alpha]
        for light, alpha in self.views.values():
            arrays += [light, alpha]
        return sum(_nbytes(a) for a in arrays if a is not None)

    def view(self, max_side: int | None) -> tuple[Tensor, np.ndarray | None]:
        """L and alpha scaled down (antialiased) so the longer side is at most ``max_side``."""
        h, w = self.lightness.shape[-2:]
        if max_side is None or max(h, w) <= max_side:
            return self.lightness, self.alpha
        if max_side not in self.views:
            scale = max_side / max(h, w)
            size = (max(1, round(h * scale)), max(1, round(w * scale)))
            light = resize_lightness(self.lightness, size)
            alpha = None
            if self.alpha is not None:
                small = Image.fromarray(self.alpha).resize(size[::-1], Image.Resampling.BILINEAR)
                alpha = np.asarray(small)
            self.views[max_side] = (light, alpha)
        return self.views[max_side]


def _nbytes(array: Tensor | np.ndarray) -> int:
    return array.nbytes if isinstance(array, np.ndarray) else array.numel() * array.element_size()


class OutputCache:
    """Uploads by id, least recently used first out beyond ``max_bytes``, and forgotten
    ``ttl_s`` seconds after their last use. Thread-safe."""

    def __init__(self, max_bytes: int, ttl_s: float, clock: Callable[[], float] = time.monotonic):
        self.max_bytes, self.ttl_s, self.clock = max_bytes, ttl_s, clock
        self._items: OrderedDict[str, tuple[Upload, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Upload | None:
        with self._lock:
            self._expire()
            if key not in self._items:
                return None
            upload, _ = self._items.pop(key)
            self._items[key] = (upload, self.clock())
            return upload

    def put(self, key: str, upload: Upload) -> None:
        """Keep ``upload`` (unless it alone exceeds the budget), evicting the oldest to fit."""
        with self._lock:
            self._items.pop(key, None)
            if upload.nbytes <= self.max_bytes:
                self._items[key] = (upload, self.clock())
            self._shrink()

    def settle(self) -> None:
        """Re-count after an upload grew (a new view), evicting the oldest to fit."""
        with self._lock:
            self._shrink()

    def stats(self) -> dict[str, int]:
        with self._lock:
            self._expire()
            return {"uploads": len(self._items), "bytes": self._bytes()}

    def _bytes(self) -> int:
        return sum(upload.nbytes for upload, _ in self._items.values())

    def _expire(self) -> None:
        now = self.clock()
        for key in [k for k, (_, used) in self._items.items() if now - used > self.ttl_s]:
            del self._items[key]

    def _shrink(self) -> None:
        self._expire()
        while self._items and self._bytes() > self.max_bytes:
            self._items.popitem(last=False)
