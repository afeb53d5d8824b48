"""ntp: an SNTP query (RFC 4330) over UDP is answered; records the clock offset and stratum.

A UDP "connect" proves nothing (nothing is sent), so this asks for the time for real. The
round trip is phases.first_byte; no answer is a timeout; an answer that is not a valid server
reply to this very request (wrong mode, wrong originate time, kiss-o'-death, unsynchronised) is
a protocol error saying which.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Final

from courierwatch.probe.checks import steps
from courierwatch.probe.checks.base import CheckContext
from courierwatch.probe.checks.spec import KindSpec
from courierwatch.probe.failures import CheckFailure
from courierwatch.probe.net import sntp
from courierwatch.v1 import courierwatch_pb2 as pb

if TYPE_CHECKING:
    from courierwatch.probe.targets import Target


class _FirstDatagram(asyncio.DatagramProtocol):
    """Hands the first datagram (or the first socket error, e.g. ICMP unreachable) over."""

    def __init__(self) -> None:
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str | bytes, int]) -> None:
        if not self.answer.done():
            self.answer.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.answer.done():
            self.answer.set_exception(exc)


async def run(target: Target, ctx: CheckContext, result: pb.Result) -> None:
    addresses = await steps.resolve(target, ctx, result)
    address = addresses[0]
    loop = asyncio.get_running_loop()
    # A connected socket: the kernel drops datagrams from anyone but the server.
    transport, protocol = await loop.create_datagram_endpoint(
        _FirstDatagram, remote_addr=(address, target.port)
    )
    try:
        result.peer_address = address
        sent_at, started = time.time(), time.perf_counter()
        request = sntp.request(sent_at)
        transport.sendto(request)
        data = await protocol.answer
        round_trip = time.perf_counter() - started
    finally:
        transport.close()
    result.phases.first_byte = round_trip
    try:
        reply = sntp.parse(data, request)
    except sntp.InvalidReply as invalid:
        raise CheckFailure(pb.OUTCOME_PROTOCOL_ERROR, str(invalid)) from None
    result.ntp.stratum = reply.stratum
    # The receive time follows from the monotonic round trip, so a wall-clock step during the
    # query cannot distort the offset.
    result.ntp.offset_seconds = sntp.offset(sent_at, reply, sent_at + round_trip)


# UDP: per address family, but never through the proxy (CONNECT carries TCP only).
SPEC: Final = KindSpec(
    name="ntp",
    run=run,
    summary="an SNTP query over UDP gets a valid answer; records the clock offset and stratum",
    default_port=123,
    per_family=True,
    facts=(
        *steps.RESOLVE_FACTS, "peer_address", "phases.first_byte", "ntp.stratum",
        "ntp.offset_seconds",
    ),
)  # fmt: skip
