"""FakeNTP: an SNTP server on 127.0.0.1 (UDP) whose clock runs `offset` seconds off ours, and
that can also stay silent, send a kiss-o'-death, or answer with something that is not NTP.

It stamps as a real server does: the receive time (T2) is the kernel's stamp on the request's
arrival (SO_TIMESTAMPNS) and the transmit time (T3) is taken just before the send, so a test
that keeps the event loop busy delays the answer without making its times wrong. `after_reply`
runs right after each answer is sent: a test may block the loop there, exactly while the
answer waits for the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
import struct
import time
from collections.abc import Callable

from ._streams import LOCALHOST, Service

NTP_TO_UNIX = 2_208_988_800
PACKET = struct.Struct("!BBbbII4sQQQQ")
SO_TIMESTAMPNS = 35  # and SCM_TIMESTAMPNS; not in Python's socket module
_TIMESPEC = struct.Struct("@ll")
_MAX_READS = 100  # datagrams taken per wake-up before the loop gets its turn back


class NtpMode(enum.Enum):
    ANSWER = "answer"
    SILENT = "silent"  # never replies: the client times out
    KISS = "kiss"  # stratum 0 with kiss code RATE
    GARBAGE = "garbage"  # replies with bytes that are no NTP packet


def _stamp(unix: float) -> int:
    return int((unix + NTP_TO_UNIX) * 2**32) & (2**64 - 1)


class FakeNTP(Service):
    """`queries` counts datagrams received; `offset`, `stratum`, `mode` and `after_reply` may
    change mid-test."""

    def __init__(
        self, offset: float = 0.25, stratum: int = 2, mode: NtpMode = NtpMode.ANSWER
    ) -> None:
        self.host = LOCALHOST
        self.offset = offset
        self.stratum = stratum
        self.mode = mode
        self.queries = 0
        self.after_reply: Callable[[], None] | None = None
        self._sock: socket.socket | None = None

    @property
    def port(self) -> int:
        if self._sock is None:
            raise RuntimeError("FakeNTP is not running")
        port: int = self._sock.getsockname()[1]
        return port

    def reply(self, request: bytes, arrived: float) -> bytes | None:
        """The answer to `request`, which arrived at `arrived` (our clock, Unix seconds)."""
        self.queries += 1
        if self.mode is NtpMode.SILENT or len(request) < PACKET.size:
            return None
        if self.mode is NtpMode.GARBAGE:
            return b"this is not an NTP packet, it only has the length of one......"
        version = (request[0] >> 3) & 7
        kiss = self.mode is NtpMode.KISS
        return PACKET.pack(
            (version << 3) | 4,  # leap 0, the client's version, mode 4 (server)
            0 if kiss else self.stratum,
            4,
            -20,
            0,
            0,
            b"RATE" if kiss else b"FAKE",
            _stamp(arrived + self.offset - 60),
            int.from_bytes(request[40:48], "big"),  # originate: the client's transmit time
            _stamp(arrived + self.offset),
            _stamp(time.time() + self.offset),  # transmit: now, just before the send
        )

    async def start(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            sock.bind((self.host, 0))
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        for _ in range(_MAX_READS):
            try:
                request, ancillary, _, peer = sock.recvmsg(
                    PACKET.size * 2, socket.CMSG_SPACE(_TIMESPEC.size)
                )
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # an ICMP error from an earlier answer's client: not ours to handle
            answer = self.reply(request, _arrival(ancillary))
            if answer is not None:
                with contextlib.suppress(OSError):
                    sock.sendto(answer, peer)
                if self.after_reply is not None:
                    self.after_reply()

    async def stop(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None


def _arrival(ancillary: list[tuple[int, int, bytes]]) -> float:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            seconds, nanoseconds = _TIMESPEC.unpack_from(data)
            return seconds + nanoseconds / 1e9
    return time.time()
