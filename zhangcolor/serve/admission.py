"""Admission: which requests are worked on, in what order, and which are turned away.

Every request is priced before it takes a place: the megapixels it will decode, colorize and
encode, a network run counting as :data:`~zhangcolor.serve.service.NETWORK_MP`. The price sets

- its lane: cheap requests (the page's previews, photos of a few megapixels, colour points) and
  the rest each have ``max_concurrent`` work threads and ``max_concurrent + max_queue`` places,
  so that a preview never waits behind another client's full-size work;
- its client's budget: one client address may have at most ``max_client_mp`` of work in flight
  (a 429 with Retry-After beyond; a client with nothing in flight is always taken), so that no
  client holds every place with re-decodes of one huge upload;
- its turn: within a lane, the next request to run is the one whose client has been served
  least (start-time fair queueing, by price), so that a client that loops gets its share of
  the threads, not all of them, and another client's request waits at most for the ones
  already running.

Only a request whose body has fully arrived takes a place; one turned away gets a 503 (no place
left in its lane) or a 429 (its client's budget), each with a Retry-After.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from zhangcolor.options import ServeConfig
from zhangcolor.serve.errors import busy, over_budget

#: The most megapixels of work a request of the cheap lane costs: a preview of a cached upload
#: (up to 4 MP), a colour-point change, or a photo of up to about 2 MP uploaded for a preview.
CHEAP_MP = 4.0
#: A lane forgets the fair-queueing tags of clients long gone once it holds this many.
_MAX_TAGS = 1024


@dataclass
class Reprice:
    """What a request's first step returns when it finds the request dearer than its lane
    allows (an upload priced from its header): run ``call`` at ``price``, in its own lane."""

    price: float
    call: Callable[[], Any]


class Lane:
    """Work threads with places for requests, turned in fair order by client."""

    def __init__(self, name: str, threads: int, places: int):
        self.name, self.threads, self.places = name, threads, places
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix=f"zhangcolor-{name}")
        self.in_flight = 0  # admitted: waiting for a thread, or worked on
        self.running = 0
        self.mean_s = 1.0  # moving average of the time a request holds its place
        self.s_per_mp = 0.2  # moving average of the work's seconds per megapixel
        self._waiting: list[tuple[float, int, asyncio.Future]] = []  # by start tag, then order
        self._order = itertools.count()
        self._virtual = 0.0  # the start tag of the request that began last
        self._finish: dict[str, float] = {}  # each client's last finish tag

    @property
    def full(self) -> bool:
        return self.in_flight >= self.places

    def retry_after_s(self) -> int:
        ahead = max(1, self.in_flight - self.threads + 1)
        return min(60, max(1, math.ceil(self.mean_s * ahead / self.threads)))

    async def turn(self, client: str, price: float) -> None:
        """Wait until this request may run: at once while a thread is free and nobody waits,
        else when it has the smallest start tag (its client's last finish, or now)."""
        start = max(self._virtual, self._finish.get(client, 0.0))
        self._finish[client] = start + price
        if self.running < self.threads and not self._waiting:
            self._begin(start)
            return
        future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (start, next(self._order), future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():  # its turn came as it was cancelled
                self.release()
            raise

    def release(self) -> None:
        """A request ran: the waiting one with the smallest start tag begins."""
        self.running -= 1
        while self._waiting and self.running < self.threads:
            start, _, future = heapq.heappop(self._waiting)
            if not future.done():  # a cancelled wait is skipped
                self._begin(start)
                future.set_result(None)
        if len(self._finish) > _MAX_TAGS:
            self._finish = {c: t for c, t in self._finish.items() if t > self._virtual}

    def _begin(self, start: float) -> None:
        self.running += 1
        self._virtual = max(self._virtual, start)

    def done(self, held_s: float, run_s: float, price: float) -> None:
        self.in_flight -= 1
        self.mean_s += 0.2 * (held_s - self.mean_s)
        if price >= 0.1:
            self.s_per_mp += 0.2 * (run_s / price - self.s_per_mp)

    def health(self) -> dict[str, int]:
        return {"in_flight": self.in_flight, "running": self.running, "limit": self.places}


class WorkQueue:
    """The lanes, and the work each client address has in flight."""

    def __init__(self, config: ServeConfig):
        places = config.max_concurrent + config.max_queue
        self.lanes = {name: Lane(name, config.max_concurrent, places) for name in ("cheap", "main")}
        self.client_mp = config.max_client_mp
        self._clients: dict[str, float] = {}  # megapixels in flight, by client address

    @staticmethod
    def cheap(price: float) -> bool:
        return price <= CHEAP_MP

    @property
    def in_flight(self) -> int:
        return sum(lane.in_flight for lane in self.lanes.values())

    @property
    def full(self) -> bool:
        """Whether a request of some lane would be turned away now."""
        return any(lane.full for lane in self.lanes.values())

    def retry_after_s(self) -> int:
        return max(lane.retry_after_s() for lane in self.lanes.values() if lane.full)

    async def run(self, client: str, price: float, call: Callable[[], Any]) -> Any:
        """``call()`` on a work thread of the lane of ``price``, when its turn comes, counted
        against ``client``'s budget meanwhile; a :class:`Reprice` it returns runs next, at
        its own price."""
        lane = self.lanes["cheap" if self.cheap(price) else "main"]
        self._admit(client, price, lane)
        arrived = time.monotonic()
        began = None
        try:
            await lane.turn(client, price)
            began = time.monotonic()
            try:
                result = await asyncio.get_running_loop().run_in_executor(lane.executor, call)
            finally:
                lane.release()
        finally:
            now = time.monotonic()
            lane.done(now - arrived, now - (began or now), price)
            self._leave(client, price)
        if isinstance(result, Reprice):
            return await self.run(client, result.price, result.call)
        return result

    def _admit(self, client: str, price: float, lane: Lane) -> None:
        if lane.full:
            raise busy(
                f"the server is busy ({lane.in_flight} requests in flight); retry in a moment",
                lane.retry_after_s(),
            )
        held = self._clients.get(client, 0.0)
        if held > 0 and held + price > self.client_mp:
            retry = min(60, max(1, math.ceil(held * lane.s_per_mp)))
            raise over_budget(
                f"this client already has {held:,.1f} megapixels of work in flight (at most "
                f"{self.client_mp:g}); retry when it is done",
                retry,
            )
        self._clients[client] = held + price
        lane.in_flight += 1

    def _leave(self, client: str, price: float) -> None:
        held = self._clients.get(client, 0.0) - price
        if held > 1e-9:
            self._clients[client] = held
        else:
            self._clients.pop(client, None)

    def health(self) -> dict[str, Any]:
        return {
            "clients": len(self._clients),
            "lanes": {name: lane.health() for name, lane in self.lanes.items()},
        }

    def close(self) -> None:
        """Stop the lanes' threads (for an owner done with the queue; an app's end with it)."""
        for lane in self.lanes.values():
            lane.executor.shutdown(wait=False, cancel_futures=True)
