"""The gRPC client: streams the outbox to a collector and forgets what it acknowledges.

One long-lived Report stream: Hello first, then batches as results arrive. On any failure
it reconnects with capped exponential backoff and full jitter, trying the configured
collectors in turn, and resends everything not yet acknowledged (the collector dedupes).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections.abc import Sequence

import grpc

from courierwatch.probe.outbox import Outbox
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
        outbox: Outbox,
        hello: pb.Hello,
        credentials: grpc.ChannelCredentials | None,
        *,
        batch_size: int = 500,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        self._collectors = tuple(collectors)
        self._outbox = outbox
        self._hello = hello
        self._credentials = credentials  # None: plaintext, the explicit insecure mode
        self._batch_size = batch_size
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._rng = rng or random.Random()
        self.connected = asyncio.Event()

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
            self._outbox.ack(welcome.welcome.applied_through_seq)
            log.info("streaming to collector %s", address)
            self.connected.set()
            sender = asyncio.create_task(self._send(call, welcome.welcome.applied_through_seq))
            try:
                await self._receive_acks(call)
            finally:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sender

    async def _send(self, call: grpc.aio.StreamStreamCall, acked: int) -> None:
        sent = acked
        while True:
            await self._outbox.wait_after(sent)
            batch = self._outbox.after(sent, self._batch_size)
            await call.write(pb.ProbeMessage(batch=pb.ResultBatch(results=batch)))
            sent = batch[-1].seq

    async def _receive_acks(self, call: grpc.aio.StreamStreamCall) -> None:
        while True:
            message = await call.read()
            if message is grpc.aio.EOF:
                raise OSError("the collector closed the stream")
            if message.HasField("ack"):
                self._outbox.ack(message.ack.through_seq)


def _describe(error: BaseException) -> str:
    if isinstance(error, grpc.aio.AioRpcError):
        return f"{error.code().name}: {error.details()}"
    return str(error)
