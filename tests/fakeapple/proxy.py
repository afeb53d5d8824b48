"""ConnectProxy: an HTTP proxy on 127.0.0.1, as a site's web proxy is: CONNECT tunnels for TLS
and absolute-form requests (`GET http://host/path HTTP/1.1`) for plain HTTP, which it forwards
with a Via header; it allows, denies (403) or wants credentials (407), and refuses what a real
proxy refuses: CONNECT to a port it does not allow, and a request that is not in absolute form.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from urllib.parse import urlsplit

from ._streams import LOCALHOST, MAX_READS, READ_SIZE, StreamServer, close_writer

MAX_HEADER_LINES = 100
VIA = b"Via: 1.1 fakeproxy\r\n"
# Hop-by-hop headers a proxy does not pass on (RFC 9110 section 7.6.1), and its own.
_HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"proxy-authorization", b"te",
     b"trailer", b"transfer-encoding", b"upgrade"}
)  # fmt: skip


class ProxyMode(enum.Enum):
    ALLOW = "allow"
    DENY = "deny"  # 403, as a proxy whose policy blocks the destination
    AUTH = "auth"  # 407, as a proxy that wants credentials


def _answer(status: str) -> bytes:
    """The proxy's own answer: no Via, since nothing was forwarded."""
    return f"HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()


_REFUSALS = {
    ProxyMode.DENY: _answer("403 Forbidden"),
    ProxyMode.AUTH: (
        b"HTTP/1.1 407 Proxy Authentication Required\r\n"
        b'Proxy-Authenticate: Basic realm="corp"\r\nContent-Length: 0\r\n\r\n'
    ),
}


class ConnectProxy(StreamServer):
    """Answers CONNECT host:port and GET http://host:port/path by `mode`. Whatever the host,
    allowed requests go to `upstream`:port (every fake name lives there), so the proxy does its
    own "DNS" as a real one does.

    `requests`: what was asked for, in order: the authority of a CONNECT, the URL of a GET.
    `connect_ports`: the ports CONNECT may reach (None: any), as a real proxy's ConnectPort or
    SSL_ports list; a CONNECT elsewhere is a 403. `mode` and `connect_ports` may change
    mid-test.
    """

    def __init__(self, mode: ProxyMode = ProxyMode.ALLOW, upstream: str = LOCALHOST) -> None:
        super().__init__(LOCALHOST)
        self.mode = mode
        self.upstream = upstream
        self.requests: list[str] = []
        self.connect_ports: set[int] | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        method, _, rest = (await reader.readline()).decode("latin-1").partition(" ")
        target, _, version = rest.strip().partition(" ")
        headers = []
        for _ in range(MAX_HEADER_LINES):
            line = await reader.readline()
            if line.strip() == b"":
                break
            headers.append(line)
        self.requests.append(target)
        refusal = _REFUSALS.get(self.mode)
        if method == "CONNECT":
            await self._connect(reader, writer, target, refusal)
        elif method == "GET" and target.startswith("http://"):
            await self._forward(reader, writer, target, version, headers, refusal)
        elif method == "GET":  # origin form: meant for a server, not a proxy
            writer.write(_answer("400 Bad Request"))
        else:
            writer.write(_answer("405 Method Not Allowed"))
        await writer.drain()

    async def _connect(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        authority: str,
        refusal: bytes | None,
    ) -> None:
        _, _, port_text = authority.rpartition(":")
        port = int(port_text) if port_text.isdigit() else 0
        if refusal is None and self.connect_ports is not None and port not in self.connect_ports:
            refusal = _answer("403 Forbidden")
        if refusal is not None:
            writer.write(refusal)
            return
        upstream = await self._open(port, writer)
        if upstream is None:
            return
        up_reader, up_writer = upstream
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await _splice(reader, writer, up_reader, up_writer)

    async def _forward(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        url: str,
        version: str,
        headers: list[bytes],
        refusal: bytes | None,
    ) -> None:
        if refusal is not None:
            writer.write(refusal)
            return
        parts = urlsplit(url)
        upstream = await self._open(parts.port or 80, writer)
        if upstream is None:
            return
        up_reader, up_writer = upstream
        kept = [h for h in headers if h.split(b":", 1)[0].strip().lower() not in _HOP_BY_HOP]
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        up_writer.write(f"GET {path} {version}\r\n".encode("latin-1"))
        up_writer.write(b"".join(kept) + VIA + b"Connection: close\r\n\r\n")
        await up_writer.drain()
        status = await up_reader.readline()
        if not status:
            await close_writer(up_writer)
            writer.write(_answer("502 Bad Gateway"))
            return
        writer.write(status + VIA)  # the rest of the head and the body pass as they come
        await _splice(reader, writer, up_reader, up_writer)

    async def _open(
        self, port: int, writer: asyncio.StreamWriter
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        try:
            return await asyncio.open_connection(self.upstream, port)
        except (OSError, ValueError, OverflowError):
            writer.write(_answer("502 Bad Gateway"))
            return None


async def _splice(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
) -> None:
    """Pipe both ways until either side closes; the other pipe then sees EOF or is cancelled."""
    pipes = [
        asyncio.create_task(_pipe(reader, up_writer)),
        asyncio.create_task(_pipe(up_reader, writer)),
    ]
    try:
        await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pipe in pipes:
            pipe.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)
        await close_writer(up_writer)


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        for _ in range(MAX_READS):
            data = await source.read(READ_SIZE)
            if not data:
                return
            sink.write(data)
            await sink.drain()
