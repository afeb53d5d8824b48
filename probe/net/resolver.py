"""DNS resolution the way a device sees it: the configured resolver, the whole CNAME chain.

The system call (getaddrinfo) hides the CNAME chain, which names the Akamai POP a site is
steered to, and cannot be pointed at another server, so the probe is its own stub resolver: it
asks the configured nameservers (else those of /etc/resolv.conf) over UDP, over TCP when an
answer comes truncated, in turn until one answers or the lookup's lifetime runs out, as
dnspython's resolver did before it. The wire format is a few dozen lines; doing it here
rather than through dnspython takes a third less CPU per query and 2 MB less memory.

A name's dns check is the probe's lookup of that name: it always asks (`fresh`), and its answer
serves the name's tcp, tls and http checks for its TTL (the smallest along the CNAME chain), as
a device's resolver cache would, so a host costs one lookup per TTL instead of one per check.
Those checks report no dns phase then: they sent no query and waited for none, and the phase
only ever holds time spent waiting for the resolver. Without a fresh answer a check asks
itself (its answer is not cached: the phase it reports is its round trip), or joins a lookup
of the same name already in flight and reports the part of it that it waited for. Rotating
courier names always ask: naming each courier's POP is their point.
"""

from __future__ import annotations

import asyncio
import functools
import re
import secrets
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from courierwatch.common.addresses import is_ip
from courierwatch.probe.failures import CheckFailure
from courierwatch.probe.net.connection import ready, stamp_arrivals
from courierwatch.v1 import courierwatch_pb2 as pb

A: Final = 1
CNAME: Final = 5
AAAA: Final = 28
_TYPE_NAMES: Final = {A: "A", AAAA: "AAAA"}
# Record types asked, by the family a target is bound to ("": either, v4 first).
_RDTYPES: Final = {"": (A, AAAA), "ipv4": (A,), "ipv6": (AAAA,)}
_FAMILY_OF: Final = {A: socket.AF_INET, AAAA: socket.AF_INET6}

# Lookups in flight at once (each one or two queries). `courierwatch check` starts every check
# together; a site resolver such as dnsmasq (Pi-hole) refuses beyond 150 concurrent forwards
# and a burst can overflow a UDP receive buffer, which would read as DNS failures.
MAX_LOOKUPS = 32
ATTEMPT_SECONDS = 2.0  # one query to one nameserver, as glibc's and dnspython's default
MAX_CHAIN = 16  # CNAMEs followed, as dnspython
MAX_CACHED = 10_000  # names; beyond that the oldest entries go
_MAX_BACKOFF = 2.0  # between rounds over every nameserver
_MAX_STRAYS = 100  # datagrams that are not the answer, read before giving up on a server
_MAX_LABELS = 128  # a name has at most 127 labels
_HEADER: Final = struct.Struct("!HHHHHH")
_RR: Final = struct.Struct("!HHIH")
_QR, _TC, _RD = 0x8000, 0x0200, 0x0100
_NOERROR, _NXDOMAIN = 0, 3
# Printed with a backslash in a name, as dnspython (and BIND) print them; others as \DDD.
_SPECIAL: Final = frozenset(b'"().;\\@$')
_PLAIN: Final = re.compile(rb"[A-Za-z0-9_*-]+")  # what names are made of: printed as they are


@dataclass(frozen=True, slots=True)
class Resolution:
    addresses: tuple[str, ...]  # A answers first, then AAAA
    cname_chain: tuple[str, ...]  # names followed, without the query name or trailing dots
    seconds: float | None  # time spent waiting for the resolver (busy probe left out); None: cached
    literal: bool = False  # the name is an address: nothing was looked up, nothing to judge


@dataclass(frozen=True, slots=True)
class _Answer:
    """The address records of one type for a name, and how long they may be reused."""

    addresses: tuple[str, ...]
    chain: tuple[str, ...]
    ttl: int


class _Failure(Exception):
    """Why one question got no addresses, most telling first."""

    rank = 4


class _NXDomain(_Failure):
    rank = 0


class _ServFail(_Failure):  # every nameserver failed (SERVFAIL, REFUSED, garbage, unreachable)
    rank = 1


class _Timeout(_Failure):
    rank = 2


class _NoAnswer(_Failure):  # the name exists but has no record of the type
    rank = 3


class _BadReply(Exception):
    """A reply that is malformed, truncated over TCP, or whose rcode is a server failure."""


Outcomes = list["_Answer | _Failure"]
_Server = tuple[int, tuple[object, ...]]  # (address family, socket address)
_Record = tuple[str, int, int, str]  # (owner lower case, type, ttl, address or CNAME target)


