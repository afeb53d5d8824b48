"""http: an HTTP/1.1 request gets an answer; records the status and the time to first byte.

The request is written by hand on the connection the tcp/tls steps opened, so that each
phase (DNS, connect, TLS, first byte) is timed on its own, which an HTTP client library hides.
Through the site's proxy, HTTPS goes through a CONNECT tunnel and plain HTTP is asked of the
proxy in absolute form, as every client does; a refusal from the proxy itself (407, or an error
it did not forward) is the proxy's finding, not the endpoint's status.
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
from courierwatch.probe.net import tunnel
from courierwatch.v1 import courierwatch_pb2 as pb

if TYPE_CHECKING:
    from courierwatch.probe.targets import Target

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
    plain_via_proxy = False
    if over_tls(target.tls, target.port):
        # Only HTTP/1.1 is spoken here, so only it is offered.
        connection = await tls.handshake(target, ctx, result, alpn=("http/1.1",))
        default_port = 443
    else:
        # Plain HTTP through a proxy is asked of the proxy in absolute form, never tunnelled.
        plain_via_proxy = target.via == "proxy"
        connection = await steps.connect(target, ctx, result, tunnelled=not plain_via_proxy)
        default_port = 80
    host = steps.dial_host(target, ctx, result)
    url = tunnel.absolute_url(host, target.port, target.path) if plain_via_proxy else target.path
    try:
        request = (
            f"GET {url} HTTP/1.1\r\nHost: {tunnel.host_header(host, target.port, default_port)}\r\n"
            f"User-Agent: courierwatch/{__version__}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        )
        started = connection.mark()
        await connection.write(request.encode("ascii"))
        line = await tunnel.read_line(connection)
        result.phases.first_byte = connection.since(started)
        status, reason = tunnel.parse_status(line)
        headers = await tunnel.read_headers(connection) if plain_via_proxy else ()
    finally:
        await connection.close()
    if plain_via_proxy and tunnel.refused_by_proxy(status, headers):
        raise tunnel.refusal(steps.proxy_of(ctx), f"GET {url}", status, reason)
    result.http.status = status
    expected = status in target.expect_status if target.expect_status else status < 500
    if not expected:
        raise CheckFailure(pb.OUTCOME_HTTP_BAD_STATUS, f"HTTP status {status}")


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
