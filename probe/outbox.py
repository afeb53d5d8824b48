"""Results waiting for the collector's acknowledgement, numbered in the order they were made.

Held in memory and bounded: when full, the oldest result is dropped and counted.
Sequence numbers start from the wall clock in microseconds, so a restarted probe numbers
above anything its previous run sent and the collector's dedupe never swallows new results.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from courierwatch.v1 import courierwatch_pb2 as pb


class Outbox:
    def __init__(self, capacity: int = 100_000) -> None:
        self._pending: deque[pb.Result] = deque()
        self._capacity = capacity
        self._next_seq = time.time_ns() // 1000
        self._added = asyncio.Event()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._pending)

    def put(self, result: pb.Result) -> None:
        result.seq = self._next_seq
        self._next_seq += 1
        self._pending.append(result)
        if len(self._pending) > self._capacity:
            self._pending.popleft()
            self.dropped += 1
        self._added.set()

    def after(self, seq: int, limit: int) -> list[pb.Result]:
        """Up to `limit` pending results numbered above `seq`, oldest first."""
        batch: list[pb.Result] = []
        for result in self._pending:
            if result.seq > seq:
                batch.append(result)
                if len(batch) == limit:
                    break
        return batch

    def ack(self, through_seq: int) -> None:
        while self._pending and self._pending[0].seq <= through_seq:
            self._pending.popleft()

    async def wait_after(self, seq: int) -> None:
        """Return once there is a pending result numbered above `seq`."""
        while not (self._pending and self._pending[-1].seq > seq):
            self._added.clear()
            await self._added.wait()
