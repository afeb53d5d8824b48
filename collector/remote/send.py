"""The remote-write sender: a bounded queue of encoded samples, sent to the store in
WriteRequests; each write's delivery completes when the store has its samples.

"Acknowledged means stored": write() returns, for each probe batch, a future that completes
only when the store answered 2xx (None) or refused the request for good (its Rejection: a 4xx
other than 429, which the specification says a sender must not retry, or a 5xx that says the
samples are too old). Other 5xx, 429, timeouts and connection errors are retried with capped
exponential backoff and jitter (Retry-After honoured), for as long as it takes: a store that
is down for an hour loses nothing, the queue fills, write() waits (backpressure), and the
probes keep spooling until their batches are acknowledged.

Memory is bounded by max_queued_samples: samples count from write() until their request is
done, whether queued, in flight or being retried. A write that would go over waits, in order
of arrival; one larger than the whole bound goes alone when nothing else is held.

Batching needs no timer: a free sender takes everything queued, up to max_request_samples, so
requests are small when the store keeps up and large when it is slow.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import aiohttp
import cramjam

from courierwatch.collector.remote.config import RemoteWriteConfig
from courierwatch.collector.remote.encode import Encoder
from courierwatch.collector.remote.telemetry import Telemetry
from courierwatch.collector.state import CheckKey, ProbeKey
from courierwatch.common import __version__
from courierwatch.v1 import courierwatch_pb2 as pb

log = logging.getLogger(__name__)

# The specification's headers for version 1.0 (whose version header says 0.1.0).
HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
    "User-Agent": f"courierwatch/{__version__}",
}
# What stores say when they refuse samples, as a reason label (the text lowercased, with
# "-" and "_" read as spaces: Prometheus "out of bounds", Mimir "err-mimir-sample-out-of-order").
CAUSES = (
    ("out of bounds", "out_of_bounds"),
    ("out of order", "out_of_order"),
    ("too old", "too_old"),
    ("duplicate", "duplicate"),
)
LOG_EVERY = 60.0  # seconds between two log lines of the same reason


@dataclass(frozen=True, slots=True)
class Rejection:
    """A request the store refused for good: its status, and what the store said it was."""

    status: int
    reason: str  # one of CAUSES' labels, or "rejected"


def rejection(status: int, text: str) -> Rejection | None:
    """What an answer other than 2xx means: None to retry it (5xx, 429), else a Rejection.
    A 5xx that names a cause of the samples is one too: Prometheus before 2.49 answers
    500 "too old sample" for a sample beyond its out-of-order window (prometheus#13334),
    which no retry will change."""
    said = text.lower().replace("-", " ").replace("_", " ")
    cause = next((label for words, label in CAUSES if words in said), None)
    if status == 429 or (status >= 500 and cause is None):
        return None
    return Rejection(status, cause or "rejected")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Seconds before a retry: first, doubling up to most, each drawn from its upper half;
    at least what Retry-After says, up to most_retry_after."""

    first: float = 0.05
    most: float = 5.0
    most_retry_after: float = 300.0

    def delay(self, attempt: int, retry_after: float | None, draw: float) -> float:
        """`attempt`: retries so far; `draw`: uniform in [0, 1)."""
        ceiling = min(self.most, self.first * 2.0 ** min(attempt, 32))
        jittered = ceiling * (0.5 + draw / 2)
        if retry_after is None:
            return jittered
        return min(max(retry_after, jittered), self.most_retry_after)


def retry_after(value: str | None, now: float) -> float | None:
    """Retry-After as seconds from now: delay-seconds or an HTTP-date; None if absent or
    unreadable. `now`: Unix time."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    with contextlib.suppress(TypeError, ValueError):
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - now)
    return None


class Closed(Exception):
    """The writer was closed before the store had these samples: do not acknowledge them."""


Delivery = asyncio.Future[Rejection | None]  # what became of one write's samples: None, stored


@dataclass(slots=True)
class _Chunk:
    data: bytes  # WriteRequest.timeseries entries
    samples: int
    done: Delivery


class RemoteWriter:
    """Use as `async with RemoteWriter(url) as writer:`; then, per probe batch,
    `delivery = await writer.write(site, probe_id, results, keys)` (returns once the batch
    is queued: it waits while the queue is full), and `await delivery` before acknowledging."""

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        max_queued_samples: int = 500_000,
        max_request_samples: int = 50_000,
        concurrency: int = 1,
        timeout: float = 30.0,
        backoff: Backoff = Backoff(),
        encoder: Encoder | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        draw: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`headers`: sent besides the specification's (Authorization, X-Scope-OrgID, ...).
        `concurrency`: requests in flight at once; above 1 a series' samples may arrive out
        of order (the stores accept that within their out-of-order window)."""
        self._url = url
        self._headers = {**HEADERS, **(headers or {})}
        self._max_queued = max_queued_samples
        self._max_request = max_request_samples
        self._concurrency = concurrency
        self._timeout = timeout
        self._backoff = backoff
        self.encoder = encoder or Encoder()  # write() encodes with it; so may a caller
        self._sleep, self._draw, self._clock = sleep, draw, clock
        self.telemetry = Telemetry(max_queued_samples)
        self._queue: deque[_Chunk] = deque()
        self._held = 0  # samples written and not yet done: queued, in flight or retried
        self._room = asyncio.Condition()  # notified when samples are done
        self._admission = asyncio.Lock()  # one write waits for room at a time: in order
        self._queued = asyncio.Event()  # set while the queue is not empty
        self._logged: dict[str, float] = {}  # reason: when it was last logged
        self._session: aiohttp.ClientSession | None = None
        self._senders: list[asyncio.Task[None]] = []
        self._closed = False

    @classmethod
    def from_config(cls, config: RemoteWriteConfig | None) -> RemoteWriter | None:
        """The writer a collector config asks for; None in scrape mode."""
        if config is None:
            return None
        return cls(config.url, headers=config.headers,
                   max_queued_samples=config.max_queued_samples,
                   max_request_samples=config.max_request_samples,
                   concurrency=config.concurrency, timeout=config.timeout)  # fmt: skip

    async def __aenter__(self) -> RemoteWriter:
        await self.open()
        return self

    async def open(self) -> None:
        """Start sending (on the running event loop); close() stops."""
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._concurrency),
            timeout=aiohttp.ClientTimeout(total=self._timeout),
        )
        self._senders = [asyncio.create_task(self._send_forever())
                         for _ in range(self._concurrency)]  # fmt: skip

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self, drain: float = 5.0) -> None:
        """Stop taking writes; let the queue drain for up to `drain` seconds; then stop.
        Deliveries not done by then raise Closed. Closing again does nothing."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain), self._room:
                await self._room.wait_for(lambda: self._held == 0)
        for task in self._senders:
            task.cancel()
        await asyncio.gather(*self._senders, return_exceptions=True)
        for chunk in self._queue:
            _fail(chunk.done)
        self._queue.clear()
        if self._session is not None:
            await self._session.close()

    async def write(
        self,
        site: str,
        probe_id: str,
        results: Sequence[pb.Result],
        keys: Sequence[CheckKey] | None = None,
    ) -> Delivery:
        """Queues the samples of `results` (check_key() of each in `keys`, when the caller
        has them); returns their delivery once queued, waiting while the queue is full."""
        return await self.write_encoded(*self.encoder.encode(site, probe_id, results, keys))

    def forget(self, probes: Iterable[ProbeKey]) -> None:
        """The state forgot these probes (site, probe id): so does the encoder."""
        self.encoder.forget(probes)

    async def write_encoded(self, data: bytes, samples: int) -> Delivery:
        """write() of samples already encoded (WriteRequest field 1 entries, as Encoder
        makes them): for what is not results, such as the probes' state."""
        if self._closed:
            raise Closed("the remote writer is closed")
        done: Delivery = asyncio.get_running_loop().create_future()
        if not samples:
            done.set_result(None)
            return done
        async with self._admission:
            async with self._room:
                await self._room.wait_for(
                    lambda: self._held == 0 or self._held + samples <= self._max_queued
                )
            self._held += samples
        self._queue.append(_Chunk(data, samples, done))
        self.telemetry.queued = self._held
        self._queued.set()
        return done

    async def _send_forever(self) -> None:
        while True:  # until close() cancels it
            await self._queued.wait()
            batch = self._take()
            if not batch:
                continue
            samples = sum(chunk.samples for chunk in batch)
            try:
                outcome = await self._send(b"".join(chunk.data for chunk in batch), samples)
            except asyncio.CancelledError:
                for chunk in batch:
                    _fail(chunk.done)
                raise
            for chunk in batch:
                if not chunk.done.done():  # a waiter may have given up on it
                    chunk.done.set_result(outcome)
            async with self._room:
                self._held -= samples
                self.telemetry.queued = self._held
                self._room.notify_all()

    def _take(self) -> list[_Chunk]:
        """The chunks of the next request: at least one, at most max_request_samples."""
        batch: list[_Chunk] = []
        samples = 0
        queue = self._queue
        while queue and (not batch or samples + queue[0].samples <= self._max_request):
            chunk = queue.popleft()
            batch.append(chunk)
            samples += chunk.samples
        if not queue:
            self._queued.clear()
        return batch

    async def _send(self, request: bytes, samples: int) -> Rejection | None:
        """POSTs one WriteRequest until the store has it (None) or refuses it for good."""
        assert self._session is not None, "use the writer as an async context manager"
        body = bytes(cramjam.snappy.compress_raw(request))
        attempt = 0
        while True:  # as long as the store keeps failing, bounded by close()
            started = self._clock()
            try:
                async with self._session.post(
                    self._url, data=body, headers=self._headers
                ) as response:
                    status = response.status
                    text = await response.text(errors="replace") if status >= 300 else ""
                    wait = retry_after(response.headers.get("Retry-After"), time.time())
            except (aiohttp.ClientError, TimeoutError) as error:
                reason = "timeout" if isinstance(error, TimeoutError) else "connection"
                detail, wait = str(error) or type(error).__name__, None
            else:
                self.telemetry.observe(self._clock() - started)
                if 200 <= status < 300:
                    self.telemetry.sent += samples
                    return None
                refused = rejection(status, text)
                if refused is not None:
                    self.telemetry.reject(refused, samples)
                    self._log(f"{status} {refused.reason}", logging.ERROR,
                              "the store refused %d samples for good (HTTP %d): %s",
                              samples, status, text.strip()[:300])  # fmt: skip
                    return refused
                reason, detail = str(status), text.strip()[:300]
            self.telemetry.retries[reason] += 1
            self._log(reason, logging.WARNING, "remote write failed (%s: %s); retrying",
                      reason, detail)  # fmt: skip
            await self._sleep(self._backoff.delay(attempt, wait, self._draw()))
            attempt += 1

    def _log(self, reason: str, level: int, message: str, *args: object) -> None:
        """Logs once per reason per LOG_EVERY seconds."""
        now = self._clock()
        last = self._logged.get(reason)
        if last is None or now - last >= LOG_EVERY:
            self._logged[reason] = now
            log.log(level, message, *args)


def _fail(done: Delivery) -> None:
    if not done.done():
        done.set_exception(Closed("the remote writer closed before the store had these samples"))
