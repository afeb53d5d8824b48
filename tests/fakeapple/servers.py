"""Endpoints for the probes to reach: a TLS server (handshake, then idle), an HTTP(S) server
with status and stalling routes, a TCP server that never speaks, and a refused port."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections import Counter

import trustme
from aiohttp import web

from ._streams import CLOSE_TIMEOUT, LOCALHOST, Service, StreamServer, drain_until_eof

SLOW_CAP = 60.0  # /slow answers by itself after this long if shutdown never comes


def _server_context(
    cert: trustme.LeafCert, alpn: list[str] | None, server_names: list[str | None]
) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    if alpn:
        context.set_alpn_protocols(alpn)

    # Called on every ClientHello (name None without SNI), so it also counts attempts that
    # later fail, e.g. a client rejecting the certificate.
    def on_hello(_sock: ssl.SSLObject, name: str | None, _context: ssl.SSLContext) -> None:
        server_names.append(name)

    context.sni_callback = on_hello
    return context


class TLSServer(StreamServer):
    """Completes TLS handshakes with `cert` (selecting from `alpn` if given), then holds each
    connection open, discarding input, until the client closes it.

    `server_names`: SNI of every ClientHello seen (None when absent); `handshakes`: completed;
    `alpn_selected`: protocol chosen per completed handshake (None when none)."""

    def __init__(
        self,
        cert: trustme.LeafCert,
        alpn: list[str] | None = None,
        host: str = LOCALHOST,
        port: int = 0,  # 0: any free port; a fixed one (5223, 443) needs root below 1024
    ) -> None:
        super().__init__(host)
        self._fixed_port = port
        self.cert = cert
        self.alpn = alpn
        self.server_names: list[str | None] = []
        self.alpn_selected: list[str | None] = []
        self._context = _server_context(cert, alpn, self.server_names)

    @property
    def handshakes(self) -> int:
        return self.connections  # asyncio hands over TLS connections only once handshaken

    async def start(self) -> None:
        await self._listen(self._fixed_port, ssl_context=self._context)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ssl_object = writer.get_extra_info("ssl_object")
        self.alpn_selected.append(ssl_object.selected_alpn_protocol() if ssl_object else None)
        await drain_until_eof(reader)


class SilentServer(StreamServer):
    """Accepts TCP connections and never sends a byte: TLS handshakes and HTTP requests
    against it time out. Connections are closed at `stop()`."""

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await drain_until_eof(reader)


def closed_port(host: str = LOCALHOST) -> int:
    """A port on `host` with nothing listening, so connecting is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


class HTTPServer(Service):
    """aiohttp server, over TLS when `cert` is given. Any method on:
    `/` -> 200 "ok"; `/status/{code}` -> that status (200-599); `/slow` -> no response until
    shutdown, so clients time out waiting for the first byte.

    `requests` counts requests by path; `server_names` records SNI as TLSServer does."""

    def __init__(self, cert: trustme.LeafCert | None = None, host: str = LOCALHOST) -> None:
        self.cert = cert
        self.host = host
        self.requests: Counter[str] = Counter()
        self.server_names: list[str | None] = []
        self._context = _server_context(cert, ["http/1.1"], self.server_names) if cert else None
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None

    @property
    def tls(self) -> bool:
        return self._context is not None

    @property
    def port(self) -> int:
        if self._runner is None or not self._runner.addresses:
            raise RuntimeError("HTTPServer is not running")
        port: int = self._runner.addresses[0][1]
        return port

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    async def _root(self, request: web.Request) -> web.Response:
        self.requests[request.path] += 1
        return web.Response(text="ok")

    async def _status(self, request: web.Request) -> web.Response:
        self.requests[request.path] += 1
        try:
            code = int(request.match_info["code"])
        except ValueError:
            code = 0
        if not 200 <= code <= 599:
            return web.Response(status=400, text="status must be 200-599")
        # 204 and 304 must not carry a body.
        return web.Response(status=code, text=None if code in (204, 304) else f"status {code}")

    async def _slow(self, request: web.Request) -> web.Response:
        self.requests[request.path] += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._release.wait(), SLOW_CAP)
        return web.Response(text="late")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/", self._root)
        app.router.add_route("*", "/status/{code}", self._status)
        app.router.add_route("*", "/slow", self._slow)
        # Short shutdown_timeout: /slow handlers are released first, nothing else lingers.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=CLOSE_TIMEOUT)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0, ssl_context=self._context)
        await site.start()

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
