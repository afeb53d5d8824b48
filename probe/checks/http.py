"""http: an HTTP/1.1 request gets an answer; records the status and the time to first byte.

The request is written by hand on the connection the tcp/tls steps opened, so that each
phase (DNS, connect, TLS, first byte) is timed on its own, which an HTTP client library hides.
"""

from __future__ import annotations

import re
from collections.abc import Collection, MutableMapping
from typing import TYPE_CHECKING, Any, Final

from courierwatch.common import __version__
from courierwatch.common.configfile import to_bool, to_int, to_str
from courierwatch.probe.checks import steps, tls
from courierwatch.probe.checks.base import CheckContext
from courierwatch.probe.checks.spec import KindSpec, Option, OptionError
from courierwatch.probe.failures import CheckFailure
from courierwatch.v1 import courierwatch_pb2 as pb

if TYPE_CHECKING:
    from courierwatch.probe.targets import Target

_STATUS_LINE_LIMIT = 8192
# What may go on an HTTP/1.1 request line as is: printable ASCII without spaces.
_PATH: Final = re.compile(r"/[\x21-\x7e]*")

TLS: Final = Option(
    "tls", to_bool, "HTTP over TLS", "true or false", default_text="unless the port is 80"
)
PATH: Final = Option(
    "path",
    to_str(_PATH, "a path starting with / (ASCII, URL-encoded)"),
    "what is asked for (GET)",
    "a path starting with `/`",
    default="/",
)
EXPECT_STATUS: Final = Option(
    "expect_status",
    to_int(100, 599),
    "the statuses that count as working",
    "list of status codes",
    many=True,
    default=(),
    default_text="any below 500",
)


def over_tls(tls: bool | None, port: int) -> bool:
    return tls if tls is not None else port != 80


def _plain_takes_no_certificate(
    values: MutableMapping[str, Any], written: Collection[str], port: int
) -> None:
    if not over_tls(values["tls"], port):
        for option in tls.VERIFIED:
            if option.name in written:
                raise OptionError(option.name, "not valid for plain HTTP (tls: false, or port 80)")


async def run(target: Target, ctx: CheckContext, result: pb.Result) -> None:
    if over_tls(target.tls, target.port):
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


# Only HTTP/1.1 is spoken, so only it is offered: no alpn or require_alpn options.
SPEC: Final = KindSpec(
    name="http",
    run=run,
    summary="an HTTP/1.1 GET is answered; over TLS verified as `tls` is, unless plain "
    "(`tls: false` or port 80, which takes no `sni`, `anchors` or `expect_issuer`)",
    options=(*tls.VERIFIED, TLS, PATH, EXPECT_STATUS),
    per_family=True,
    via_proxy=True,
    facts=(*tls.FACTS, "phases.first_byte", "http.status"),
    refine=_plain_takes_no_certificate,
)