class Resolver:
    def __init__(self, nameservers: Sequence[str] = (), port: int = 53) -> None:
        # Without nameservers: the same resolvers the site's devices use.
        servers = list(nameservers) or _system_nameservers()
        self._servers = [_sockaddr(server, port) for server in servers]
        self._slots = asyncio.Semaphore(MAX_LOOKUPS)
        self._cache: dict[tuple[str, int], tuple[float, _Answer]] = {}
        self._pending: dict[tuple[str, str], asyncio.Task[tuple[Outcomes, float]]] = {}

    async def resolve(
        self, name: str, lifetime: float, family: str = "", *, fresh: bool = False
    ) -> Resolution:
        """Look up A and AAAA in parallel (only one of them for family "ipv4" or "ipv6"); if
        none gives an address, raise the DNS outcome.

        `fresh` asks the resolver now and caches the answer for its TTL; otherwise a cached
        answer serves (no query, `seconds` None), else a lookup of the name already in flight,
        else a query of this lookup's own (not cached)."""
        if is_ip(name):
            return Resolution((name,), (), None, literal=True)
        rdtypes = _RDTYPES[family]
        key = name.lower().rstrip(".")
        if not fresh and (cached := self._cached(key, rdtypes)) is not None:
            return _resolution(name, family, cached, None)
        waited = time.perf_counter()
        lookup = None if fresh else self._pending.get((key, family))
        joined = lookup is not None
        if lookup is None:
            lookup = asyncio.create_task(self._lookup(key, rdtypes, lifetime, cache=fresh))
            self._pending[key, family] = lookup
            lookup.add_done_callback(functools.partial(self._finished, (key, family)))
        # Shielded: a check that times out does not cancel the query others wait for.
        outcomes, seconds = await asyncio.shield(lookup)
        if joined:  # this check waited for part of another's round trip
            seconds = min(seconds, time.perf_counter() - waited)
        return _resolution(name, family, outcomes, seconds)

    def _finished(self, key: tuple[str, str], lookup: asyncio.Task[Any]) -> None:
        if self._pending.get(key) is lookup:
            del self._pending[key]

    def _cached(self, key: str, rdtypes: Sequence[int]) -> Outcomes | None:
        now = time.monotonic()
        found: Outcomes = []
        for rdtype in rdtypes:
            entry = self._cache.get((key, rdtype))
            if entry is None or entry[0] <= now:
                return None
            found.append(entry[1])
        return found

    def _store(self, key: str, rdtype: int, answer: _Answer) -> None:
        if answer.ttl <= 0:
            return
        if len(self._cache) >= MAX_CACHED:
            now = time.monotonic()
            for stale in [k for k, (expires, _) in self._cache.items() if expires <= now]:
                del self._cache[stale]
            while len(self._cache) >= MAX_CACHED:
                del self._cache[next(iter(self._cache))]
        self._cache[key, rdtype] = (time.monotonic() + answer.ttl, answer)

    async def _lookup(
        self, key: str, rdtypes: Sequence[int], lifetime: float, *, cache: bool
    ) -> tuple[Outcomes, float]:
        """Every record type asked at once; the answers or failures, and how long the
        resolver took: as long as its slowest question."""
        async with self._slots:  # the wait for a slot is not the resolver's time
            deadline = asyncio.get_running_loop().time() + lifetime
            asked = await asyncio.gather(*(self._ask(key, t, deadline) for t in rdtypes))
        for rdtype, (outcome, _) in zip(rdtypes, asked, strict=True):
            if cache and isinstance(outcome, _Answer):
                self._store(key, rdtype, outcome)
        return [outcome for outcome, _ in asked], max(seconds for _, seconds in asked)

    async def _ask(
        self, name: str, rdtype: int, deadline: float
    ) -> tuple[_Answer | _Failure, float]:
        """One question to each nameserver in turn (a failed one is dropped) and round after
        round, until one answers or the deadline passes; and how long that took, less the time
        a reply waited for the busy probe (connection.ready)."""
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        question = _question(name, rdtype)
        servers = list(self._servers)
        backoff = 0.1
        while servers:
            for server in list(servers):
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return _Timeout(), time.perf_counter() - started
                try:
                    async with asyncio.timeout(min(ATTEMPT_SECONDS, remaining)):
                        outcome, lag = await _exchange(server, question)
                    return outcome, time.perf_counter() - started - lag
                except TimeoutError:
                    continue  # silent: try the next one, and this one again next round
                except (OSError, EOFError, _BadReply):
                    servers.remove(server)
            await asyncio.sleep(min(backoff, max(0.0, deadline - loop.time())))
            backoff = min(backoff * 2, _MAX_BACKOFF)
        return _ServFail(), time.perf_counter() - started


