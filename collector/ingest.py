"""The gRPC servicer: one Report stream per probe, applying its batches to the state in order."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc

from courierwatch.collector.state import State
from courierwatch.v1 import courierwatch_pb2 as pb
from courierwatch.v1 import courierwatch_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)


class Ingest(pb_grpc.CollectorServicer):
    def __init__(self, state: State) -> None:
        self._state = state

    async def Report(  # noqa: N802 - the name is the RPC's, fixed by the contract
        self,
        request_iterator: AsyncIterator[pb.ProbeMessage],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.CollectorMessage]:
        first = await anext(request_iterator, None)
        if first is None or not first.HasField("hello"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message must be Hello")
        hello = first.hello
        if not hello.site or not hello.probe_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Hello needs site and probe_id")
        probe = self._state.connect(hello)
        log.info("probe %s/%s connected from %s", hello.site, hello.probe_id, context.peer())
        try:
            yield pb.CollectorMessage(welcome=pb.Welcome(applied_through_seq=probe.applied_through))
            async for message in request_iterator:
                if message.HasField("batch"):
                    through = self._state.apply(probe, message.batch.results)
                    # Acknowledged only once applied: the probe may forget what is acked.
                    yield pb.CollectorMessage(ack=pb.Ack(through_seq=through))
        finally:
            self._state.disconnect(probe)
            log.info("probe %s/%s disconnected", hello.site, hello.probe_id)
