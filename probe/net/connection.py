"""One TCP connection of a check (TLS once started), driven straight on a non-blocking socket;
and the one datagram an NTP check waits for, stamped the same way.

A check opens a connection, times a handshake, maybe exchanges a line, and closes it. asyncio's
streams would give each one a transport, a protocol, a reader and, for TLS, a pure-Python
record layer over memory buffers: a third of the CPU of a TLS check. Here the event loop only
says when the socket is readable or writable, and OpenSSL reads and writes it itself. Errors
stay those of asyncio's streams, so they classify the same way.

Timing: data that arrives while the probe is busy with other checks waits for it; that time is
the probe's, not the network's or the peer's, so the phases measured with `mark` and `since`
leave it out (`lag`). The kernel stamps each packet as it arrives (SO_TIMESTAMPNS), and a wait
for data peeks at that stamp; a connect takes the kernel's own measure of the SYN, SYN-ACK
round trip (TCP_INFO), unless the SYN had to be sent again.
"""

from __future__ import annotations

import _socket
import asyncio
import contextlib
import errno
import socket
import ssl
import struct
import time
from collections.abc import Callable
from typing import Final, TypeVar

T = TypeVar("T")

# Closing politely must not turn a measured success into a timeout.
CLOSE_SECONDS: Final = 1.0
LINE_LIMIT: Final = 65_536  # as asyncio's StreamReader.readline
_READ_SIZE: Final = 65_536
_MAX_STEPS: Final = 1_000  # waits for the socket within one handshake, write, read or close

Mark = tuple[float, float]  # (perf_counter, lag so far)

SO_TIMESTAMPNS: Final = 35  # and SCM_TIMESTAMPNS; not in Python's socket module
_TIMESPEC: Final = struct.Struct("@ll")  # struct timespec, as the kernel hands it over
_STAMP_SPACE: Final = socket.CMSG_SPACE(_TIMESPEC.size)
_TCP_INFO: Final = struct.Struct("@8x60xI28xI")  # tcpi_rtt (us), tcpi_total_retrans
_PEEK: Final = socket.MSG_PEEK | socket.MSG_DONTWAIT


def stamp_arrivals(sock: socket.socket) -> None:
    """Have the kernel stamp the arrival of what this socket receives."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)


async def ready(sock: socket.socket, writable: bool = False) -> float:
    """Wait until the socket is readable (or writable); returns how long it had been so when
    the caller went on: since the data waiting arrived, where the kernel stamped it, else
    since the event loop saw it."""
    seen_at = await _ready_at(sock, writable)
    arrived = None if writable else _arrival(sock)
    return _waited(arrived, seen_at)


async def _ready_at(sock: socket.socket, writable: bool) -> float:
    """Wait until the socket is readable (or writable); when the event loop saw it so."""
    loop = asyncio.get_running_loop()
    seen: asyncio.Future[float] = loop.create_future()
    fd = sock.fileno()
    (loop.add_writer if writable else loop.add_reader)(fd, _note, seen)
    try:
        return await seen
    finally:
        with contextlib.suppress(ValueError, OSError):  # closed meanwhile
            (loop.remove_writer if writable else loop.remove_reader)(fd)


def _waited(arrived: float | None, seen_at: float) -> float:
    if arrived is not None:
        return max(0.0, time.time() - arrived)
    return time.perf_counter() - seen_at


async def datagram(sock: socket.socket, size: int) -> tuple[bytes, float]:
    """The next datagram on a connected non-blocking UDP socket, and how long it had waited
    for the probe since the kernel stamped its arrival (`stamp_arrivals`; else since the
    event loop saw it). An ICMP error the kernel queued (port unreachable) is raised: read at
    once, never peeked at, since the first look at a socket's error clears it."""
    for _ in range(_MAX_STEPS):
        seen_at = await _ready_at(sock, writable=False)
        try:
            data, ancillary, _, _ = sock.recvmsg(size, _STAMP_SPACE)
        except (BlockingIOError, InterruptedError):
            continue  # readable, yet gone (a bad checksum dropped it): wait again
        return data, _waited(_stamp(ancillary), seen_at)
    raise TimeoutError("the socket kept asking to wait")


def _arrival(sock: socket.socket) -> float | None:
    """The kernel's stamp (wall clock) on the first data waiting, peeked at, not read. The C
    socket's own recvmsg does it, since an SSLSocket's refuses (a socket object made for the
    peek would cost four times as much, at every wait)."""
    try:
        _, ancillary, _, _ = _socket.socket.recvmsg(sock, 1, _STAMP_SPACE, _PEEK)
    except OSError:
        return None
    return _stamp(ancillary)


