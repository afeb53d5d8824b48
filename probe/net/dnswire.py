"""DNS messages on the wire (RFC 1035): the query the probe sends, what a reply to it says, and
where its CNAME chain leads.

Pure: bytes in, values out, no sockets and no clock, so that every guard can be shown with a
table of replies. A reply must answer the question asked (id, QR bit, the question echoed) and be
well-formed to its last byte, as dnspython's parser demands: every section holds exactly the
records its count announces, names stay within 63 bytes a label and 255 a name, and compression
pointers only point back, each before the last. Anything else is `Malformed`.
"""

from __future__ import annotations

import re
import secrets
import socket
import struct
from dataclasses import dataclass
from typing import Final

A: Final = 1
CNAME: Final = 5
AAAA: Final = 28
IN: Final = 1
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
RCODE_NAMES: Final = {
    NOERROR: "NOERROR",
    FORMERR: "FORMERR",
    SERVFAIL: "SERVFAIL",
    NXDOMAIN: "NXDOMAIN",
    NOTIMP: "NOTIMP",
    REFUSED: "REFUSED",
}
MAX_CHAIN: Final = 16  # CNAMEs followed, as dnspython
MAX_LABEL: Final = 63  # bytes
MAX_NAME: Final = 255  # bytes on the wire, length octets and the root label included
# Labels and pointers read for one name: 127 labels fill 255 bytes; pointers can only go back.
_MAX_STEPS: Final = 256
_HEADER: Final = struct.Struct("!HHHHHH")
_RR: Final = struct.Struct("!HHIH")
_QR, _TC, _RD = 0x8000, 0x0200, 0x0100
_ADDRESS: Final = {A: (socket.AF_INET, 4), AAAA: (socket.AF_INET6, 16)}
# Printed with a backslash in a name, as dnspython (and BIND) print them; others as \DDD.
_SPECIAL: Final = frozenset(b'"().;\\@$')
_PLAIN: Final = re.compile(rb"[A-Za-z0-9_*-]+")  # what names are made of: printed as they are

Record = tuple[str, int, int, str]  # (owner lower case, type, ttl, address or CNAME target)


class Malformed(Exception):
    """A reply that is not a well-formed answer to the question asked."""


class ChainError(Exception):
    """The answer's CNAMEs lead nowhere: a loop, or more of them than are followed."""


@dataclass(frozen=True, slots=True)
class Question:
    id: int
    wire: bytes  # the whole query message
    name: str  # as it reads in a reply, lower case (IDNA-encoded where the name was not ASCII)
    rdtype: int


@dataclass(frozen=True, slots=True)
class Reply:
    truncated: bool
    rcode: int
    records: tuple[Record, ...]  # the answer section's IN A, AAAA and CNAME; none if truncated


@dataclass(frozen=True, slots=True)
class Answer:
    """Where the chain from the question leads: the addresses of the type there (none: the
    last name has no such record), the names followed, and the smallest TTL along the way."""

    addresses: tuple[str, ...]
    chain: tuple[str, ...]  # CNAME targets as written, without the query name or final dots
    ttl: int


def question(name: str, rdtype: int) -> Question:
    """A recursive query for name/rdtype/IN with a random id, without EDNS (as dnspython)."""
    query_id = secrets.randbits(16)
    wire = bytearray(_HEADER.pack(query_id, _RD, 1, 0, 0, 0))
    labels = []
    for label in name.split("."):
        encoded = label.encode("ascii") if label.isascii() else label.encode("idna")
        if not 0 < len(encoded) <= MAX_LABEL:
            raise ValueError(f"{name!r} is not a valid DNS name")
        wire.append(len(encoded))
        wire += encoded
        labels.append(_label_text(encoded).lower())
    wire += struct.pack("!BHH", 0, rdtype, IN)
    if len(wire) - _HEADER.size - 4 > MAX_NAME:
        raise ValueError(f"{name!r} is too long for DNS")
    return Question(query_id, bytes(wire), ".".join(labels), rdtype)


def after_question(reply: bytes, asked: Question) -> int:
    """Where the answer section starts if this is a response to the question (id, QR bit, the
    question echoed in any case), else -1."""
    try:
        ident, flags, qdcount = struct.unpack_from("!HHH", reply)
        if ident != asked.id or not flags & _QR or qdcount != 1:
            return -1
        qname, offset = read_name(reply, _HEADER.size)
        qtype, qclass = struct.unpack_from("!HH", reply, offset)
    except (struct.error, IndexError, Malformed):
        return -1
    if (qname.lower(), qtype, qclass) != (asked.name, asked.rdtype, IN):
        return -1
    return offset + 4


