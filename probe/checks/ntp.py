"""ntp: an SNTP query (RFC 4330) over UDP is answered; records the clock offset and stratum,
and finds a clock that is off.

A UDP "connect" proves nothing (nothing is sent), so this asks for the time for real. The
round trip is phases.first_byte; no answer is a timeout; an answer that is not a valid server
reply to this very request (wrong mode, wrong originate time, kiss-o'-death, unsynchronised) is
a protocol error saying which. An offset beyond `max_offset` is clock_skew (Apple's TLS and MDM
fail with a wrong clock), the offset still recorded; beyond `critical_offset` the detail says
it is critical (`critical` tells the report).

Timing is taken at the socket: the send time just before the send, the arrival from the
kernel's stamp on the answer, so a probe busy with other checks when the answer lands (a
one-shot run starts them all together) does not count that wait into the round trip.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Collection, MutableMapping
from typing import TYPE_CHECKING, Any, Final

from courierwatch.common.configfile import to_duration
from courierwatch.probe.checks import steps
from courierwatch.probe.checks.base import CheckContext
from courierwatch.probe.checks.spec import KindSpec, Option, OptionError
from courierwatch.probe.failures import CheckFailure
from courierwatch.probe.net import connection, sntp
from courierwatch.v1 import courierwatch_pb2 as pb

if TYPE_CHECKING:
    from courierwatch.probe.targets import Target

MAX_OFFSET: Final = Option(
    "max_offset",
    to_duration,
    "a clock off by more than this (either way) is `clock_skew`",
    "a duration such as `1s` or `500ms`",
    default=1.0,
    default_text="`1s`",
)
CRITICAL_OFFSET: Final = Option(
    "critical_offset",
    to_duration,
    "a skew beyond this is critical: enrolment and Apple's TLS fail (the report: NOT READY)",
    "a duration such as `1m`",
    default=60.0,
    default_text="`1m`",
)
CRITICAL_WORD: Final = "critical"  # begins the detail of a critical skew


def critical(target: Target, result: pb.Result) -> bool:
    """Whether this ntp result is a critical skew by its target's own threshold: the test the
    report applies to say NOT READY (the detail begins with CRITICAL_WORD too)."""
    return result.outcome == pb.OUTCOME_CLOCK_SKEW and abs(
        result.ntp.offset_seconds
    ) > CRITICAL_OFFSET.of(target)


def _critical_beyond_max(
    values: MutableMapping[str, Any], written: Collection[str], _: int
) -> None:
    if values["critical_offset"] < values["max_offset"]:
        key = "critical_offset" if "critical_offset" in written else "max_offset"
        raise OptionError(key, "critical_offset must not be below max_offset")


async def run(target: Target, ctx: CheckContext, result: pb.Result) -> None:
    addresses = await steps.resolve(target, ctx, result)
    address = addresses[0]
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        connection.stamp_arrivals(sock)
        sock.connect((address, target.port))  # the kernel drops datagrams from anyone else
        result.peer_address = address
        sent_at = time.time()
        request = sntp.request(sent_at)
        started = time.perf_counter()
        sock.send(request)
        data, waited = await connection.datagram(sock, sntp.PACKET_SIZE * 2)
        round_trip = time.perf_counter() - started - waited
    finally:
        sock.close()
    result.phases.first_byte = round_trip
    try:
        reply = sntp.parse(data, request)
    except sntp.InvalidReply as invalid:
        raise CheckFailure(pb.OUTCOME_PROTOCOL_ERROR, str(invalid)) from None
    result.ntp.stratum = reply.stratum
    # The receive time follows from the monotonic round trip, so a wall-clock step during the
    # query cannot distort the offset.
    offset = result.ntp.offset_seconds = sntp.offset(sent_at, reply, sent_at + round_trip)
    _judge(target, offset)


def _judge(target: Target, offset: float) -> None:
    threshold, worst = MAX_OFFSET.of(target), CRITICAL_OFFSET.of(target)
    if abs(offset) <= threshold:
        return
    way = "behind" if offset > 0 else "ahead of"  # the offset is the server's clock minus ours
    what = f"clock off by {offset:+.3f} s: this probe is {abs(offset):.3f} s {way} {target.host}"
    if abs(offset) > worst:
        raise CheckFailure(
            pb.OUTCOME_CLOCK_SKEW,
            f"{CRITICAL_WORD}: {what} (over {worst:g} s: enrolment and Apple's TLS fail)",
        )
    raise CheckFailure(pb.OUTCOME_CLOCK_SKEW, f"{what} (threshold {threshold:g} s)")


# UDP: per address family, but never through the proxy (CONNECT carries TCP only).
SPEC: Final = KindSpec(
    name="ntp",
    run=run,
    summary="an SNTP query over UDP gets a valid answer and the clock is within `max_offset`; "
    "records the clock offset and stratum",
    options=(MAX_OFFSET, CRITICAL_OFFSET),
    default_port=123,
    per_family=True,
    facts=(
        *steps.RESOLVE_FACTS, "peer_address", "phases.first_byte", "ntp.stratum",
        "ntp.offset_seconds",
    ),
    refine=_critical_beyond_max,
)  # fmt: skip
