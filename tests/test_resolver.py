"""The probe's stub resolver (courierwatch.probe.net.resolver) against real servers on
127.0.0.1: its cache, lookups joined in flight, the TCP fallback on truncated answers, bad
replies, and outcomes that say what happened to the resolver."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import socket
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rrset
import pytest

from courierwatch.probe.failures import CheckFailure
from courierwatch.probe.net import resolver as resolver_module
from courierwatch.probe.net.resolver import Resolver
from courierwatch.v1 import courierwatch_pb2 as pb
from fakeapple._streams import LOCALHOST, StreamServer
from fakeapple.dns import FakeDNS, closed_port

COURIER = "36-courier.push.apple.com"
EDGE = "pop-eur-benelux-courier.push-apple.com.akadns.net"
OTHER = "127.0.0.2"  # a second nameserver, on the same port
LIFETIME = 2.0
SHORT = 0.3  # for lookups that are meant to time out
BIND_ATTEMPTS = 10
MAX_TCP_MESSAGES = 100

Rrset = tuple[str, int, str, list[str]]
Handler = Callable[[dns.message.Message], Awaitable[list[bytes]]]


class Clock:
    """The resolver's clock for TTLs, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def respond(
    query: dns.message.Message,
    answer: Sequence[Rrset] = (),
    *,
    rcode: dns.rcode.Rcode = dns.rcode.NOERROR,
    truncated: bool = False,
) -> bytes:
    response = dns.message.make_response(query)
    response.flags |= dns.flags.RA | (dns.flags.TC if truncated else 0)
    response.set_rcode(rcode)
    for owner, ttl, rdtype, values in answer:
        name = dns.name.from_text(owner)
        response.answer.append(dns.rrset.from_text_list(name, ttl, "IN", rdtype, values))
    return response.to_wire(want_shuffle=False)


def courier_chain(ttl: int = 60) -> list[Rrset]:
    return [
        (COURIER, ttl, "CNAME", ["36.courier-push-apple.com.akadns.net."]),
        ("36.courier-push-apple.com.akadns.net", ttl, "CNAME", [f"{EDGE}."]),
        (EDGE, ttl, "A", ["17.252.44.7", "17.252.44.38"]),
    ]


# --- small servers ---------------------------------------------------------------------------