def parse(reply: bytes, asked: Question) -> Reply:
    """What a reply to `asked` says. A truncated one is not read further: its records are
    incomplete by definition, and servers cut it anywhere."""
    offset = after_question(reply, asked)
    if offset < 0:
        raise Malformed("not a reply to the question")
    _, flags, _, ancount, nscount, arcount = _HEADER.unpack_from(reply)
    if flags & _TC:
        return Reply(True, flags & 0xF, ())
    records: list[Record] = []
    try:
        for index in range(ancount + nscount + arcount):
            owner, offset = read_name(reply, offset)
            rtype, rclass, ttl, length = _RR.unpack_from(reply, offset)
            offset += _RR.size
            end = offset + length
            if end > len(reply):
                raise Malformed("a record runs past the end")
            if index < ancount and rclass == IN:
                value = _value(reply, offset, end, rtype)
                if value is not None:
                    records.append((owner.lower(), rtype, ttl, value))
            offset = end
    except (struct.error, IndexError):
        raise Malformed("fewer records than announced") from None
    if offset != len(reply):
        raise Malformed("more records than announced")
    return Reply(False, flags & 0xF, tuple(records))


def _value(reply: bytes, offset: int, end: int, rtype: int) -> str | None:
    """An address as text, a CNAME's target; None for types the probe does not read."""
    if rtype in _ADDRESS:
        family, size = _ADDRESS[rtype]
        if end - offset != size:
            raise Malformed(f"an address record of {end - offset} bytes")
        return socket.inet_ntop(family, reply[offset:end])
    if rtype == CNAME:
        target, after = read_name(reply, offset)
        if after != end:
            raise Malformed("a CNAME whose name does not fill its record")
        return target
    return None


def follow(records: tuple[Record, ...], asked: Question) -> Answer:
    """Follow the CNAME chain from the question to the records of its type, as dnspython's
    resolve_chaining does; raises ChainError for a loop or beyond MAX_CHAIN CNAMEs."""
    rrsets: dict[tuple[str, int], list[tuple[int, str]]] = {}
    for owner, kind, ttl, value in records:
        rrsets.setdefault((owner, kind), []).append((ttl, value))
    current, chain, least_ttl = asked.name, [], 2**31 - 1
    seen = {current}
    for _ in range(MAX_CHAIN):
        if found := rrsets.get((current, asked.rdtype)):
            addresses = tuple(dict.fromkeys(v for _, v in found))  # an RRset has no duplicates
            return Answer(addresses, tuple(chain), min(least_ttl, *(t for t, _ in found)))
        if not (alias := rrsets.get((current, CNAME))):
            return Answer((), tuple(chain), least_ttl)
        ttl, target = alias[0]
        least_ttl = min(least_ttl, ttl)
        chain.append(target)
        current = target.lower()
        if current in seen:
            raise ChainError(f"CNAME loop {' -> '.join([asked.name, *chain])}")
        seen.add(current)
    raise ChainError(f"CNAME chain longer than {MAX_CHAIN}")


def read_name(data: bytes, offset: int) -> tuple[str, int]:
    """A possibly compressed name at offset: (text without the final dot, offset after it)."""
    labels: list[str] = []
    size = 1  # the root label
    after = -1  # where the name ends in the record, once a pointer was followed
    lowest = offset  # a pointer must point before every part of the name read so far
    for _ in range(_MAX_STEPS):
        length = data[offset]
        if length >= 0xC0:  # a pointer to the rest of the name, earlier in the message
            target = (length & 0x3F) << 8 | data[offset + 1]
            if target >= lowest:
                raise Malformed("a compression pointer that does not point back")
            after = offset + 2 if after < 0 else after
            offset = lowest = target
            continue
        if length > MAX_LABEL:
            raise Malformed(f"a label longer than {MAX_LABEL} bytes (or of an unknown type)")
        offset += 1
        if length == 0:
            return ".".join(labels), offset if after < 0 else after
        size += 1 + length
        if size > MAX_NAME:
            raise Malformed(f"a name longer than {MAX_NAME} bytes")
        label = data[offset : offset + length]
        if len(label) != length:
            raise Malformed("a label runs past the end")
        labels.append(_label_text(label))
        offset += length
    raise Malformed("a name of too many compression pointers")


def _label_text(label: bytes) -> str:
    if _PLAIN.fullmatch(label):
        return label.decode("ascii")
    return "".join(
        f"\\{chr(c)}" if c in _SPECIAL else chr(c) if 0x20 < c < 0x7F else f"\\{c:03d}"
        for c in label
    )
