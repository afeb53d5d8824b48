"""Remote-write mode's probe state: every state_interval, each probe with a live stream to
this collector has its probe-level families (exposition.FAMILIES rows of the PROBE source:
site state and causes, probe_up, courier state, group facts, path loss, health, ...) written
at this collector's time, with the same names and labels as /metrics and no label of the
collector's own.

Why no two collectors conflict on these series (deploy/README.md, section 3): only the
collector that holds a probe's stream writes its state, and a collector holds at most one
stream per identity, so a probe's series have one writer at a time; when the probe moves, the
next writer carries on the same series. A probe whose stream ended is written once more (its
probe_up 0, at once rather than a minute later), then by nobody: the rules read "no sample for
a minute" as down (remote_write.yml), which is also what a dead collector leaves behind.

The collector's own families (COLLECTOR source, and the sender's courierwatch_remote_write_*)
are not written: they describe one process, and only a scrape's `up` can say that the process
is gone, so they are scraped with it.

A period's state is current or worthless: while the previous one is still on its way to the
store (a slow store), the next is skipped rather than queued behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import Callable, Collection, Iterable

from courierwatch.collector.exposition import FAMILIES, PROBE, Family, ProbeView, probe_labels
from courierwatch.collector.remote.config import RemoteWriteConfig
from courierwatch.collector.remote.encode import encode_labels, timestamp_field, varint
from courierwatch.collector.remote.send import Closed, Delivery, RemoteWriter
from courierwatch.collector.state import Probe, ProbeKey, State
from courierwatch.common.results import courier_state

__all__ = ["PROBE_FAMILIES", "StateEncoder", "StateWriter"]

log = logging.getLogger(__name__)

PROBE_FAMILIES: tuple[Family, ...] = tuple(f for f in FAMILIES if f.source is PROBE)
# Series whose label bytes are kept, over all probes; beyond it the cache starts again.
MAX_CACHED_SERIES = 1_000_000
# Probes per request and per turn of the event loop: 1,500 samples, and up to 60 ms when each
# probe's site state must be assessed again (a batch came since the last period: 1 ms each).
CHUNK_PROBES = 50
_DOUBLE = struct.Struct("<d").pack


def _entry(labels: bytes, value: float, timestamp: bytes) -> bytes:
    """One WriteRequest.timeseries entry: a TimeSeries of `labels` and one sample."""
    sample = b"\x09" + _DOUBLE(value) + timestamp
    series = labels + b"\x12" + varint(len(sample)) + sample
    return b"\x0a" + varint(len(series)) + series


class StateEncoder:
    """Probe state as WriteRequest.timeseries entries, keeping each series' label bytes (the
    costly part: most of a period's series are the same as the last period's)."""

    def __init__(self, max_cached_series: int = MAX_CACHED_SERIES) -> None:
        self._max = max_cached_series
        self._labels: dict[tuple[ProbeKey, str, tuple[str, ...]], bytes] = {}

    def encode(
        self,
        state: State,
        at_ms: int,
        ended: Collection[ProbeKey] = (),
        probes: Iterable[Probe] | None = None,
    ) -> tuple[bytes, int]:
        """The probe-level samples of every probe (of `probes`, default all the state's) that
        has a stream open to this collector, and of those in `ended` (their stream ended
        since the last write), at `at_ms` (Unix milliseconds); and how many."""
        timestamp = timestamp_field(at_ms)
        cache = self._labels
        if len(cache) >= self._max:
            cache.clear()
        parts: list[bytes] = []
        for probe in state.probes() if probes is None else probes:
            if not state.is_up(probe) and probe.key not in ended:
                continue
            fresh = list(state.fresh(probe))
            view = ProbeView(state, probe, courier_state(fresh), fresh)
            row = tuple(zip(PROBE.labels, probe_labels(probe), strict=True))
            for family in PROBE_FAMILIES:
                for own, value in family.read(view):
                    key = (probe.key, family.name, own)
                    labels = cache.get(key)
                    if labels is None:
                        pairs = [*row, *zip(family.own, own, strict=True),
                                 ("__name__", family.name)]  # fmt: skip
                        labels = cache[key] = encode_labels(pairs)
                    parts.append(_entry(labels, float(value), timestamp))
        return b"".join(parts), len(parts)


class StateWriter:
    """Writes StateEncoder's state every `interval` seconds through a writer of its own (so that
    state never waits behind a backlog of replayed results, nor holds their queue up).
    Use as `async with StateWriter(state, config):`, or open() and close()."""

    def __init__(self, state: State, config: RemoteWriteConfig,
                 clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self._state, self._clock = state, clock
        self.interval = config.state_interval
        self._state_encoder = StateEncoder()
        # One request at a time: a period's chunks reach the store in order.
        self._writer = RemoteWriter(config.url, headers=config.headers,
                                    max_queued_samples=config.max_queued_samples,
                                    max_request_samples=config.max_request_samples,
                                    timeout=config.timeout)  # fmt: skip
        self._pending: list[Delivery] = []  # of the last period written
        self._live: set[ProbeKey] = set()  # the probes of the last write that were up
        self._writing = False
        self._task: asyncio.Task[None] | None = None
        self.skipped = 0  # periods skipped: the previous one was still on its way

    @classmethod
    def from_config(cls, state: State, config: RemoteWriteConfig | None) -> StateWriter | None:
        """The state writer a collector config asks for; None in scrape mode."""
        return None if config is None else cls(state, config)

    async def __aenter__(self) -> StateWriter:
        await self.open()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Start writing (on the running event loop): the first period at once."""
        await self._writer.open()
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        """Stop writing; the period on its way has a second to reach the store."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._writer.close(drain=1.0)
        for delivery in self._pending:  # retrieved: a period cut off by closing is no error
            if delivery.done() and not delivery.cancelled():
                delivery.exception()

    async def flushed(self) -> None:
        """Returns once the period on its way (if any) is stored or given up."""
        for delivery in self._pending:
            with contextlib.suppress(Closed):
                await asyncio.shield(delivery)

    async def write_once(self) -> list[Delivery] | None:
        """Queues the state as it is now, a request per chunk of probes (a fleet's state is
        more than a store takes in one); None (skipped) while the previous is unsent."""
        if self._writing or not all(delivery.done() for delivery in self._pending):
            self.skipped += 1
            return None
        self._writing = True
        try:
            state = self._state
            live = {probe.key for probe in state.probes() if state.is_up(probe)}
            ended, self._live = self._live - live, live
            at = int(self._clock() * 1000)
            probes = state.probes()
            self._pending = []
            for i in range(0, len(probes), CHUNK_PROBES):
                chunk = probes[i : i + CHUNK_PROBES]
                encoded = self._state_encoder.encode(state, at, ended, chunk)
                self._pending.append(await self._writer.write_encoded(*encoded))
                await asyncio.sleep(0)  # streams and scrapes go on between chunks
        finally:
            self._writing = False
        return self._pending

    async def _run(self) -> None:
        while True:  # until __aexit__ cancels it
            try:
                await self.write_once()
            except Closed:
                return
            await asyncio.sleep(self.interval)
