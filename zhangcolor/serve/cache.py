"""The server's memory of uploads: each one's network output with the photo's L, so that a new T
only re-decodes (the annealed mean, paper section 2.3, is cheap; the network is not), and new
colour points only run the network again on the L it has.

The cache is bounded in bytes (least recently used first out) and in time (a time-to-live after
the last use). What an upload gathers while it is used, previews of its L and the outputs of
users' colour points, counts against it too, but is bounded per upload and never pushes another
upload out: over the budget, the upload's own oldest extras go first.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image
from torch import Tensor

from zhangcolor.colorize import resize_lightness

#: Previews (L and alpha scaled down) kept per upload: the page asks for one side at a time, and
#: a client that asks for many sides must not grow an upload without bound.
MAX_VIEWS = 2
#: Network outputs of users' colour points kept per upload: the last few sets of points, so that
#: a T change or an undo finds its output again.
MAX_GUIDED = 4

View = tuple[Tensor, np.ndarray | None]


@dataclass
class Upload:
    """What a T change or new colour points need of an upload: the network output without
    points, the photo's L (full size and at the working size) and alpha, and the extras gathered
    while it is used (see :class:`OutputCache`)."""

    output: Tensor  # (1, Q, h, w) logits or (1, 2, h, w) ab, float32, without colour points
    lightness: Tensor  # (1, 1, H, W) L in [0, 100]
    small: Tensor  # (1, 1, s, s) L at the working size: what the network sees
    alpha: np.ndarray | None  # (H, W) opacity in [0, 1]
    views: OrderedDict[int, View] = field(default_factory=OrderedDict)  # by max_side
    guided: OrderedDict[str, Tensor] = field(default_factory=OrderedDict)  # by points' key

    @property
    def size(self) -> tuple[int, int]:
        """The photo's (width, height)."""
        height, width = self.lightness.shape[-2:]
        return width, height

    @property
    def nbytes(self) -> int:
        arrays = [self.output, self.lightness, self.small, self.alpha, *self.guided.values()]
        for light, alpha in self.views.values():
            arrays += [light, alpha]
        return sum(_nbytes(a) for a in arrays if a is not None)

    def scaled(self, max_side: int | None) -> View:
        """L and alpha scaled down (antialiased) so the longer side is at most ``max_side``;
        the full-size ones when they already fit (or ``max_side`` is None)."""
        width, height = self.size
        if max_side is None or max(height, width) <= max_side:
            return self.lightness, self.alpha
        scale = max_side / max(height, width)
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        light = resize_lightness(self.lightness, size)
        alpha = None
        if self.alpha is not None:
            small = Image.fromarray(self.alpha).resize(size[::-1], Image.Resampling.BILINEAR)
            alpha = np.asarray(small)
        return light, alpha

    def needs_view(self, max_side: int | None) -> bool:
        """Whether a result at ``max_side`` must first scale L down (and no view is kept)."""
        return max_side is not None and max(self.size) > max_side and max_side not in self.views


def _nbytes(array: Tensor | np.ndarray) -> int:
    return array.nbytes if isinstance(array, np.ndarray) else array.numel() * array.element_size()


class OutputCache:
    """Uploads by id, least recently used first out beyond ``max_bytes``, and forgotten
    ``ttl_s`` seconds after their last use; with each upload's previews and colour-point
    outputs, which only ever displace that upload's own. Thread-safe."""

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
            self._expire()
            while self._items and self._bytes() > self.max_bytes:
                self._items.popitem(last=False)

    def view(self, key: str, upload: Upload, max_side: int | None) -> View:
        """``upload``'s L and alpha at ``max_side`` (see :meth:`Upload.scaled`), kept for the
        next request when the upload's budget allows."""
        with self._lock:
            if max_side in upload.views:
                upload.views.move_to_end(max_side)
                return upload.views[max_side]
        view = upload.scaled(max_side)
        if view[0] is not upload.lightness:
            self._keep(key, upload, upload.views, max_side, view, MAX_VIEWS)
        return view

    def guided(self, upload: Upload, points_key: str) -> Tensor | None:
        """The network output of ``upload`` for the colour points ``points_key``, if kept."""
        with self._lock:
            output = upload.guided.get(points_key)
            if output is not None:
                upload.guided.move_to_end(points_key)
            return output

    def keep_guided(self, key: str, upload: Upload, points_key: str, output: Tensor) -> None:
        self._keep(key, upload, upload.guided, points_key, output, MAX_GUIDED)

    def stats(self) -> dict[str, int]:
        with self._lock:
            self._expire()
            return {"uploads": len(self._items), "bytes": self._bytes()}

    def _keep(self, key: str, upload: Upload, extras: OrderedDict, name: Any, value, limit: int):
        """Add an extra to ``upload`` (at most ``limit`` of its kind, oldest out); over the
        budget, the upload's own extras go, oldest previews first, never another upload."""
        with self._lock:
            extras[name] = value
            extras.move_to_end(name)
            while len(extras) > limit:
                extras.popitem(last=False)
            if key not in self._items:  # not cached (too large, or gone): nothing to count
                return
            for kind in (upload.views, upload.guided):
                while kind and self._bytes() > self.max_bytes:
                    kind.popitem(last=False)

    def _bytes(self) -> int:
        return sum(upload.nbytes for upload, _ in self._items.values())

    def _expire(self) -> None:
        now = self.clock()
        for key in [k for k, (_, used) in self._items.items() if now - used > self.ttl_s]:
            del self._items[key]


class SingleFlight:
    """Work done once for callers that ask for the same key at the same time: the first computes,
    the others wait for its result (or its exception). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[Hashable, Future] = {}

    def run(self, key: Hashable, compute: Callable[[], Any]) -> tuple[Any, bool]:
        """``compute()``'s result, and whether this caller computed it."""
        with self._lock:
            future = self._running.get(key)
            owner = future is None
            if owner:
                future = self._running[key] = Future()
        if not owner:
            return future.result(), False
        try:
            result = compute()
            future.set_result(result)
            return result, True
        except BaseException as e:
            future.set_exception(e)
            raise
        finally:
            with self._lock:
                del self._running[key]