def _resolution(name: str, family: str, outcomes: Outcomes, seconds: float | None) -> Resolution:
    answers = [o for o in outcomes if isinstance(o, _Answer)]
    addresses = tuple(a for answer in answers for a in answer.addresses)
    if addresses:
        chain = next((answer.chain for answer in answers if answer.chain), ())
        return Resolution(addresses, chain, seconds)
    failures = [o for o in outcomes if isinstance(o, _Failure)]
    raise _failure(name, family, failures)


def _failure(name: str, family: str, failures: list[_Failure]) -> CheckFailure:
    """The most telling failure of the lookups decides the outcome."""
    worst = min(failures, key=lambda f: f.rank, default=_NoAnswer())
    if isinstance(worst, _NXDomain):
        return CheckFailure(pb.OUTCOME_DNS_NXDOMAIN, f"{name}: no such name")
    if isinstance(worst, _ServFail):
        return CheckFailure(pb.OUTCOME_DNS_SERVFAIL, f"{name}: resolver failed (SERVFAIL)")
    if isinstance(worst, _Timeout):
        return CheckFailure(pb.OUTCOME_DNS_TIMEOUT, f"{name}: no DNS answer in time")
    wanted = " or ".join(_TYPE_NAMES[t] for t in _RDTYPES[family])
    return CheckFailure(pb.OUTCOME_DNS_NO_ADDRESS, f"{name}: no {wanted} record")


# --- nameservers -----------------------------------------------------------------------------


def _system_nameservers(path: Path = Path("/etc/resolv.conf")) -> list[str]:
    """`nameserver` lines of resolv.conf; 127.0.0.1 when there are none, as glibc does."""
    servers = []
    try:
        text = path.read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            servers.append(fields[1])
    return servers or ["127.0.0.1"]


def _sockaddr(server: str, port: int) -> _Server:
    """(family, address) of a numeric nameserver, a scoped IPv6 one ("fe80::1%eth0") too."""
    family, _, _, _, address = socket.getaddrinfo(
        server, port, type=socket.SOCK_DGRAM, flags=socket.AI_NUMERICHOST
    )[0]
    return family, address


# --- one exchange ----------------------------------------------------------------------------


async def _exchange(server: _Server, question: _Question) -> tuple[_Answer | _Failure, float]:
    """The question over UDP, again over TCP if the answer was truncated; and the lag."""
    reply, lag = await _udp(server, question)
    truncated, rcode, records = _parse(reply, question)
    if truncated:
        truncated, rcode, records = _parse(await _tcp(server, question), question)
        if truncated:
            raise _BadReply("truncated over TCP")
    return _interpret(rcode, records, question), lag


async def _udp(server: _Server, question: _Question) -> tuple[bytes, float]:
    """Send from a fresh connected socket (a random source port each time, and the kernel
    drops datagrams from anyone else); skip replies to other questions."""
    family, address = server
    lag = 0.0
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        stamp_arrivals(sock)
        sock.connect(address)
        await asyncio.get_running_loop().sock_sendall(sock, question.wire)
        for _ in range(_MAX_STRAYS):
            try:
                reply = sock.recv(65535)
            except BlockingIOError:
                lag += await ready(sock)
                continue
            if _after_question(reply, question) > 0:
                return reply, lag
    raise _BadReply("no reply to the question among the datagrams received")


async def _tcp(server: _Server, question: _Question) -> bytes:
    loop = asyncio.get_running_loop()
    family, address = server
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setblocking(False)
        await loop.sock_connect(sock, address)
        await loop.sock_sendall(sock, len(question.wire).to_bytes(2, "big") + question.wire)
        length = int.from_bytes(await _read_exactly(loop, sock, 2), "big")
        return await _read_exactly(loop, sock, length)


