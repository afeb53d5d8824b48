"""The status page's snapshot (status.snapshot) kept current for its readers, so that no
request waits for one to be made of thousands of probes.

Making one costs some 15 us per probe whose fresh results did not change and 1.2 ms per probe
whose did (its site state is assessed again; measured in-process, 250 checks per probe): six
seconds at 5,000 probes, too long for a request and for the event loop in one go. So it is
made in the background, some 25 probes per turn of the loop, while someone reads it: again
every `fresh` seconds, or more seldom when making it takes long (at most `share` of the
loop's time). A request gets the latest one at once when it is no older than `fresh`, or no
older than `max_age` while the background keeps making them; else (the first request, or the
first after `watched` seconds with no reader) it waits for one, but no longer than `patience`:
then it gets the latest made however old (its generated_at says when it was taken), or, when
none was ever made, nothing (the page says the first one is being made). At 5,000 probes the
first one takes about 2 s (tests/bench/modes.py --fleet 5000), and no request may wait 1 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from courierwatch.collector import status
from courierwatch.collector.state import State


@dataclass(frozen=True, slots=True)
class Made:
    """One snapshot, its JSON, and when it was started (on the monotonic clock)."""

    at: float
    snapshot: dict[str, Any]
    body: bytes


class Snapshots:
    def __init__(
        self,
        state: State,
        *,
        fresh: float = 1.0,
        max_age: float = 60.0,
        watched: float = 60.0,
        share: float = 0.2,
        patience: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._state = state
        self.fresh, self.max_age, self.watched, self.share = fresh, max_age, watched, share
        self.patience = patience
        self._clock = clock
        self._views: status.Views = {}
        self._latest: Made | None = None
        self._making: asyncio.Future[Made] | None = None
        self._cost = 0.0  # how long the latest took
        self._asked = -math.inf
        self._asked_event = asyncio.Event()
        self._running = False  # run() is making them

    def _watched(self, now: float) -> bool:
        return now - self._asked <= self.watched

    async def latest(self) -> Made | None:
        """The latest snapshot, or a new one when that is too old; None when none is made
        within `patience` and none was before (see the module)."""
        now = self._clock()
        background = self._running and self._watched(now)
        self._asked = now
        self._asked_event.set()
        latest = self._latest
        if latest is not None:
            age = now - latest.at
            if age <= self.fresh or (background and age <= self.max_age):
                return latest
        try:
            async with asyncio.timeout(self.patience):
                return await self._make()  # shielded: the making goes on after a timeout
        except TimeoutError:
            return latest

    async def _make(self) -> Made:
        """A new snapshot; one at a time (a request meanwhile waits for the same one)."""
        if self._making is None or self._making.done():
            self._making = asyncio.ensure_future(self._steps())
        return await asyncio.shield(self._making)

    async def _steps(self) -> Made:
        start = self._clock()
        for made in status.snapshot_steps(self._state, self._views):
            if made is None:
                await asyncio.sleep(0)  # batches, health checks and scrapes in between
        assert made is not None  # the last step is the snapshot
        body = json.dumps(made, separators=(",", ":")).encode()
        self._cost = self._clock() - start
        self._latest = Made(start, made, body)
        return self._latest

    async def run(self) -> None:
        """Make snapshots while someone reads them (until cancelled)."""
        try:
            while True:
                if not self._watched(self._clock()):
                    self._running = False
                    self._asked_event.clear()
                    await self._asked_event.wait()
                self._running = True
                await self._make()
                await asyncio.sleep(max(self.fresh, self._cost / self.share - self._cost))
        finally:
            self._running = False

    async def context(self, _: object) -> AsyncIterator[None]:
        """For aiohttp's cleanup_ctx: run() while the application runs."""
        task = asyncio.create_task(self.run())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
