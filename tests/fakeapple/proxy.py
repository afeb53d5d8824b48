"""ConnectProxy: an HTTP CONNECT proxy on 127.0.0.1 that allows, denies (403) or wants
credentials (407), like a site's web proxy."""

from __future__ import annotations

import asyncio
import contextlib
import enum

from ._streams import LOCALHOST, MAX_READS, READ_SIZE, StreamServer, close_writer

MAX_HEADER_LINES = 100


class ProxyMode(enum.Enum):
    ALLOW = "allow"
    DENY = "deny"  # 403, as a proxy whose policy blocks the destination
    AUTH = "auth"  # 407, as a proxy that wants credentials


_REFUSALS = {
    ProxyMode.DENY: b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n",
    ProxyMode.AUTH: (
        b"HTTP/1.1 407 Proxy Authentication Required\r\n"
        b'Proxy-Authenticate: Basic realm="corp"\r\nContent-Length: 0\r\n\r\n'
    ),
}


class ConnectProxy(StreamServer):
    """Answers CONNECT host:port by `mode`. Allowed tunnels go to `upstream`:port whatever the
    host (every fake name lives there), so the proxy does its own "DNS" as a real one does.

    `requests`: the authority of every CONNECT received, in order; `mode` may change mid-test.
    """

    def __init__(self, mode: ProxyMode = ProxyMode.ALLOW, upstream: str = LOCALHOST) -> None:
        super().__init__(LOCALHOST)
        self.mode = mode
        self.upstream = upstream
        self.requests: list[str] = []

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        method, _, authority = (await reader.readline()).decode("latin-1").partition(" ")
        authority = authority.split(" ")[0]
        for _ in range(MAX_HEADER_LINES):
            if (await reader.readline()).strip() == b"":
                break
        self.requests.append(authority)
        if method != "CONNECT":
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            return
        refusal = _REFUSALS.get(self.mode)
        if refusal is not None:
            writer.write(refusal)
            await writer.drain()
            return
        _, _, port = authority.rpartition(":")
        try:
            up_reader, up_writer = await asyncio.open_connection(self.upstream, int(port))
        except (OSError, ValueError):
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return
        try:
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            # Either side closing ends the tunnel; the other pipe then sees EOF or is cancelled.
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
        finally:
            await close_writer(up_writer)


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        for _ in range(MAX_READS):
            data = await source.read(READ_SIZE)
            if not data:
                return
            sink.write(data)
            await sink.drain()
