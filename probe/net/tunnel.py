"""Through the site's proxy, the way clients use an HTTP proxy: a tunnel with CONNECT for TLS
(and any other TCP), and for plain HTTP the request itself, in absolute form
(`GET http://host/path HTTP/1.1`) on the connection to the proxy. Proxies refuse CONNECT to
port 80 (most allow it to 443 only), so tunnelling plain HTTP would measure a refusal that no
client ever meets.

The proxy resolves the name, so this path has no DNS phase of its own. Also here: reading an
HTTP/1.1 answer's head, which the http kind shares, and telling the proxy's own refusal from
an answer it forwarded (a forwarding proxy adds Via, RFC 9110 section 7.6.3; its own error
pages carry none).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Final

from courierwatch.common import __version__
from courierwatch.probe.failures import CheckFailure, classify
from courierwatch.probe.net.connection import LINE_LIMIT, Connection, LineTooLong
from courierwatch.probe.net.proxy import ProxySettings
from courierwatch.v1 import courierwatch_pb2 as pb

_LINE_LIMIT: Final = 8192
_MAX_HEADERS: Final = 100
_AUTH: Final = 407

Headers = Sequence[tuple[str, str]]  # (lower-case name, value), in order


async def to_proxy(proxy: ProxySettings, address: str, result: pb.Result) -> Connection:
    """A connection to the proxy at `address` itself; peer_address is the proxy's (what a
    client dials). The caller sets phases.connect once its path is open."""
    try:
        connection = await Connection.open(address, proxy.port)
    except OSError as error:
        outcome, detail = classify(error)
        raise CheckFailure(outcome, f"proxy {proxy.name}: {detail}") from None
    result.peer_address = address
    return connection


async def tunnel(
    proxy: ProxySettings, address: str, host: str, port: int, result: pb.Result
) -> Connection:
    """Connect to the proxy at `address` and CONNECT to host:port; result.phases.connect spans
    both, since that is how long a device waits before its TLS can start."""
    started = time.perf_counter()
    connection = await to_proxy(proxy, address, result)
    authority = _authority(host, port)
    try:
        await connection.write(
            f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"
            f"User-Agent: courierwatch/{__version__}\r\n\r\n".encode("ascii")
        )
        who = f"proxy {proxy.name}: "
        status, reason = parse_status(await read_line(connection, who), who)
        await read_headers(connection, who)
        if not 200 <= status < 300:
            raise refusal(proxy, f"CONNECT {authority}", status, reason)
    except BaseException:
        connection.abort()
        raise
    result.phases.connect = connection.since((started, 0.0))
    return connection


def absolute_url(host: str, port: int, path: str) -> str:
    """The absolute form of a plain-HTTP request to a proxy (RFC 9112 section 3.2.2)."""
    return f"http://{_authority(host, port, default=80)}{path}"


def host_header(host: str, port: int, default: int) -> str:
    """The Host header: the port only where it is not the scheme's own."""
    return _authority(host, port, default=default)


def refused_by_proxy(status: int, headers: Headers) -> bool:
    """Whether an answer to an absolute-form request is the proxy's own refusal rather than
    the origin's answer it forwarded: a 407, or an error without the Via a forwarder adds."""
    forwarded = any(name == "via" for name, _ in headers)
    return status == _AUTH or (status >= 400 and not forwarded)


def refusal(proxy: ProxySettings, what: str, status: int, reason: str) -> CheckFailure:
    """The finding for a proxy that answered `what` (a CONNECT, a GET) with an error itself."""
    if status == _AUTH:
        return CheckFailure(
            pb.OUTCOME_PROXY_AUTH_REQUIRED,
            f"proxy {proxy.name} wants credentials (407): apsd cannot use an authenticated proxy",
        )
    return CheckFailure(
        pb.OUTCOME_PROXY_DENIED, f"proxy {proxy.name} refused {what}: {status} {reason}".rstrip()
    )


async def read_line(connection: Connection, who: str = "") -> bytes:
    """One line of an HTTP answer's head; a line that never ends is the peer's protocol error
    (`who` prefixes the finding), never an error of the probe's own."""
    try:
        return await connection.readline()
    except LineTooLong:
        detail = f"{who}an HTTP line longer than {LINE_LIMIT} bytes"
        raise CheckFailure(pb.OUTCOME_PROTOCOL_ERROR, detail) from None


def parse_status(line: bytes, who: str = "") -> tuple[int, str]:
    """Status code and reason of an HTTP/1.x status line; `who` prefixes a finding."""
    if not line:
        raise CheckFailure(pb.OUTCOME_RESET, f"{who}connection closed before an HTTP answer")
    parts = line[:_LINE_LIMIT].decode("latin-1").split(maxsplit=2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise CheckFailure(pb.OUTCOME_PROTOCOL_ERROR, f"{who}not an HTTP answer: {line[:40]!r}")
    return int(parts[1]), parts[2].strip() if len(parts) > 2 else ""


async def read_headers(connection: Connection, who: str = "") -> list[tuple[str, str]]:
    """The header lines after a status line, up to the blank line (bounded)."""
    headers: list[tuple[str, str]] = []
    for _ in range(_MAX_HEADERS):
        line = await read_line(connection, who)
        if line in (b"\r\n", b"\n", b""):
            return headers
        name, _, value = line[:_LINE_LIMIT].decode("latin-1").partition(":")
        headers.append((name.strip().lower(), value.strip()))
    raise CheckFailure(pb.OUTCOME_PROTOCOL_ERROR, f"{who}endless headers")


def _authority(host: str, port: int, default: int | None = None) -> str:
    name = f"[{host}]" if ":" in host else host
    return name if port == default else f"{name}:{port}"
