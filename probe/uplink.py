"""The gRPC client: streams the spool to a collector and deletes what it acknowledges.

One long-lived Report stream: Hello first, then batches as results reach the spool's disk,
and a Health report every few seconds. On any failure it reconnects with capped exponential
backoff and full jitter, trying the configured collectors in turn, and resends everything
not yet acknowledged, starting after what the collector says it applied (it dedupes too).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections.abc import Callable, Sequence

import grpc

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
    ) -> None:
        self._collectors = tuple(collectors)
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
        self._acked = asyncio.Event()

    async def run(self) -> None:
        """Keep a stream to some collector open until cancelled."""
        failures = 0
        for address in itertools.cycle(self._collectors):
            try:
                await self._session(address)
                failures = 0
            except (grpc.aio.AioRpcError, OSError) as error:
                failures += 1
                log.warning("collector %s: %s", address, _describe(error))
            finally:
                self.connected.clear()
            ceiling = min(self._backoff_cap, self._backoff_base * 2 ** min(failures, 16))
            await asyncio.sleep(self._rng.uniform(0, ceiling))

    def _channel(self, address: str) -> grpc.aio.Channel:
        if self._credentials is None:
            return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        return grpc.aio.secure_channel(address, self._credentials, options=CHANNEL_OPTIONS)

    async def _session(self, address: str) -> None:
        async with self._channel(address) as channel:
            call = pb_grpc.CollectorStub(channel).Report()
            await call.write(pb.ProbeMessage(hello=self._hello))
            welcome = await call.read()
            if not isinstance(welcome, pb.CollectorMessage) or not welcome.HasField("welcome"):
                raise OSError("the collector did not answer Hello with Welcome")
            applied = welcome.welcome.applied_through_seq
            await self._note_ack(applied)
            log.info("streaming to collector %s", address)
            self.connected.set()
            sender = asyncio.create_task(self._send(call, applied))
            try:
                await self._receive_acks(call)
            finally:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sender

    async def _send(self, call: grpc.aio.StreamStreamCall, applied: int) -> None:
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
            batch = await self._spool.after(sent, self._batch_size)
            if batch:  # empty only when the rows were dropped by a bound meanwhile
                await call.write(pb.ProbeMessage(batch=pb.ResultBatch(results=batch)))
                sent = batch[-1].seq

    async def _receive_acks(self, call: grpc.aio.StreamStreamCall) -> None:
        while True:
            message = await call.read()
            if message is grpc.aio.EOF:
                raise OSError("the collector closed the stream")
            if message.HasField("ack"):
                await self._note_ack(message.ack.through_seq)

    async def _note_ack(self, through_seq: int) -> None:
        await self._spool.ack(through_seq)
        self._acked_through = max(self._acked_through, through_seq)
        self._acked.set()

    async def drain(self, through_seq: int, seconds: float) -> bool:
        """Wait (at most `seconds`) until the collector acknowledged through `through_seq`."""
        try:
            async with asyncio.timeout(seconds):
                while self._acked_through < through_seq:
                    self._acked.clear()
                    await self._acked.wait()
        except TimeoutError:
            return False
        return True


def _describe(error: BaseException) -> str:
    if isinstance(error, grpc.aio.AioRpcError):
        return f"{error.code().name}: {error.details()}"
    return str(error)
