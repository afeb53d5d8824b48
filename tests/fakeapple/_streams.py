"""Shared plumbing for the fake's TCP servers: track every connection so shutdown leaves no
socket open (the suite turns ResourceWarning into an error) and never waits long."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from types import TracebackType
from typing import Self

LOCALHOST = "127.0.0.1"
# Upper bounds so nothing in the fake can hang a test run.
CLOSE_TIMEOUT = 2.0
STOP_TIMEOUT = 5.0
HANDSHAKE_TIMEOUT = 5.0
MAX_READS = 10_000  # chunks read from one connection before the server gives up on it
READ_SIZE = 65_536


class Service:
    """A server the tests start and stop: `async with` runs start() and stop()."""

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class StreamServer(Service):
    """An asyncio TCP server on 127.0.0.1 whose connections are all closed by `stop()`."""

    def __init__(self, host: str = LOCALHOST) -> None:
        self.host = host
        self.connections = 0  # connections handed to `_handle` (for TLS: after the handshake)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._changed = asyncio.Condition()

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RuntimeError(f"{type(self).__name__} is not running")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _listen(self, port: int = 0, ssl_context: ssl.SSLContext | None = None) -> None:
        self._server = await asyncio.start_server(
            self._serve,
            self.host,
            port,
            ssl=ssl_context,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT if ssl_context else None,
            ssl_shutdown_timeout=CLOSE_TIMEOUT if ssl_context else None,
        )

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.connections += 1
        async with self._changed:
            self._changed.notify_all()
        try:
            await self._handle(reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass  # the peer went away: normal for a fake that probes poke at
        except asyncio.CancelledError:
            # Only `stop()` cancels; a cancelled client_connected_cb task makes asyncio's
            # done-callback log an error on 3.11, so end normally instead.
            if not self._stopping:
                raise
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            await close_writer(writer)

    async def wait_connections(self, count: int) -> None:
        """Wait (at most STOP_TIMEOUT) until `connections` reaches `count`. For TLS the server
        finishes its side of the handshake after the client, so checking the counter races."""
        async with asyncio.timeout(STOP_TIMEOUT), self._changed:
            await self._changed.wait_for(lambda: self.connections >= count)

    async def start(self) -> None:
        await self._listen()

    async def stop(self) -> None:
        self._stopping = True
        if self._server is not None:
            self._server.close()
        # Aborting makes every pending read return EOF, so handlers finish on their own.
        for writer in list(self._writers):
            writer.transport.abort()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=STOP_TIMEOUT)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=CLOSE_TIMEOUT)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None


async def close_writer(writer: asyncio.StreamWriter) -> None:
    """Close, falling back to abort when the TLS close_notify exchange does not finish."""
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), CLOSE_TIMEOUT)
    except (OSError, TimeoutError, ssl.SSLError):
        writer.transport.abort()
        with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
            await asyncio.wait_for(writer.wait_closed(), CLOSE_TIMEOUT)


async def drain_until_eof(reader: asyncio.StreamReader) -> None:
    """Read and discard until the peer closes, bounded by MAX_READS chunks."""
    for _ in range(MAX_READS):
        if not await reader.read(READ_SIZE):
            return