async def _read_exactly(loop: asyncio.AbstractEventLoop, sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:  # ends: every pass reads at least a byte or raises
        chunk = await loop.sock_recv(sock, size - len(data))
        if not chunk:
            raise EOFError("the nameserver closed the connection")
        data += chunk
    return bytes(data)


# --- wire format (RFC 1035) ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Question:
    id: int
    wire: bytes  # the whole query message
    name: str  # as it reads in a reply, lower case (IDNA-encoded where the name was not ASCII)
    rdtype: int


def _question(name: str, rdtype: int) -> _Question:
    """A recursive query for name/rdtype/IN with a random id, without EDNS (as dnspython)."""
    query_id = secrets.randbits(16)
    wire = bytearray(_HEADER.pack(query_id, _RD, 1, 0, 0, 0))
    labels = []
    for label in name.split("."):
        encoded = label.encode("ascii") if label.isascii() else label.encode("idna")
        if not 0 < len(encoded) < 64:
            raise ValueError(f"{name!r} is not a valid DNS name")
        wire.append(len(encoded))
        wire += encoded
        labels.append(_label_text(encoded).lower())
    wire += struct.pack("!BHH", 0, rdtype, 1)
    if len(wire) - _HEADER.size > 4 + 255:
        raise ValueError(f"{name!r} is too long for DNS")
    return _Question(query_id, bytes(wire), ".".join(labels), rdtype)


def _after_question(reply: bytes, question: _Question) -> int:
    """Where the answers start if this is a response to our question (id, QR, the question
    itself), else -1."""
    try:
        ident, flags, qdcount = struct.unpack_from("!HHH", reply)
        if ident != question.id or not flags & _QR or qdcount != 1:
            return -1
        qname, offset = _read_name(reply, _HEADER.size)
        qtype, qclass = struct.unpack_from("!HH", reply, offset)
    except (struct.error, IndexError, _BadReply):
        return -1
    if (qname.lower(), qtype, qclass) != (question.name, question.rdtype, 1):
        return -1
    return offset + 4


def _parse(reply: bytes, question: _Question) -> tuple[bool, int, list[_Record]]:
    """(truncated, rcode, answer records as (owner lower case, type, ttl, value)); values are
    address text or, for CNAME, the target name."""
    offset = _after_question(reply, question)
    if offset < 0:
        raise _BadReply("not a reply to the question")
    try:
        _, flags, _, ancount, _, _ = _HEADER.unpack_from(reply)
        records = []
        for _ in range(ancount):
            owner, offset = _read_name(reply, offset)
            rtype, rclass, ttl, length = _RR.unpack_from(reply, offset)
            offset += _RR.size
            rdata = reply[offset : offset + length]
            if len(rdata) != length:
                raise _BadReply("record runs past the end")
            if rclass == 1 and rtype in _FAMILY_OF and length == (4 if rtype == A else 16):
                address = socket.inet_ntop(_FAMILY_OF[rtype], rdata)
                records.append((owner.lower(), rtype, ttl, address))
            elif rclass == 1 and rtype == CNAME:
                records.append((owner.lower(), rtype, ttl, _read_name(reply, offset)[0]))
            offset += length
    except (struct.error, IndexError) as error:
        raise _BadReply(f"malformed reply: {error}") from None
    return bool(flags & _TC), flags & 0xF, records


def _interpret(rcode: int, records: list[_Record], question: _Question) -> _Answer | _Failure:
    """Follow the CNAME chain from the question to the records of its type (as dnspython's
    resolve_chaining); an rcode other than NOERROR or NXDOMAIN is the server's failure."""
    if rcode not in (_NOERROR, _NXDOMAIN):
        raise _BadReply(f"rcode {rcode}")
    rrsets: dict[tuple[str, int], list[tuple[int, str]]] = {}
    for owner, kind, ttl, value in records:
        rrsets.setdefault((owner, kind), []).append((ttl, value))
    current, chain, least_ttl = question.name, [], 2**31 - 1
    for _ in range(MAX_CHAIN):
        if found := rrsets.get((current, question.rdtype)):
            if rcode == _NXDOMAIN:
                raise _BadReply("an answer with NXDOMAIN")
            addresses = tuple(dict.fromkeys(v for _, v in found))  # an RRset has no duplicates
            return _Answer(addresses, tuple(chain), min(least_ttl, *(t for t, _ in found)))
        if not (alias := rrsets.get((current, CNAME))):
            return _NXDomain() if rcode == _NXDOMAIN else _NoAnswer()
        ttl, target = alias[0]
        least_ttl = min(least_ttl, ttl)
        chain.append(target)
        current = target.lower()
    raise _BadReply("CNAME chain too long")


def _read_name(data: bytes, offset: int) -> tuple[str, int]:
    """A possibly compressed name at offset: (text without the final dot, offset after it)."""
    labels: list[str] = []
    after = -1  # where the name ends in the record, once a pointer was followed
    for _ in range(_MAX_LABELS):
        length = data[offset]
        if length >= 0xC0:  # a pointer to the rest of the name, earlier in the message
            target = (length & 0x3F) << 8 | data[offset + 1]
            if target >= offset:
                raise _BadReply("a compression pointer that does not point back")
            after = offset + 2 if after < 0 else after
            offset = target
            continue
        if length >= 0x40:
            raise _BadReply("an unknown label type")
        offset += 1
        if length == 0:
            return ".".join(labels), offset if after < 0 else after
        labels.append(_label_text(data[offset : offset + length]))
        offset += length
    raise _BadReply("a name with too many labels")


def _label_text(label: bytes) -> str:
    if _PLAIN.fullmatch(label):
        return label.decode("ascii")
    return "".join(
        f"\\{chr(c)}" if c in _SPECIAL else chr(c) if 0x20 < c < 0x7F else f"\\{c:03d}"
        for c in label
    )
