"""http: an HTTP/1.1 request gets an answer; records the status and the time to first byte.

The request is written by hand on the connection the tcp/tls steps opened, so that each
phase (DNS, connect, TLS, first byte) is timed on its own, which an HTTP client library hides.
"""

from __future__ import annotations

from courierwatch.common import __version__
from courierwatch.probe.checks import steps, tls
from courierwatch.probe.checks.base import CheckContext
from courierwatch.probe.failures import CheckFailure
from courierwatch.probe.targets import Target
from courierwatch.v1 import courierwatch_pb2 as pb

_STATUS_LINE_LIMIT = 8192


async def run(target: Target, ctx: CheckContext, result: pb.Result) -> None:
    over_tls = target.tls if target.tls is not None else target.port != 80
    if over_tls:
        # Only HTTP/1.1 is spoken here, so only it is offered.
        connection = await tls.handshake(target, ctx, result, alpn=("http/1.1",))
    else:
        connection = await steps.connect(target, ctx, result)
    try:
        request = (
            f"GET {target.path} HTTP/1.1\r\nHost: {target.host}\r\n"
            f"User-Agent: courierwatch/{__version__}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        )
        started = connection.mark()
        await connection.write(request.encode("ascii"))
        line = await connection.readline()
        result.phases.first_byte = connection.since(started)
    finally:
        await connection.close()
    result.http.status = status = _status(line)
    expected = status in target.expect_status if target.expect_status else status < 500
    if not expected:
        raise CheckFailure(pb.OUTCOME_HTTP_BAD_STATUS, f"HTTP status {status}")


def _status(line: bytes) -> int:
    if not line:
        raise CheckFailure(pb.OUTCOME_RESET, "connection closed before an HTTP answer")
    parts = line[:_STATUS_LINE_LIMIT].split(maxsplit=2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise CheckFailure(pb.OUTCOME_PROTOCOL_ERROR, f"not an HTTP answer: {line[:40]!r}")
    return int(parts[1])