def _stamp(ancillary: list[tuple[int, int, bytes]]) -> float | None:
    """The arrival stamp (wall clock) among a recvmsg's ancillary data, if the kernel set one."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            seconds, nanoseconds = _TIMESPEC.unpack_from(data)
            return seconds + nanoseconds / 1e9
    return None


def _syn_round_trip(sock: socket.socket) -> float | None:
    """The kernel's SYN, SYN-ACK round trip, unless something was sent twice (then the
    kernel's sample is not the connect's)."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO.size)
        rtt, retransmitted = _TCP_INFO.unpack_from(info)
    except (OSError, struct.error):
        return None
    return rtt / 1e6 if rtt and not retransmitted else None


def _note(seen: asyncio.Future[float]) -> None:
    if not seen.done():
        seen.set_result(time.perf_counter())


class LineTooLong(ValueError):
    """A line longer than LINE_LIMIT (a ValueError, as asyncio's StreamReader.readline raises)."""


class Connection:
    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._tls: ssl.SSLSocket | None = None
        self._buffer = bytearray()
        self.lag = 0.0  # seconds the socket was ready while the probe was busy elsewhere
        self.connect_seconds = 0.0  # how long `open` took, lag left out

    @classmethod
    async def open(cls, address: str, port: int) -> Connection:
        started = time.perf_counter()
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        connection = cls(socket.socket(family, socket.SOCK_STREAM))
        sock = connection._sock
        try:
            sock.setblocking(False)
            stamp_arrivals(sock)
            code = sock.connect_ex((address, port))
            if code == errno.EINPROGRESS:
                connection.lag += await ready(sock, writable=True)
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:  # the subclass (ConnectionRefusedError, ...) and words of asyncio's
                raise OSError(code, f"Connect call failed {(address, port)}")
        except BaseException:
            sock.close()
            raise
        rtt = _syn_round_trip(sock)
        connection.connect_seconds = connection.since((started, 0.0)) if rtt is None else rtt
        return connection

    def mark(self) -> Mark:
        return time.perf_counter(), self.lag

    def since(self, mark: Mark) -> float:
        """Seconds since `mark`, less the lag meanwhile."""
        started, lag = mark
        return time.perf_counter() - started - (self.lag - lag)

    @property
    def tls(self) -> ssl.SSLSocket | None:
        """The TLS session once start_tls completed its handshake."""
        return self._tls

    @property
    def tls_attempt(self) -> ssl.SSLSocket | None:
        """The TLS socket once start_tls began, even if its handshake failed: what the peer
        presented can still be read from it."""
        return self._sock if isinstance(self._sock, ssl.SSLSocket) else None

    async def start_tls(self, context: ssl.SSLContext, server_hostname: str) -> None:
        """The client handshake, verifying as `context` says; raises what OpenSSL raises,
        but a peer that closes mid-handshake is ConnectionResetError, as with asyncio."""
        tls = context.wrap_socket(
            self._sock, server_hostname=server_hostname, do_handshake_on_connect=False
        )
        self._sock = tls  # wrap_socket took the file descriptor over
        try:
            await self._step(tls.do_handshake)
        except ssl.SSLEOFError:
            raise ConnectionResetError("connection lost during the TLS handshake") from None
        self._tls = tls

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:  # ends: each pass sends at least a byte or raises
            view = view[await self._step(self._sock.send, view, writing=True) :]

    async def readline(self) -> bytes:
        """Up to and including b"\\n"; what came before EOF if the peer closed first;
        LineTooLong beyond LINE_LIMIT bytes. Bounded by bytes, not by reads: a peer that
        dribbles a byte at a time runs into the check's timeout, not into a made-up limit."""
        for _ in range(LINE_LIMIT + 1):  # each pass reads a byte at least, or returns
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[: end + 1])
                del self._buffer[: end + 1]
                return line
            if len(self._buffer) > LINE_LIMIT:
                break
            chunk = await self._step(self._sock.recv, _READ_SIZE)
            if not chunk:
                line = bytes(self._buffer)
                self._buffer.clear()
                return line
            self._buffer += chunk
        raise LineTooLong(f"no end of line in {LINE_LIMIT} bytes")

    async def close(self) -> None:
        """Politely, within CLOSE_SECONDS: TLS says close_notify and waits for the peer's, as
        asyncio does; whatever goes wrong meanwhile is no finding."""
        try:
            if self._tls is not None:
                async with asyncio.timeout(CLOSE_SECONDS):
                    await self._step(self._tls.unwrap)
        except (OSError, ssl.SSLError, ValueError, TimeoutError):
            pass
        finally:
            self._sock.close()

    def abort(self) -> None:
        self._sock.close()

    async def _step(self, operation: Callable[..., T], *args: object, writing: bool = False) -> T:
        """Call a non-blocking operation until it stops asking to wait for the socket: TLS
        says which way it waits, plain TCP waits the way the operation goes."""
        for _ in range(_MAX_STEPS):
            try:
                return operation(*args)
            except ssl.SSLWantReadError:
                writable = False
            except ssl.SSLWantWriteError:
                writable = True
            except BlockingIOError:
                writable = writing
            self.lag += await ready(self._sock, writable)
        raise TimeoutError("the socket kept asking to wait")
