"""SNTP (RFC 4330) packets: the client request and the checks a client must make on a reply.

Pure functions, so the rules are tested without a network; probe/checks/ntp.py does the I/O.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

PACKET_SIZE: Final = 48
_NTP_TO_UNIX: Final = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01
_VERSION: Final = 4
_MODE_CLIENT: Final = 3
_MODE_SERVER: Final = 4
_LEAP_ALARM: Final = 3  # leap indicator 3: the server's clock is not synchronised
_MAX_STRATUM: Final = 15
# leap/version/mode, stratum, poll, precision, root delay, root dispersion, reference id,
# then four 64-bit timestamps: reference, originate, receive, transmit.
_LAYOUT: Final = struct.Struct("!BBbbII4sQQQQ")


class InvalidReply(ValueError):
    """The datagram is not a usable answer to our request; str() says why."""


@dataclass(frozen=True, slots=True)
class Reply:
    stratum: int
    receive: float  # T2: server time the request arrived (Unix seconds)
    transmit: float  # T3: server time the reply left


def to_ntp(unix: float) -> int:
    return int((unix + _NTP_TO_UNIX) * 2**32) & (2**64 - 1)


def from_ntp(stamp: int) -> float:
    seconds = stamp / 2**32
    if not stamp >> 63:  # RFC 4330 section 3: a clear top bit means era 1, from 2036 on
        seconds += 2**32
    return seconds - _NTP_TO_UNIX


def request(now: float) -> bytes:
    """A client request whose transmit timestamp is `now`; the server echoes it back."""
    first = (_VERSION << 3) | _MODE_CLIENT
    return _LAYOUT.pack(first, 0, 0, 0, 0, 0, b"\0\0\0\0", 0, 0, 0, to_ntp(now))


def parse(data: bytes, sent: bytes) -> Reply:
    """Validate `data` as the server's answer to the request `sent` (RFC 4330 section 5)."""
    if len(data) < PACKET_SIZE:
        raise InvalidReply(f"{len(data)}-byte reply, an NTP packet has {PACKET_SIZE}")
    first, stratum, _, _, _, _, refid, _, _, receive, transmit = _LAYOUT.unpack_from(data)
    leap, version, mode = first >> 6, (first >> 3) & 7, first & 7
    if mode != _MODE_SERVER or not 1 <= version <= _VERSION:
        raise InvalidReply(f"not an NTP server reply (version {version}, mode {mode})")
    if data[24:32] != sent[40:48]:
        raise InvalidReply("reply does not answer our request (originate time differs)")
    if stratum == 0:
        code = refid.decode("ascii", "replace").strip("\0") or "?"
        raise InvalidReply(f"kiss-o'-death {code!r}: the server refuses to serve time")
    if stratum > _MAX_STRATUM or leap == _LEAP_ALARM:
        raise InvalidReply(f"server clock not synchronised (stratum {stratum}, leap {leap})")
    if not transmit:
        raise InvalidReply("reply without a transmit time")
    return Reply(stratum, from_ntp(receive), from_ntp(transmit))


def offset(sent_at: float, reply: Reply, received_at: float) -> float:
    """Server clock minus ours, assuming the path is as long both ways."""
    return ((reply.receive - sent_at) + (reply.transmit - received_at)) / 2
