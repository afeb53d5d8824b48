"""DNS resolution the way a device sees it: the configured resolver, the whole CNAME chain.

The system call (getaddrinfo) hides the CNAME chain, which names the Akamai POP a site is
steered to, and cannot be pointed at another server, so the probe is its own stub resolver: it
asks the configured nameservers (else those of /etc/resolv.conf) over UDP, over TCP when an
answer comes truncated, in turn until one answers or the lookup's lifetime runs out, as
dnspython's resolver did before it. The wire format (courierwatch.probe.net.dnswire) is a few
dozen lines; doing it here rather than through dnspython takes a third less CPU per query and
2 MB less memory.

A failure says what happened: the name does not exist, or has no address (also when its CNAMEs
loop or run longer than dnspython follows); the resolver answered SERVFAIL, or REFUSED; it
cannot be reached at all (no route, port closed: on every nameserver); nothing answered in
time; or it broke the protocol. A truncated answer whose TCP retry failed says so.

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
import os
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from courierwatch.common.addresses import is_ip
from courierwatch.common.configfile import join_host_port
from courierwatch.probe.failures import CheckFailure
from courierwatch.probe.net import dnswire
from courierwatch.probe.net.connection import ready, stamp_arrivals
from courierwatch.probe.net.dnswire import AAAA, A, Answer, ChainError, Malformed, Question, Reply
from courierwatch.v1 import courierwatch_pb2 as pb

_TYPE_NAMES: Final = {A: "A", AAAA: "AAAA"}
# Record types asked, by the family a target is bound to ("": either, v4 first).
_RDTYPES: Final = {"": (A, AAAA), "ipv4": (A,), "ipv6": (AAAA,)}

# Lookups in flight at once (each one or two queries). `courierwatch check` starts every check
# together; a site resolver such as dnsmasq (Pi-hole) refuses beyond 150 concurrent forwards
# and a burst can overflow a UDP receive buffer, which would read as DNS failures.
MAX_LOOKUPS = 32
ATTEMPT_SECONDS = 2.0  # one query to one nameserver, as glibc's and dnspython's default
MAX_CACHED = 10_000  # names; beyond that the oldest entries go
_MAX_BACKOFF = 2.0  # between rounds over every nameserver
_MAX_STRAYS = 100  # datagrams that are not the answer, read before giving up on a server
# ICMP errors queued on a UDP socket (linux/in.h, in6.h: IP_RECVERR, IPV6_RECVERR), and the
# struct sock_extended_err they come in (its first field is the errno).
_RECVERR: Final = {
    socket.AF_INET: (socket.IPPROTO_IP, 11),
    socket.AF_INET6: (socket.IPPROTO_IPV6, 25),
}
_EXTENDED_ERR: Final = struct.Struct("=IBBBBII")
_MSG_ERRQUEUE: Final = 0x2000
# How telling a failure is, when the questions of one lookup failed differently.
_NAMED, _ANSWERED, _UNREACHED, _SILENT, _NO_RECORD = range(5)
_TRUNCATED: Final = "answer truncated over UDP, and the TCP retry to"


@dataclass(frozen=True, slots=True)
class Resolution:
    addresses: tuple[str, ...]  # A answers first, then AAAA
    cname_chain: tuple[str, ...]  # names followed, without the query name or trailing dots
    seconds: float | None  # time spent waiting for the resolver (busy probe left out); None: cached
    literal: bool = False  # the name is an address: nothing was looked up, nothing to judge


class _Failure(Exception):
    """Why one question got no addresses: the outcome, its reason (None: no record of the type,
    named once the types asked are known) and its rank (lowest: most telling)."""

    def __init__(self, outcome: pb.Outcome.ValueType, reason: str | None, rank: int) -> None:
        super().__init__(reason)
        self.outcome, self.reason, self.rank = outcome, reason, rank


Outcomes = list["Answer | _Failure"]
_Server = tuple[int, tuple[Any, ...]]  # (address family, socket address)


class Resolver:
    def __init__(
        self,
        nameservers: Sequence[str] = (),
        port: int = 53,
        *,
        clock: Callable[[], float] = time.monotonic,  # for TTLs; tests bring their own
    ) -> None:
        # Without nameservers: the same resolvers the site's devices use.
        servers = list(nameservers) or _system_nameservers()
        self._servers = [_sockaddr(server, port) for server in servers]
        self._clock = clock
        self._slots = asyncio.Semaphore(MAX_LOOKUPS)
        self._cache: dict[tuple[str, int], tuple[float, Answer]] = {}
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
        now = self._clock()
        found: Outcomes = []
        for rdtype in rdtypes:
            entry = self._cache.get((key, rdtype))
            if entry is None or entry[0] <= now:
                return None
            found.append(entry[1])
        return found

    def _store(self, key: str, rdtype: int, answer: Answer) -> None:
        if answer.ttl <= 0:
            return
        # Stored anew, an entry becomes the newest (dicts keep insertion order).
        self._cache.pop((key, rdtype), None)
        if len(self._cache) >= MAX_CACHED:
            now = self._clock()
            for stale in [k for k, (expires, _) in self._cache.items() if expires <= now]:
                del self._cache[stale]
            while len(self._cache) >= MAX_CACHED:
                del self._cache[next(iter(self._cache))]
        self._cache[key, rdtype] = (self._clock() + answer.ttl, answer)

    async def _lookup(
        self, key: str, rdtypes: Sequence[int], lifetime: float, *, cache: bool
    ) -> tuple[Outcomes, float]:
        """Every record type asked at once; the answers or failures, and how long the
        resolver took: as long as its slowest question."""
        async with self._slots:  # the wait for a slot is not the resolver's time
            deadline = asyncio.get_running_loop().time() + lifetime
            asked = await asyncio.gather(*(self._ask(key, t, deadline) for t in rdtypes))
        for rdtype, (outcome, _) in zip(rdtypes, asked, strict=True):
            if cache and isinstance(outcome, Answer):
                self._store(key, rdtype, outcome)
        return [outcome for outcome, _ in asked], max(seconds for _, seconds in asked)

    async def _ask(
        self, name: str, rdtype: int, deadline: float
    ) -> tuple[Answer | _Failure, float]:
        """One question to each nameserver in turn (a failed one is dropped) and round after
        round, until one answers or the deadline passes; and how long that took, less the time
        a reply waited for the busy probe (connection.ready)."""
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        asked = dnswire.question(name, rdtype)
        servers = list(self._servers)
        failed: list[_Failure] = []
        truncated: dict[_Server, None] = {}  # servers whose answer needed TCP, in order
        backoff = 0.1
        while servers:
            for server in list(servers):
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return _timed_out(truncated), time.perf_counter() - started
                try:
                    async with asyncio.timeout(min(ATTEMPT_SECONDS, remaining)):
                        outcome, lag = await _exchange(server, asked, truncated)
                    return outcome, time.perf_counter() - started - lag
                except TimeoutError:
                    continue  # silent: try the next one, and this one again next round
                except _Failure as failure:
                    failed.append(failure)
                    servers.remove(server)
            if servers:
                await asyncio.sleep(min(backoff, max(0.0, deadline - loop.time())))
                backoff = min(backoff * 2, _MAX_BACKOFF)
        return _every_server_failed(failed), time.perf_counter() - started


def _resolution(name: str, family: str, outcomes: Outcomes, seconds: float | None) -> Resolution:
    answers = [o for o in outcomes if isinstance(o, Answer)]
    addresses = tuple(a for answer in answers for a in answer.addresses)
    if addresses:
        chain = next((answer.chain for answer in answers if answer.chain), ())
        return Resolution(addresses, chain, seconds)
    failures = [o for o in outcomes if isinstance(o, _Failure)]
    raise _failure(name, family, failures)


def _failure(name: str, family: str, failures: list[_Failure]) -> CheckFailure:
    """The most telling failure of the lookups decides the outcome."""
    worst = min(failures, key=lambda f: f.rank)
    wanted = " or ".join(_TYPE_NAMES[t] for t in _RDTYPES[family])
    return CheckFailure(worst.outcome, f"{name}: {worst.reason or f'no {wanted} record'}")


def _timed_out(truncated: dict[_Server, None]) -> _Failure:
    if truncated:
        to = ", ".join(_label(server) for server in truncated)
        return _Failure(pb.OUTCOME_DNS_TIMEOUT, f"{_TRUNCATED} {to} got no answer in time", _SILENT)
    return _Failure(pb.OUTCOME_DNS_TIMEOUT, "no DNS answer in time", _SILENT)


def _every_server_failed(failed: list[_Failure]) -> _Failure:
    """A server that answered says more than one that could not be reached; the resolver is
    unreachable only when every nameserver is."""
    answered = [f for f in failed if f.outcome != pb.OUTCOME_DNS_UNREACHABLE]
    if answered:
        return answered[0]
    reasons = "; ".join(dict.fromkeys(f.reason or "" for f in failed))
    return _Failure(pb.OUTCOME_DNS_UNREACHABLE, reasons, _UNREACHED)


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


async def _exchange(
    server: _Server, asked: Question, truncated: dict[_Server, None]
) -> tuple[Answer | _Failure, float]:
    """The question over UDP, again over TCP if the answer was truncated; and the lag. Returns
    the answer, or a negative one (NXDOMAIN, no record) that ends the lookup; raises _Failure
    when this server failed, so that the next one is asked."""
    over_tcp = False
    try:
        reply, lag = await _udp(server, asked)
        parsed = dnswire.parse(reply, asked)
        if parsed.truncated:
            over_tcp = True
            truncated[server] = None
            parsed = dnswire.parse(await _tcp(server, asked), asked)
            if parsed.truncated:
                raise Malformed("truncated too")
    except (OSError, EOFError, Malformed) as error:
        raise _broken(server, error, over_tcp) from None
    return _interpret(parsed, asked, server), lag


_AFTER_CONNECT: Final = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


def _broken(server: _Server, error: Exception, over_tcp: bool) -> _Failure:
    """A server that could not be reached (an OSError: no route, port closed), or that broke
    the protocol (closed the connection without an answer, a malformed reply)."""
    port = server[1][1]
    if isinstance(error, ConnectionRefusedError):
        why = f"{'TCP' if over_tcp else 'UDP'} port {port} closed"
    elif isinstance(error, _AFTER_CONNECT):
        why = "reset the connection without an answer"
    elif isinstance(error, OSError):
        why = (error.strerror or str(error)).lower()
    elif isinstance(error, EOFError):
        why = "closed the connection without an answer"
    else:
        why = f"sent a malformed reply ({error})"
    # A reset comes from a server that took the connection: it was reached, and broke off.
    reached = isinstance(error, _AFTER_CONNECT) or not isinstance(error, OSError)
    outcome = pb.OUTCOME_PROTOCOL_ERROR if reached else pb.OUTCOME_DNS_UNREACHABLE
    rank = _ANSWERED if reached else _UNREACHED
    if over_tcp:
        return _Failure(outcome, f"{_TRUNCATED} {_label(server)} failed: {why}", rank)
    if reached:
        return _Failure(outcome, f"resolver {_label(server)} {why}", rank)
    return _Failure(outcome, f"resolver {_label(server)} unreachable: {why}", rank)


def _interpret(reply: Reply, asked: Question, server: _Server) -> Answer | _Failure:
    """The addresses, or why there are none; an rcode other than NOERROR or NXDOMAIN, and an
    answer whose chain leads nowhere, are this server's failure."""
    resolver = f"resolver {_label(server)}"
    if reply.rcode == dnswire.SERVFAIL:
        raise _Failure(pb.OUTCOME_DNS_SERVFAIL, f"{resolver} failed (SERVFAIL)", _ANSWERED)
    if reply.rcode == dnswire.REFUSED:
        raise _Failure(pb.OUTCOME_DNS_REFUSED, f"{resolver} refused the query (REFUSED)", _ANSWERED)
    if reply.rcode not in (dnswire.NOERROR, dnswire.NXDOMAIN):
        rcode = dnswire.RCODE_NAMES.get(reply.rcode, f"rcode {reply.rcode}")
        raise _Failure(pb.OUTCOME_PROTOCOL_ERROR, f"{resolver} answered {rcode}", _ANSWERED)
    try:
        answer = dnswire.follow(reply.records, asked)
    except ChainError as error:
        # The name exists, but its chain never reaches an address a device could use.
        reason = f"{error} in the answer of {resolver}"
        raise _Failure(pb.OUTCOME_DNS_NO_ADDRESS, reason, _ANSWERED) from None
    if reply.rcode == dnswire.NXDOMAIN:
        if answer.addresses:
            reason = f"{resolver} sent addresses with NXDOMAIN"
            raise _Failure(pb.OUTCOME_PROTOCOL_ERROR, reason, _ANSWERED)
        return _Failure(pb.OUTCOME_DNS_NXDOMAIN, "no such name", _NAMED)
    return answer if answer.addresses else _Failure(pb.OUTCOME_DNS_NO_ADDRESS, None, _NO_RECORD)