def bind_pair(host: str = LOCALHOST, port: int = 0) -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket bound to one port (free, unless given) on `host`; the TCP one is
    not listening, so a connection to it is refused and nobody else can take the port."""
    for _ in range(BIND_ATTEMPTS if port == 0 else 1):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            udp.bind((host, port))
            tcp.bind(udp.getsockname())
        except OSError:
            udp.close()
            tcp.close()
            continue
        return udp, tcp
    raise RuntimeError(f"no UDP and TCP port pair on {host} (asked for port {port})")


class _TCPHalf(StreamServer):
    def __init__(self, scripted: Scripted) -> None:
        super().__init__(scripted.host)
        self._scripted = scripted

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._scripted.tcp is not None
        for _ in range(MAX_TCP_MESSAGES):
            length = int.from_bytes(await reader.readexactly(2), "big")
            query = dns.message.from_wire(await reader.readexactly(length))
            self._scripted.seen.append(("tcp", str(query.question[0].name)))
            # Until the client goes away: a handler that never answers must not hold up stop().
            answering = asyncio.ensure_future(self._scripted.tcp(query))
            gone = asyncio.ensure_future(reader.read(1))
            await asyncio.wait({answering, gone}, return_when=asyncio.FIRST_COMPLETED)
            gone.cancel()
            if not answering.done():
                answering.cancel()
                return
            replies = answering.result()
            if not replies:
                return  # close without an answer
            for reply in replies:
                writer.write(len(reply).to_bytes(2, "big") + reply)
            await writer.drain()


@dataclass
class Scripted:
    """UDP and TCP on one port, each answering a query with what its handler returns (several
    datagrams, or none). Without a TCP handler the TCP port refuses connections."""

    udp: Handler
    tcp: Handler | None = None
    host: str = LOCALHOST
    port: int = 0  # 0: a free one
    seen: list[tuple[str, str]] = field(default_factory=list)  # (transport, query name)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def count(self, transport: str) -> int:
        return sum(1 for t, _ in self.seen if t == transport)

    async def _answer_udp(
        self, transport: asyncio.DatagramTransport, data: bytes, addr: object
    ) -> None:
        query = dns.message.from_wire(data)
        self.seen.append(("udp", str(query.question[0].name)))
        for reply in await self.udp(query):
            transport.sendto(reply, addr)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Scripted]:
        loop = asyncio.get_running_loop()
        udp, tcp = bind_pair(self.host, self.port)
        self.port = udp.getsockname()[1]
        transport, udp_half = await loop.create_datagram_endpoint(lambda: _UDPHalf(self), sock=udp)
        tcp_half = _TCPHalf(self)
        try:
            if self.tcp is not None:
                tcp.close()
                await tcp_half._listen(self.port)
            yield self
        finally:
            for task in list(self._tasks):
                task.cancel()
            transport.close()
            await udp_half.closed  # the port is free again once this returns
            tcp.close()
            await tcp_half.stop()


class _UDPHalf(asyncio.DatagramProtocol):
    def __init__(self, scripted: Scripted) -> None:
        self._scripted = scripted
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | bytes, int]) -> None:
        scripted = self._scripted
        task = asyncio.get_running_loop().create_task(
            scripted._answer_udp(self._transport, data, addr)
        )
        scripted._tasks.add(task)
        task.add_done_callback(scripted._tasks.discard)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set_result(None)


def replies(*builds: Callable[[dns.message.Message], bytes]) -> Handler:
    async def handler(query: dns.message.Message) -> list[bytes]:
        return [build(query) for build in builds]

    return handler


async def never(query: dns.message.Message) -> list[bytes]:
    await asyncio.Event().wait()  # cancelled when the server stops
    return []


async def close_at_once(query: dns.message.Message) -> list[bytes]:
    return []


def truncated_reply(query: dns.message.Message) -> bytes:
    return respond(query, truncated=True)


def full_courier_reply(query: dns.message.Message) -> bytes:
    return respond(query, courier_chain())


async def lookup_failure(
    resolver: Resolver, name: str = COURIER, lifetime: float = LIFETIME
) -> CheckFailure:
    with pytest.raises(CheckFailure) as raised:
        await resolver.resolve(name, lifetime, "ipv4", fresh=True)
    return raised.value


@pytest.fixture
async def fake() -> AsyncIterator[FakeDNS]:
    async with FakeDNS() as server:
        server.courier_chain(36, "eu-central", "17.252.44.7", ttl=30)
        yield server


# --- the cache -------------------------------------------------------------------------------


async def test_a_fresh_answer_serves_later_lookups_within_its_ttl(fake: FakeDNS) -> None:
    clock = Clock()
    resolver = Resolver([LOCALHOST], fake.port, clock=clock)
    first = await resolver.resolve(COURIER, LIFETIME, "ipv4", fresh=True)
    assert first.addresses == ("17.252.44.7",) and first.seconds is not None
    clock.now += 29.9
    again = await resolver.resolve(COURIER.upper() + ".", LIFETIME, "ipv4")
    assert (again.addresses, again.cname_chain) == (first.addresses, first.cname_chain)
    assert again.seconds is None  # answered from the cache
    assert fake.query_count(COURIER) == 1  # no second query reached the server


async def test_a_cached_answer_expires_with_its_ttl(fake: FakeDNS) -> None:
    clock = Clock()
    resolver = Resolver([LOCALHOST], fake.port, clock=clock)
    await resolver.resolve(COURIER, LIFETIME, "ipv4", fresh=True)
    clock.now += 30  # the least TTL along the chain
    expired = await resolver.resolve(COURIER, LIFETIME, "ipv4")
    assert expired.seconds is not None and fake.query_count(COURIER) == 2
    # A lookup that was not fresh is not cached: the next one asks again.
    await resolver.resolve(COURIER, LIFETIME, "ipv4")
    assert fake.query_count(COURIER) == 3


async def test_the_least_ttl_along_the_chain_decides(fake: FakeDNS) -> None:
    fake.add_cname("short.apple.com", "edge.apple.com", ttl=5)
    fake.add_a("edge.apple.com", "17.1.1.1", ttl=300)
    clock = Clock()
    resolver = Resolver([LOCALHOST], fake.port, clock=clock)
    await resolver.resolve("short.apple.com", LIFETIME, "ipv4", fresh=True)
    clock.now += 4
    assert (await resolver.resolve("short.apple.com", LIFETIME, "ipv4")).seconds is None
    clock.now += 1
    assert (await resolver.resolve("short.apple.com", LIFETIME, "ipv4")).seconds is not None
    assert fake.query_count("short.apple.com") == 2


async def test_an_answer_with_ttl_zero_is_never_cached(fake: FakeDNS) -> None:
    fake.add_a("zero.apple.com", "17.1.1.1", ttl=0)
    resolver = Resolver([LOCALHOST], fake.port, clock=Clock())
    await resolver.resolve("zero.apple.com", LIFETIME, "ipv4", fresh=True)
    await resolver.resolve("zero.apple.com", LIFETIME, "ipv4")
    assert fake.query_count("zero.apple.com") == 2


async def test_both_families_are_cached_apart(fake: FakeDNS) -> None:
    fake.add_a("dual.apple.com", "17.1.1.1")
    fake.add_aaaa("dual.apple.com", "2620:149:a44::1")
    resolver = Resolver([LOCALHOST], fake.port, clock=Clock())
    both = await resolver.resolve("dual.apple.com", LIFETIME, fresh=True)
    assert both.addresses == ("17.1.1.1", "2620:149:a44::1")
    v6 = await resolver.resolve("dual.apple.com", LIFETIME, "ipv6")
    assert (v6.addresses, v6.seconds) == (("2620:149:a44::1",), None)
    assert (
        fake.query_count("dual.apple.com", "A"),
        fake.query_count("dual.apple.com", "AAAA"),
    ) == (1, 1)


def names(count: int) -> list[str]:
    return [f"host{i}.apple.com" for i in range(count)]


def small_cache(
    fake: FakeDNS, monkeypatch: pytest.MonkeyPatch, ttls: tuple[int, ...] = (300,) * 4
) -> tuple[Resolver, Clock]:
    """A resolver whose cache holds 3 entries, and host0..host3 in the zone with these TTLs."""
    monkeypatch.setattr(resolver_module, "MAX_CACHED", 3)
    for i, (name, ttl) in enumerate(zip(names(len(ttls)), ttls, strict=True)):
        fake.add_a(name, f"17.0.0.{i + 1}", ttl=ttl)
    clock = Clock()
    return Resolver([LOCALHOST], fake.port, clock=clock), clock


async def test_beyond_max_cached_the_oldest_entry_goes(
    fake: FakeDNS, monkeypatch: pytest.MonkeyPatch
) -> None:
    resolver, _ = small_cache(fake, monkeypatch)
    for name in names(4):
        await resolver.resolve(name, LIFETIME, "ipv4", fresh=True)
    for name in names(4)[1:]:
        assert (await resolver.resolve(name, LIFETIME, "ipv4")).seconds is None, name
    assert (await resolver.resolve("host0.apple.com", LIFETIME, "ipv4")).seconds is not None
    assert [fake.query_count(name) for name in names(4)] == [2, 1, 1, 1]


async def test_expired_entries_go_before_live_ones(
    fake: FakeDNS, monkeypatch: pytest.MonkeyPatch
) -> None:
    resolver, clock = small_cache(fake, monkeypatch, ttls=(300, 10, 300, 300))
    for name in names(3):
        await resolver.resolve(name, LIFETIME, "ipv4", fresh=True)
    clock.now += 10  # host1 expires
    await resolver.resolve("host3.apple.com", LIFETIME, "ipv4", fresh=True)
    for name in ("host0.apple.com", "host2.apple.com", "host3.apple.com"):
        assert (await resolver.resolve(name, LIFETIME, "ipv4")).seconds is None, name


async def test_an_entry_stored_anew_is_the_newest(
    fake: FakeDNS, monkeypatch: pytest.MonkeyPatch
) -> None:
    resolver, _ = small_cache(fake, monkeypatch)

    async def cached(name: str) -> bool:
        return (await resolver.resolve(name, LIFETIME, "ipv4")).seconds is None

    for name in [*names(3), "host1.apple.com"]:
        await resolver.resolve(name, LIFETIME, "ipv4", fresh=True)
    # Refreshing host1 replaced its entry: nothing else had to go.
    assert [await cached(name) for name in names(3)] == [True, True, True]
    await resolver.resolve("host3.apple.com", LIFETIME, "ipv4", fresh=True)
    # host1 is newer than host2 now; host0 is the oldest and went.
    assert [await cached(name) for name in names(4)[1:]] == [True, True, True]
    assert not await cached("host0.apple.com")


async def test_lookups_of_one_name_in_flight_share_one_query(fake: FakeDNS) -> None:
    resolver = Resolver([LOCALHOST], fake.port, clock=Clock())
    # Both start before the first one's query goes out: the second joins it.
    first, second = await asyncio.gather(
        resolver.resolve(COURIER, LIFETIME, "ipv4"), resolver.resolve(COURIER, LIFETIME, "ipv4")
    )
    assert first.addresses == second.addresses == ("17.252.44.7",)
    assert first.seconds is not None and second.seconds is not None
    assert fake.query_count(COURIER) == 1
    # A fresh lookup never joins: it measures the resolver itself.
    await asyncio.gather(
        resolver.resolve(COURIER, LIFETIME, "ipv4"),
        resolver.resolve(COURIER, LIFETIME, "ipv4", fresh=True),
    )
    assert fake.query_count(COURIER) == 3


# --- TCP after a truncated answer ------------------------------------------------------------


async def test_a_truncated_answer_is_asked_again_over_tcp(fake: FakeDNS) -> None:
    fake.truncate(COURIER)
    resolver = Resolver([LOCALHOST], fake.port)
    found = await resolver.resolve(COURIER, LIFETIME, "ipv4", fresh=True)
    assert found.addresses == ("17.252.44.7",)
    assert found.cname_chain[-1] == "eu-central-courier-4.push-apple.com.akadns.net"
    assert (fake.transports["udp"], fake.transports["tcp"]) == (1, 1)


async def test_an_answer_too_big_for_udp_comes_over_tcp(fake: FakeDNS) -> None:
    many = [f"17.1.{i // 250}.{i % 250 + 1}" for i in range(60)]  # 60 A records: > 512 bytes
    fake.add_a("big.example.com", *many)
    found = await Resolver([LOCALHOST], fake.port).resolve("big.example.com", LIFETIME, "ipv4")
    assert sorted(found.addresses) == sorted(many)  # the fake shuffles an RRset, as servers do
    assert fake.transports["tcp"] == 1


def cut_mid_record(query: dns.message.Message) -> bytes:
    """TC set, and the message cut short inside its answer, as some servers truncate."""
    wire = bytearray(respond(query, courier_chain()))
    wire[2] |= dns.flags.TC >> 8
    return bytes(wire[:-5])


async def test_a_truncated_answer_cut_anywhere_still_goes_to_tcp() -> None:
    scripted = Scripted(udp=replies(cut_mid_record), tcp=replies(full_courier_reply))
    async with scripted.running():
        found = await Resolver([LOCALHOST], scripted.port).resolve(COURIER, LIFETIME, "ipv4")
    assert found.addresses == ("17.252.44.7", "17.252.44.38")
    assert (scripted.count("udp"), scripted.count("tcp")) == (1, 1)


async def test_truncated_with_tcp_refused_says_so() -> None:
    scripted = Scripted(udp=replies(truncated_reply))  # TCP: bound, not listening
    async with scripted.running():
        failure = await lookup_failure(Resolver([LOCALHOST], scripted.port))
    port = scripted.port
    assert failure.outcome == pb.OUTCOME_DNS_UNREACHABLE
    assert failure.detail == (
        f"{COURIER}: answer truncated over UDP, and the TCP retry to 127.0.0.1:{port} failed: "
        f"TCP port {port} closed"
    )


async def test_truncated_with_tcp_silent_is_a_timeout_that_says_so() -> None:
    scripted = Scripted(udp=replies(truncated_reply), tcp=never)
    async with scripted.running():
        failure = await lookup_failure(Resolver([LOCALHOST], scripted.port), lifetime=SHORT)
    assert failure.outcome == pb.OUTCOME_DNS_TIMEOUT
    assert failure.detail == (
        f"{COURIER}: answer truncated over UDP, and the TCP retry to 127.0.0.1:{scripted.port} "
        "got no answer in time"
    )
    assert scripted.count("tcp") >= 1


@pytest.mark.parametrize(
    ("tcp", "why"),
    [
        (close_at_once, "closed the connection without an answer"),
        (replies(truncated_reply), "sent a malformed reply (truncated too)"),
        (
            replies(lambda q: respond(q, courier_chain()) + b"\0"),
            "sent a malformed reply (more records than announced)",
        ),
    ],
)
async def test_truncated_with_tcp_broken_is_a_protocol_error(tcp: Handler, why: str) -> None:
    scripted = Scripted(udp=replies(truncated_reply), tcp=tcp)
    async with scripted.running():
        failure = await lookup_failure(Resolver([LOCALHOST], scripted.port))
    assert failure.outcome == pb.OUTCOME_PROTOCOL_ERROR
    assert failure.detail == (
        f"{COURIER}: answer truncated over UDP, and the TCP retry to 127.0.0.1:{scripted.port} "
        f"failed: {why}"
    )


# --- replies that are not the answer ---------------------------------------------------------


def with_id(query: dns.message.Message, change: Callable[[bytearray], None]) -> bytes:
    wire = bytearray(respond(query, courier_chain()))
    change(wire)
    return bytes(wire)


def wrong_id(query: dns.message.Message) -> bytes:
    return with_id(
        query, lambda w: w.__setitem__(slice(0, 2), ((query.id ^ 0x5A5A).to_bytes(2, "big")))
    )


def qr_unset(query: dns.message.Message) -> bytes:
    return with_id(query, lambda w: w.__setitem__(2, w[2] & 0x7F))


def other_question(query: dns.message.Message) -> bytes:
    other = dns.message.make_query("37-courier.push.apple.com", "A")
    other.id = query.id
    return respond(other, [("37-courier.push.apple.com", 60, "A", ["17.1.1.1"])])


@pytest.mark.parametrize("stray", [wrong_id, qr_unset, other_question])
async def test_datagrams_that_answer_another_question_are_skipped(
    stray: Callable[[dns.message.Message], bytes],
) -> None:
    scripted = Scripted(udp=replies(stray, stray, full_courier_reply))
    async with scripted.running():
        found = await Resolver([LOCALHOST], scripted.port).resolve(COURIER, LIFETIME, "ipv4")
    assert found.addresses == ("17.252.44.7", "17.252.44.38")


async def test_only_strays_are_a_protocol_error_not_a_hang() -> None:
    limit = resolver_module._MAX_STRAYS
    scripted = Scripted(udp=replies(*[wrong_id] * limit))
    async with scripted.running():
        failure = await lookup_failure(Resolver([LOCALHOST], scripted.port))
    assert failure.outcome == pb.OUTCOME_PROTOCOL_ERROR
    assert f"only datagrams that answer no question of ours, {limit} of them" in failure.detail


def counts_lie(query: dns.message.Message) -> bytes:
    wire = bytearray(respond(query, courier_chain()))
    wire[7] += 1  # ANCOUNT: one more than sent
    return bytes(wire)


async def test_a_malformed_reply_drops_that_server_and_the_next_one_answers() -> None:
    bad = Scripted(udp=replies(counts_lie))
    async with (
        bad.running(),
        Scripted(replies(full_courier_reply), host=OTHER, port=bad.port).running() as good,
    ):
        found = await Resolver([LOCALHOST, OTHER], bad.port).resolve(COURIER, LIFETIME, "ipv4")
        assert (bad.count("udp"), good.count("udp")) == (1, 1)
        alone = await lookup_failure(Resolver([LOCALHOST], bad.port))
    assert found.addresses == ("17.252.44.7", "17.252.44.38")
    assert alone.outcome == pb.OUTCOME_PROTOCOL_ERROR
    assert alone.detail == (
        f"{COURIER}: resolver 127.0.0.1:{bad.port} sent a malformed reply (fewer records than "
        "announced)"
    )


# --- what happened to the resolver -----------------------------------------------------------


async def test_a_closed_port_is_an_unreachable_resolver_not_a_servfail() -> None:
    with closed_port() as port:
        failure = await lookup_failure(Resolver([LOCALHOST], port))
    assert failure.outcome == pb.OUTCOME_DNS_UNREACHABLE
    assert (
        failure.detail
        == f"{COURIER}: resolver 127.0.0.1:{port} unreachable: UDP port {port} closed"
    )


def _closed_ipv6_port() -> int | None:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as udp:
            udp.bind(("::1", 0))
            return int(udp.getsockname()[1])
    except OSError:
        return None  # no IPv6 loopback here


async def test_a_closed_port_over_ipv6_is_unreachable_too() -> None:
    port = _closed_ipv6_port()
    if port is None:
        pytest.skip("no ::1 on this host")
    failure = await lookup_failure(Resolver(["::1"], port))
    assert (failure.outcome, failure.detail) == (
        pb.OUTCOME_DNS_UNREACHABLE,
        f"{COURIER}: resolver [::1]:{port} unreachable: UDP port {port} closed",
    )


async def test_unreachable_means_every_nameserver() -> None:
    with closed_port() as port:
        both = await lookup_failure(Resolver([LOCALHOST, OTHER], port))
        async with Scripted(never, host=OTHER, port=port).running():
            one_silent = await lookup_failure(Resolver([LOCALHOST, OTHER], port), lifetime=SHORT)
        async with Scripted(replies(full_courier_reply), host=OTHER, port=port).running():
            found = await Resolver([LOCALHOST, OTHER], port).resolve(COURIER, LIFETIME, "ipv4")
    assert both.outcome == pb.OUTCOME_DNS_UNREACHABLE
    assert both.detail == (
        f"{COURIER}: resolver 127.0.0.1:{port} unreachable: UDP port {port} closed; "
        f"resolver 127.0.0.2:{port} unreachable: UDP port {port} closed"
    )
    # Packets that vanish are a timeout: that resolver may only be slow.
    assert (one_silent.outcome, one_silent.detail) == (
        pb.OUTCOME_DNS_TIMEOUT,
        f"{COURIER}: no DNS answer in time",
    )
    assert found.addresses == ("17.252.44.7", "17.252.44.38")


async def test_a_silent_resolver_is_a_timeout() -> None:
    async with Scripted(never).running() as scripted:
        failure = await lookup_failure(Resolver([LOCALHOST], scripted.port), lifetime=SHORT)
    assert (failure.outcome, failure.detail) == (
        pb.OUTCOME_DNS_TIMEOUT,
        f"{COURIER}: no DNS answer in time",
    )


@pytest.mark.parametrize(
    ("rcode", "outcome", "says"),
    [
        (dns.rcode.SERVFAIL, pb.OUTCOME_DNS_SERVFAIL, "failed (SERVFAIL)"),
        (dns.rcode.REFUSED, pb.OUTCOME_DNS_REFUSED, "refused the query (REFUSED)"),
        (dns.rcode.NOTIMP, pb.OUTCOME_PROTOCOL_ERROR, "answered NOTIMP"),
        (dns.rcode.FORMERR, pb.OUTCOME_PROTOCOL_ERROR, "answered FORMERR"),
    ],
)
async def test_a_failing_rcode_is_named(rcode: dns.rcode.Rcode, outcome: int, says: str) -> None:
    async with Scripted(replies(lambda q: respond(q, rcode=rcode))).running() as scripted:
        failure = await lookup_failure(Resolver([LOCALHOST], scripted.port))
    assert (failure.outcome, failure.detail) == (
        outcome,
        f"{COURIER}: resolver 127.0.0.1:{scripted.port} {says}",
    )


async def test_an_answer_from_another_nameserver_beats_one_that_failed() -> None:
    async with (
        Scripted(replies(lambda q: respond(q, rcode=dns.rcode.REFUSED))).running() as refusing,
        Scripted(replies(full_courier_reply), host=OTHER, port=refusing.port).running(),
    ):
        found = await Resolver([LOCALHOST, OTHER], refusing.port).resolve(COURIER, LIFETIME, "ipv4")
    assert found.addresses == ("17.252.44.7", "17.252.44.38")


async def test_a_resolver_that_answered_says_more_than_one_unreachable() -> None:
    with closed_port() as port:
        servfail = replies(lambda q: respond(q, rcode=dns.rcode.SERVFAIL))
        async with Scripted(servfail, host=OTHER, port=port).running():
            failure = await lookup_failure(Resolver([LOCALHOST, OTHER], port))
    assert (failure.outcome, failure.detail) == (
        pb.OUTCOME_DNS_SERVFAIL,
        f"{COURIER}: resolver 127.0.0.2:{port} failed (SERVFAIL)",
    )


def loop_reply(query: dns.message.Message) -> bytes:
    return respond(
        query,
        [
            (COURIER, 60, "CNAME", ["36.courier-push-apple.com.akadns.net."]),
            ("36.courier-push-apple.com.akadns.net", 60, "CNAME", [f"{COURIER}."]),
        ],
    )


def long_chain_reply(query: dns.message.Message) -> bytes:
    hops = [f"hop{i}.example.com" for i in range(resolver_module.dnswire.MAX_CHAIN + 1)]
    chain = [(COURIER, 60, "CNAME", [f"{hops[0]}."])]
    chain += [(a, 60, "CNAME", [f"{b}."]) for a, b in itertools.pairwise(hops)]
    return respond(query, [*chain, (hops[-1], 60, "A", ["17.1.1.1"])])


@pytest.mark.parametrize(
    ("build", "says"),
    [
        (loop_reply, f"CNAME loop {COURIER} -> 36.courier-push-apple.com.akadns.net -> {COURIER}"),
        (long_chain_reply, "CNAME chain longer than 16"),
    ],
)
async def test_chains_that_lead_nowhere_say_why(
    build: Callable[[dns.message.Message], bytes], says: str
) -> None:
    async with Scripted(replies(build)).running() as scripted:
        failure = await lookup_failure(Resolver([LOCALHOST], scripted.port))
    assert failure.outcome == pb.OUTCOME_DNS_NO_ADDRESS
    assert (
        failure.detail == f"{COURIER}: {says} in the answer of resolver 127.0.0.1:{scripted.port}"
    )


async def test_the_most_telling_question_decides(fake: FakeDNS) -> None:
    fake.add_a("v4only.apple.com", "17.1.1.1")
    resolver = Resolver([LOCALHOST], fake.port)
    found = await resolver.resolve("v4only.apple.com", LIFETIME)  # AAAA: none, A: an address
    assert found.addresses == ("17.1.1.1",)
    with pytest.raises(CheckFailure) as raised:
        await resolver.resolve("v4only.apple.com", LIFETIME, "ipv6")
    assert (raised.value.outcome, raised.value.detail) == (
        pb.OUTCOME_DNS_NO_ADDRESS,
        "v4only.apple.com: no AAAA record",
    )
    fake.nxdomain("gone.apple.com")
    with pytest.raises(CheckFailure) as raised:
        await resolver.resolve("gone.apple.com", LIFETIME)
    assert (raised.value.outcome, raised.value.detail) == (
        pb.OUTCOME_DNS_NXDOMAIN,
        "gone.apple.com: no such name",
    )


def _checksum(data: bytes) -> int:
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))  # ICMP messages here are of even size
    for _ in range(2):  # folding twice absorbs every carry
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def icmp_unreachable(code: int, client: tuple[str, int], server: tuple[str, int]) -> bytes:
    """ICMP destination unreachable (code: 1 host, 3 port, 13 filtered) about a datagram from
    client to server, as the server's host or a router on the way sends it."""
    addresses = socket.inet_aton(client[0]) + socket.inet_aton(server[0])
    inner = struct.pack("!BBHHHBBH", 0x45, 0, 28, 0, 0, 64, socket.IPPROTO_UDP, 0) + addresses
    inner += struct.pack("!HHHH", client[1], server[1], 8, 0)
    message = struct.pack("!BBHI", 3, code, 0, 0) + inner
    return message[:2] + struct.pack("!H", _checksum(message)) + message[4:]


