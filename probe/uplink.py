"""The gRPC client: streams the spool to a collector and deletes what it acknowledges.

One long-lived Report stream: Hello first, then batches as results reach the spool's disk,
sized to the limits the collector announces in its Welcome, and a Health report every few
seconds. On any failure (including a collector that stops answering) it reconnects with
capped exponential backoff and full jitter, trying the configured collectors in order and
going back to the first after every good session (but on to the next after one whose
collector fell silent: stuck, it would only hold us again), and resends everything not yet
acknowledged, starting after what the collector says it applied (it dedupes too).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc

from courierwatch.common import bounds
from courierwatch.probe.config import ACK_TIMEOUT
from courierwatch.probe.spool import Spool
from courierwatch.v1 import courierwatch_pb2 as pb
from courierwatch.v1 import courierwatch_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

# Keepalive pings notice a dead path (a NAT that forgot us, a pulled cable) within a minute.
CHANNEL_OPTIONS = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
)
# A collector that takes longer than this to welcome us is treated as gone; so is one that
# leaves a batch unacknowledged for the Hello's ack_timeout_seconds with nothing heard (a
# stuck process can answer keepalives and still hold the probe for ever). One that is slow
# but working says so with a Busy, which restarts that clock.
WELCOME_SECONDS = 15.0
# Stay this far under the collector's message limit: the envelope adds a few bytes.
_HEADROOM = 0.9


@dataclass(slots=True)
class UplinkCounts:
    """What the uplinks of one probe process met, across reconnects and reloads."""

    silent: int = 0  # sessions given up because the collector fell silent


class Uplink:
    def __init__(
        self,
        collectors: Sequence[str],
        spool: Spool,
        hello: pb.Hello,
        credentials: grpc.ChannelCredentials | None,
        health: Callable[[], pb.Health],
        *,
        batch_size: int = 500,
        health_interval: float = 5.0,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        rng: random.Random | None = None,
        counts: UplinkCounts | None = None,
    ) -> None:
        self._collectors = tuple(collectors)
        self.counts = counts or UplinkCounts()
        self._spool = spool
        self._hello = hello
        self._credentials = credentials  # None: plaintext, the explicit insecure mode
        self._health = health
        self._batch_size = batch_size
        self._health_interval = health_interval
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._rng = rng or random.Random()
        self.connected = asyncio.Event()
        self._acked_through = 0
        self._settled = asyncio.Event()  # an ack came, or unsendable rows were passed over
        self._sent_through = 0
        # Loop time of the last acknowledgement or Busy (or of the first send after one).
        self._progress_at = 0.0
        self._ack_timeout = hello.ack_timeout_seconds or ACK_TIMEOUT
        self._max_bytes = 0  # 0: no limit announced
        self._max_string = 0  # bytes of one string field; 0: no limit announced

    async def run(self) -> None:
        """Keep a stream to some collector open until cancelled."""
        failures = 0
        index = 0
        while True:
            address = self._collectors[index]
            silent = False
            try:
                await self._session(address)
            except Silent as error:
                silent = True
                self.counts.silent += 1
                log.warning("collector %s: %s", address, error)
            except Exception as error:  # any failure ends this session, never the probe
                log.warning("collector %s: %s", address, _describe(error))
            if silent:  # alive to TCP but not to us: the others first, it may stay stuck
                self.connected.clear()
                failures, index = 0, (index + 1) % len(self._collectors)
            elif self.connected.is_set():  # it worked for a while: start over from the first
                self.connected.clear()
                failures, index = 0, 0
            else:
                failures += 1
                index = (index + 1) % len(self._collectors)
            ceiling = min(self._backoff_cap, self._backoff_base * 2 ** min(failures, 16))
            await asyncio.sleep(self._rng.uniform(0, ceiling))

    def _channel(self, address: str) -> grpc.aio.Channel:
        if self._credentials is None:
            return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        return grpc.aio.secure_channel(address, self._credentials, options=CHANNEL_OPTIONS)

    async def _session(self, address: str) -> None:
        async with self._channel(address) as channel:
            call = pb_grpc.CollectorStub(channel).Report()
            async with asyncio.timeout(WELCOME_SECONDS):  # connecting included
                await call.write(pb.ProbeMessage(hello=self._hello))
                message = await call.read()
            if not isinstance(message, pb.CollectorMessage) or not message.HasField("welcome"):
                raise OSError("the collector did not answer Hello with Welcome")
            welcome = message.welcome
            applied = welcome.applied_through_seq
            if applied > self._spool.durable_through:
                log.warning(
                    "the collector has applied results up to #%d of this probe, more than this "
                    "spool (%s) ever made: a new or replaced spool; renumbering it above that",
                    applied, self._spool.path,
                )  # fmt: skip
                await self._spool.rebase(applied)
            else:
                await self._note_ack(applied)
            batch_size = min(self._batch_size, welcome.max_batch or self._batch_size)
            self._max_bytes = int(welcome.max_message_bytes * _HEADROOM)
            self._max_string = welcome.max_string_bytes  # 0: an older collector, no limit
            log.info("streaming to collector %s", address)
            self.connected.set()
            self._sent_through = applied
            # Either half failing ends the session; neither may die unnoticed.
            halves = {
                asyncio.create_task(self._send(call, applied, batch_size)),
                asyncio.create_task(self._receive_acks(call)),
                asyncio.create_task(self._watch_acks()),
            }
            try:
                done, _ = await asyncio.wait(halves, return_when=asyncio.FIRST_EXCEPTION)
            finally:
                for task in halves:
                    task.cancel()
                await asyncio.gather(*halves, return_exceptions=True)
            for task in done:
                task.result()

    async def _send(self, call: grpc.aio.StreamStreamCall, applied: int, batch_size: int) -> None:
        sent = applied
        loop = asyncio.get_running_loop()
        health_due = loop.time()
        while True:
            if loop.time() >= health_due:
                await call.write(pb.ProbeMessage(health=self._health()))
                health_due = loop.time() + self._health_interval
            try:
                async with asyncio.timeout(max(0.0, health_due - loop.time())):
                    await self._spool.wait_after(sent)
            except TimeoutError:
                continue
            through = self._spool.durable_through
            batch = await self._spool.after(sent, batch_size)
            if self._max_string:
                for result in batch:  # cut rather than be refused (courierwatch.common.bounds)
                    bounds.bound(result, self._max_string)
            if not batch:  # what was there went meanwhile: dropped by a bound, or quarantined
                sent = through
                self._settled.set()
                continue
            if self._max_bytes and (size := _encoded_size(batch[0])) > self._max_bytes:
                # It would be refused on every stream, holding back everything behind it.
                reason = f"{size} bytes, more than the collector takes ({self._max_bytes})"
                await self._spool.quarantine(batch[0].seq, reason)
                sent = batch[0].seq
                self._settled.set()
                continue
            batch = self._fit(batch)
            await call.write(pb.ProbeMessage(batch=pb.ResultBatch(results=batch)))
            if self._sent_through <= self._acked_through:  # the ack clock starts now
                self._progress_at = asyncio.get_running_loop().time()
            sent = self._sent_through = batch[-1].seq

    def _fit(self, batch: list[pb.Result]) -> list[pb.Result]:
        """The longest prefix of `batch` whose message fits the collector's size limit (at
        least the first result, which the caller has checked fits alone)."""
        if not self._max_bytes:
            return batch
        size = 0
        for count, result in enumerate(batch):
            size += _encoded_size(result)
            if size > self._max_bytes and count:
                return batch[:count]
        return batch

    async def _receive_acks(self, call: grpc.aio.StreamStreamCall) -> None:
        while True:
            message = await call.read()
            if message is grpc.aio.EOF:
                raise OSError("the collector closed the stream")
            if message.HasField("ack"):
                await self._note_ack(message.ack.through_seq)
            elif message.HasField("busy"):  # it holds what we sent, and works on it
                self._progress_at = asyncio.get_running_loop().time()

    async def _watch_acks(self) -> None:
        """End the session when a sent batch goes unacknowledged for the ack timeout with
        nothing heard from the collector."""
        loop = asyncio.get_running_loop()
        timeout = self._ack_timeout
        while True:
            await asyncio.sleep(timeout / 4)
            waiting = self._sent_through > self._acked_through
            if waiting and loop.time() - self._progress_at > timeout:
                raise Silent(f"no acknowledgement for {timeout:g} s, nor a word of being busy")

    async def _note_ack(self, through_seq: int) -> None:
        await self._spool.ack(through_seq)
        self._progress_at = asyncio.get_running_loop().time()
        self._acked_through = max(self._acked_through, through_seq)
        self._settled.set()

    async def drain(self, through_seq: int, seconds: float) -> bool:
        """Wait (at most `seconds`) until the collector acknowledged through `through_seq`, or
        what was not acknowledged is gone from the spool (quarantined or dropped) and so never
        will be."""
        try:
            async with asyncio.timeout(seconds):
                while self._acked_through < through_seq and self._spool.holds(through_seq):
                    self._settled.clear()
                    await self._settled.wait()
        except TimeoutError:
            return False
        return True


class Silent(OSError):
    """The collector left a batch unacknowledged for the ack timeout and said nothing."""


def _encoded_size(result: pb.Result) -> int:
    return result.ByteSize() + 8  # with its field tag and length prefix in the batch


def _describe(error: BaseException) -> str:
    if isinstance(error, grpc.aio.AioRpcError):
        return f"{error.code().name}: {error.details()}"
    if isinstance(error, TimeoutError):
        return "no answer in time"
    return f"{type(error).__name__}: {error}"
