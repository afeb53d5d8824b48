"""Through the site's proxy: a tunnel to host:port with HTTP CONNECT, as apsd would ask for one.

The proxy resolves the name, so this path has no DNS phase of its own.
"""

from __future__ import annotations

import time
from typing import Final

from courierwatch.common import __version__
from courierwatch.probe.failures import CheckFailure, classify
from courierwatch.probe.net.connection import Connection
from courierwatch.probe.net.proxy import ProxySettings
from courierwatch.v1 import courierwatch_pb2 as pb

_LINE_LIMIT: Final = 8192
_MAX_HEADERS: Final = 100


async def tunnel(
    proxy: ProxySettings, address: str, host: str, port: int, result: pb.Result
) -> Connection:
    """Connect to the proxy at `address` and CONNECT to host:port; result.phases.connect spans
    both, since that is how long a device waits before its TLS can start."""
    started = time.perf_counter()
    try:
        connection = await Connection.open(address, proxy.port)
    except OSError as error:
        outcome, detail = classify(error)
        raise CheckFailure(outcome, f"proxy {proxy.name}: {detail}") from None
    result.peer_address = address
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        await connection.write(
            f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"
            f"User-Agent: courierwatch/{__version__}\r\n\r\n".encode("ascii")
        )
        status, reason = await _read_answer(connection, proxy)
    except BaseException:
        connection.abort()
        raise
    if status == 407:
        connection.abort()
        raise CheckFailure(
            pb.OUTCOME_PROXY_AUTH_REQUIRED,
            f"proxy {proxy.name} wants credentials (407): apsd cannot use an authenticated proxy",
        )
    if not 200 <= status < 300:
        connection.abort()
        raise CheckFailure(
            pb.OUTCOME_PROXY_DENIED,
            f"proxy {proxy.name} refused CONNECT {authority}: {status} {reason}".rstrip(),
        )
    result.phases.connect = connection.since((started, 0.0))
    return connection


async def _read_answer(connection: Connection, proxy: ProxySettings) -> tuple[int, str]:
    """The status of the proxy's answer; its headers are read and dropped (bounded)."""
    line = await connection.readline()
    if not line:
        raise CheckFailure(pb.OUTCOME_RESET, f"proxy {proxy.name} closed the connection")
    parts = line[:_LINE_LIMIT].decode("latin-1").split(maxsplit=2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise CheckFailure(
            pb.OUTCOME_PROTOCOL_ERROR, f"proxy {proxy.name}: not an HTTP answer: {line[:40]!r}"
        )
    for _ in range(_MAX_HEADERS):
        header = await connection.readline()
        if header in (b"\r\n", b"\n", b""):
            return int(parts[1]), parts[2].strip() if len(parts) > 2 else ""
    raise CheckFailure(pb.OUTCOME_PROTOCOL_ERROR, f"proxy {proxy.name}: endless headers")