def _label(server: _Server) -> str:
    _, address = server
    host, port = address[0], address[1]
    return host if port == 53 else join_host_port(host, port)


async def _udp(server: _Server, asked: Question) -> tuple[bytes, float]:
    """Send from a fresh connected socket (a random source port each time, and the kernel
    drops datagrams from anyone else); skip replies to other questions."""
    family, address = server
    lag = 0.0
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        stamp_arrivals(sock)
        sock.setsockopt(*_RECVERR[family], 1)
        sock.connect(address)
        await asyncio.get_running_loop().sock_sendall(sock, asked.wire)
        for _ in range(_MAX_STRAYS):
            try:
                reply = sock.recv(65535)
            except BlockingIOError:
                _raise_queued_error(sock)
                lag += await ready(sock)
                continue
            if dnswire.after_question(reply, asked) > 0:
                return reply, lag
    raise Malformed(f"only datagrams that answer no question of ours, {_MAX_STRAYS} of them")


def _raise_queued_error(sock: socket.socket) -> None:
    """Raise the ICMP error (port or host unreachable) queued for the socket, if any.

    The socket's pending error alone is not enough: connection.ready peeks at arriving data,
    and a peek reports and clears it, so the recv after it would only find nothing to read
    (and the lookup would time out). The error queue keeps it until read. It also carries
    what a router says (host, network unreachable), which the pending error leaves out."""
    try:
        _, ancillary, _, _ = sock.recvmsg(1, 512, _MSG_ERRQUEUE)
    except BlockingIOError:
        return
    for level, kind, data in ancillary:
        if (level, kind) in _RECVERR.values() and len(data) >= _EXTENDED_ERR.size:
            code = _EXTENDED_ERR.unpack_from(data)[0]
            raise OSError(code, os.strerror(code))


async def _tcp(server: _Server, asked: Question) -> bytes:
    loop = asyncio.get_running_loop()
    family, address = server
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setblocking(False)
        await loop.sock_connect(sock, address)
        await loop.sock_sendall(sock, len(asked.wire).to_bytes(2, "big") + asked.wire)
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
