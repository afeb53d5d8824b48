"""FakeNTP: an SNTP server on 127.0.0.1 (UDP) whose clock runs `offset` seconds off ours, and
that can also stay silent, send a kiss-o'-death, or answer with something that is not NTP."""

from __future__ import annotations

import asyncio
import enum
import struct
import time
from typing import cast

from ._streams import LOCALHOST, Service

NTP_TO_UNIX = 2_208_988_800
PACKET = struct.Struct("!BBbbII4sQQQQ")


class NtpMode(enum.Enum):
    ANSWER = "answer"
    SILENT = "silent"  # never replies: the client times out
    KISS = "kiss"  # stratum 0 with kiss code RATE
    GARBAGE = "garbage"  # replies with bytes that are no NTP packet


def _stamp(unix: float) -> int:
    return int((unix + NTP_TO_UNIX) * 2**32) & (2**64 - 1)


class FakeNTP(Service):
    """`queries` counts datagrams received; `offset`, `stratum` and `mode` may change mid-test."""

    def __init__(
        self, offset: float = 2.5, stratum: int = 2, mode: NtpMode = NtpMode.ANSWER
    ) -> None:
        self.host = LOCALHOST
        self.offset = offset
        self.stratum = stratum
        self.mode = mode
        self.queries = 0
        self._transport: asyncio.DatagramTransport | None = None

    @property
    def port(self) -> int:
        if self._transport is None:
            raise RuntimeError("FakeNTP is not running")
        port: int = self._transport.get_extra_info("sockname")[1]
        return port

    def reply(self, request: bytes) -> bytes | None:
        self.queries += 1
        if self.mode is NtpMode.SILENT or len(request) < PACKET.size:
            return None
        if self.mode is NtpMode.GARBAGE:
            return b"this is not an NTP packet, it only has the length of one......"
        version = (request[0] >> 3) & 7
        now = time.time() + self.offset
        kiss = self.mode is NtpMode.KISS
        return PACKET.pack(
            (version << 3) | 4,  # leap 0, the client's version, mode 4 (server)
            0 if kiss else self.stratum,
            4,
            -20,
            0,
            0,
            b"RATE" if kiss else b"FAKE",
            _stamp(now - 60),
            int.from_bytes(request[40:48], "big"),  # originate: the client's transmit time
            _stamp(now),
            _stamp(now),
        )

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=(self.host, 0)
        )
        self._transport = transport

    async def stop(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, server: FakeNTP) -> None:
        self._server = server
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | bytes, int]) -> None:
        answer = self._server.reply(data)
        if answer is not None and self._transport is not None:
            self._transport.sendto(answer, addr)