@pytest.mark.root(reason="sending ICMP from a raw socket")
@pytest.mark.skipif(os.geteuid() != 0, reason="sending ICMP from a raw socket needs root")
@pytest.mark.parametrize(
    ("code", "says"),
    [(3, "UDP port {port} closed"), (1, "no route to host"), (13, "no route to host")],
)
async def test_an_icmp_error_that_arrives_while_waiting_is_unreachable(
    code: int, says: str
) -> None:
    """Across a network the ICMP error comes after the probe began to wait for the answer (on
    loopback it is there before): the wait's peek at the data must not hide it."""
    loop = asyncio.get_running_loop()
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sent: list[bytes] = []

    class Unreachable(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str | bytes, int]) -> None:
            client = (str(addr[0]), int(addr[1]))
            sent.append(data)
            raw.sendto(icmp_unreachable(code, client, (LOCALHOST, port)), (client[0], 0))

    with raw:
        transport, _ = await loop.create_datagram_endpoint(Unreachable, local_addr=(LOCALHOST, 0))
        port = transport.get_extra_info("sockname")[1]
        try:
            failure = await lookup_failure(Resolver([LOCALHOST], port), lifetime=SHORT)
        finally:
            transport.close()
    assert sent  # the query reached the fake router before its error came back
    assert failure.outcome == pb.OUTCOME_DNS_UNREACHABLE, failure.detail
    assert (
        failure.detail
        == f"{COURIER}: resolver 127.0.0.1:{port} unreachable: {says.format(port=port)}"
    )


NO_ROUTE = """
import asyncio
from courierwatch.probe.failures import CheckFailure
from courierwatch.probe.net.resolver import Resolver

async def main() -> None:
    try:
        await Resolver(["198.18.0.53"]).resolve("courier.push.apple.com", 2.0, "ipv4")
    except CheckFailure as failure:
        print(failure.outcome, failure.detail)

asyncio.run(main())
"""


@pytest.mark.root(reason="a network namespace of its own")
@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="a network namespace of its own needs root and unshare",
)
def test_no_route_to_the_resolver_is_unreachable() -> None:
    """In a network namespace with no interface up, the nameserver has no route at all."""
    done = subprocess.run(
        ["unshare", "--net", sys.executable, "-c", NO_ROUTE],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == (
        f"{pb.OUTCOME_DNS_UNREACHABLE} courier.push.apple.com: resolver 198.18.0.53 unreachable: "
        "network is unreachable"
    )
