"""Batches take turns on the event loop, so that requests are served between them.

asyncio runs every callback that is ready when a turn of its loop begins before it looks at
the sockets again. With thousands of streams, hundreds of batches are ready at once when the
collector is busy; applied and encoded in one turn (some 10 ms each at 250 results), that turn
lasted seconds, and an HTTP request, which needs a handful of turns, waited for as many: at
5,000 probes x 250 checks /healthz took up to 1.7 s (tests/bench/modes.py --fleet 5000). With
one batch per turn a request waits for a batch or two per step instead. The work is the same,
so is the throughput; a batch waits for its turn in the order it came. What waits is at
most one message per stream (a stream reads its next only after its turn), as before.

How many batches wait, and how long they waited in all, are on /metrics: the collector's
saturation signal (a queue that stays long means the core is full, before requests slow).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class Turns:
    def __init__(self) -> None:
        self._lock = asyncio.Lock()  # fair: the waiters go in the order they came
        self.waiting = 0  # batches waiting for their turn now
        self.waited = 0.0  # seconds that batches waited for their turns, in all

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Its body runs alone in its turn of the loop (it must not await)."""
        clock = asyncio.get_running_loop().time
        asked = clock()
        self.waiting += 1
        try:
            await self._lock.acquire()
        finally:
            self.waiting -= 1
        self.waited += clock() - asked
        try:
            yield
            # Held into the next turn: the next batch starts in the one after, once what
            # became ready meanwhile (a request's next step) has run.
            await asyncio.sleep(0)
        finally:
            self._lock.release()
