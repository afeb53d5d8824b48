"""FakeDNS: a DNS server on 127.0.0.1 (UDP and TCP, one port) answering from a zone the test
fills in, shaped like a recursive resolver's answers (whole CNAME chain in the answer section)."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import ipaddress
import socket
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import cast

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from ._streams import LOCALHOST, Service, StreamServer

MAX_CHAIN = 16  # CNAME hops followed before answering SERVFAIL, as resolvers cap loops
MAX_TCP_MESSAGES = 1_000  # queries served on one TCP connection
BIND_ATTEMPTS = 10  # the TCP half of the port can be taken between the two binds
NEGATIVE_TTL = 30
UDP_DEFAULT_SIZE = 512  # RFC 1035 limit without EDNS


class Behaviour(enum.Enum):
    NXDOMAIN = "nxdomain"
    SERVFAIL = "servfail"
    REFUSED = "refused"
    DROP = "drop"


_FAILURE_RCODES = {Behaviour.SERVFAIL: dns.rcode.SERVFAIL, Behaviour.REFUSED: dns.rcode.REFUSED}


@dataclass
class _Node:
    cname: tuple[dns.name.Name, int] | None = None
    # rdtype -> (ttl, rdata texts in insertion order)
    records: dict[dns.rdatatype.RdataType, tuple[int, list[str]]] = field(default_factory=dict)


def _name(text: str) -> dns.name.Name:
    return dns.name.from_text(text)  # relative text is made absolute: "a.b" == "a.b."


def _key(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower()


class FakeDNS(Service):
    """DNS server for tests. Unknown names are NXDOMAIN; names can also be made to SERVFAIL or
    be REFUSED, never answer (`drop`, for timeouts) or answer UDP truncated (`truncate`, for
    TCP fallback).

    `queries` counts received questions by (name without final dot, lower case; type), e.g.
    `dns.queries["1-courier.push.apple.com", "A"]`.
    """

    def __init__(self, host: str = LOCALHOST) -> None:
        self.host = host
        self.queries: Counter[tuple[str, str]] = Counter()
        self.transports: Counter[str] = Counter()  # "udp"/"tcp" -> queries received
        self._nodes: dict[dns.name.Name, _Node] = {}
        self._behaviours: dict[dns.name.Name, Behaviour] = {}
        self._truncated: set[dns.name.Name] = set()
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp = _DNSStreamServer(self)

    # -- zone -------------------------------------------------------------------------------

    def _node(self, name: str) -> _Node:
        owner = _name(name)
        self._behaviours.pop(owner, None)  # giving a name data undoes nxdomain/servfail/drop
        return self._nodes.setdefault(owner, _Node())

    def _add(self, name: str, rdtype: dns.rdatatype.RdataType, values: list[str], ttl: int) -> None:
        node = self._node(name)
        if node.cname is not None:
            raise ValueError(f"{name} has a CNAME and cannot hold other data")
        # Parse now so a typo fails in the test that wrote it, not as a SERVFAIL later.
        for value in values:
            dns.rdata.from_text(dns.rdataclass.IN, rdtype, value)
        _, existing = node.records.get(rdtype, (ttl, []))
        node.records[rdtype] = (ttl, existing + [v for v in values if v not in existing])

    def add_a(self, name: str, *addresses: str, ttl: int = 60) -> None:
        """Add IPv4 addresses to `name` (accumulates; `remove` to start over)."""
        self._add(name, dns.rdatatype.A, [str(ipaddress.IPv4Address(a)) for a in addresses], ttl)

    def add_aaaa(self, name: str, *addresses: str, ttl: int = 60) -> None:
        self._add(name, dns.rdatatype.AAAA, [str(ipaddress.IPv6Address(a)) for a in addresses], ttl)

    def add_txt(self, name: str, *texts: str, ttl: int = 60) -> None:
        self._add(name, dns.rdatatype.TXT, [f'"{t}"' for t in texts], ttl)

    def add_cname(self, name: str, target: str, ttl: int = 60) -> None:
        node = self._node(name)
        if node.records:
            raise ValueError(f"{name} already has data; a CNAME must stand alone")
        node.cname = (_name(target), ttl)

    def _set_behaviour(self, name: str, behaviour: Behaviour) -> None:
        owner = _name(name)
        self._nodes.pop(owner, None)
        self._behaviours[owner] = behaviour

    def nxdomain(self, name: str) -> None:
        """Make `name` not exist (any name never added already answers NXDOMAIN)."""
        self._set_behaviour(name, Behaviour.NXDOMAIN)

    def servfail(self, name: str) -> None:
        self._set_behaviour(name, Behaviour.SERVFAIL)

    def refuse(self, name: str) -> None:
        """Answer queries reaching `name` with rcode REFUSED, as an ACL-bound resolver does."""
        self._set_behaviour(name, Behaviour.REFUSED)

    def drop(self, name: str) -> None:
        """Never answer queries reaching `name`, so the client times out."""
        self._set_behaviour(name, Behaviour.DROP)

    def truncate(self, name: str) -> None:
        """Answer UDP queries for `name` with TC set and no records; TCP gets the full answer."""
        self._truncated.add(_name(name))

    def remove(self, name: str) -> None:
        owner = _name(name)
        self._nodes.pop(owner, None)
        self._behaviours.pop(owner, None)
        self._truncated.discard(owner)

    def courier_chain(
        self, n: int, pop: str, address: str, ttl: int = 60, edge: str | None = None
    ) -> str:
        """Add Apple's courier shape and return the dialled name:
        `{n}-courier.push.apple.com` -> `{n}.courier-push-apple.com.akadns.net`
        -> `{pop}-courier-4.push-apple.com.akadns.net` (or `edge`, for a shape Akamai might
        switch to) -> A `address`. Calling it again for `n` re-points the chain (a POP move)."""
        host = f"{n}-courier.push.apple.com"
        edge = edge or f"{pop}-courier-4.push-apple.com.akadns.net"
        self.add_cname(host, f"{n}.courier-push-apple.com.akadns.net", ttl=ttl)
        self.add_cname(f"{n}.courier-push-apple.com.akadns.net", edge, ttl=ttl)
        self.add_a(edge, address, ttl=ttl)
        return host

    def query_count(self, name: str, rdtype: str = "A") -> int:
        return self.queries[_key(_name(name)), rdtype.upper()]

    # -- answering --------------------------------------------------------------------------

    def _resolve(self, response: dns.message.Message) -> bool:
        """Fill `response` for its question; False means stay silent (dropped)."""
        question = response.question[0]
        qtype = question.rdtype
        name = question.name  # the query's own spelling, echoed like real servers do
        seen: set[dns.name.Name] = set()
        for _ in range(MAX_CHAIN):
            if name in seen:
                break  # CNAME loop
            seen.add(name)
            behaviour = self._behaviours.get(name)
            if behaviour is Behaviour.DROP:
                return False
            if behaviour in _FAILURE_RCODES:
                response.answer.clear()
                response.set_rcode(_FAILURE_RCODES[behaviour])
                return True
            node = self._nodes.get(name)
            if node is None:
                # Keep the chain walked so far, as resolvers do for a CNAME into nothing.
                response.set_rcode(dns.rcode.NXDOMAIN)
                self._add_soa(response, name)
                return True
            if node.cname is not None and qtype not in (dns.rdatatype.CNAME, dns.rdatatype.ANY):
                target, ttl = node.cname
                response.answer.append(
                    dns.rrset.from_text(name, ttl, "IN", "CNAME", target.to_text())
                )
                name = target
                continue
            rrsets = self._rrsets(name, node, qtype)
            response.answer.extend(rrsets)
            if not rrsets:
                self._add_soa(response, name)  # NODATA: NOERROR, empty answer, SOA for TTL
            return True
        response.answer.clear()
        response.set_rcode(dns.rcode.SERVFAIL)
        return True

    @staticmethod
    def _rrsets(
        name: dns.name.Name, node: _Node, qtype: dns.rdatatype.RdataType
    ) -> list[dns.rrset.RRset]:
        found: list[dns.rrset.RRset] = []
        if node.cname is not None:
            target, ttl = node.cname
            found.append(dns.rrset.from_text(name, ttl, "IN", "CNAME", target.to_text()))
        for rdtype, (ttl, values) in node.records.items():
            if qtype in (rdtype, dns.rdatatype.ANY):
                found.append(dns.rrset.from_text_list(name, ttl, "IN", rdtype, values))
        return found

    @staticmethod
    def _add_soa(response: dns.message.Message, name: dns.name.Name) -> None:
        # Resolvers take the negative-caching TTL from an SOA; use the name's last two labels
        # as a stand-in apex since the fake serves several zones at once.
        labels = name.labels[-3:] if len(name.labels) >= 3 else name.labels
        apex = dns.name.Name(labels)
        soa = f"ns.fake.invalid. hostmaster.fake.invalid. 1 3600 600 86400 {NEGATIVE_TTL}"
        response.authority.append(dns.rrset.from_text(apex, NEGATIVE_TTL, "IN", "SOA", soa))

    def answer(self, wire: bytes, transport: str = "udp") -> bytes | None:
        """Response wire for query `wire`, or None to send nothing."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return _formerr(wire)
        if query.flags & dns.flags.QR:
            return None  # a response, not a query: answering could loop
        response = dns.message.make_response(query)
        # Authoritative for its data and offering recursion: stands in for both roles.
        response.flags |= dns.flags.AA | dns.flags.RA
        if query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
            return response.to_wire()
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response.to_wire()
        question = query.question[0]
        self.queries[_key(question.name), dns.rdatatype.to_text(question.rdtype)] += 1
        self.transports[transport] += 1
        if question.rdclass != dns.rdataclass.IN:
            response.set_rcode(dns.rcode.REFUSED)
            return response.to_wire()
        if not self._resolve(response):
            return None
        if transport == "udp":
            limit = max(query.payload, UDP_DEFAULT_SIZE) if query.edns >= 0 else UDP_DEFAULT_SIZE
            if question.name in self._truncated:
                return _truncated(query)
            try:
                return response.to_wire(max_size=limit)
            except dns.exception.TooBig:
                return _truncated(query)
        return response.to_wire()

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._tcp.port

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        last_error: OSError | None = None
        for _ in range(BIND_ATTEMPTS):
            udp, _ = await loop.create_datagram_endpoint(
                lambda: _DNSDatagramProtocol(self), local_addr=(self.host, 0)
            )
            port: int = udp.get_extra_info("sockname")[1]
            try:
                await self._tcp._listen(port)
            except OSError as error:  # someone holds that TCP port: try another pair
                last_error = error
                udp.close()
                continue
            self._udp = udp
            return
        raise RuntimeError("could not bind UDP and TCP to one port") from last_error

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        await self._tcp.stop()


@contextlib.contextmanager
def closed_port(host: str = LOCALHOST) -> Iterator[int]:
    """A port on `host` where no nameserver listens: queries to it come back ICMP port
    unreachable. Its TCP twin is held (bound, not listening) so nobody takes the pair meanwhile;
    a TCP connection to it is refused."""
    for _ in range(BIND_ATTEMPTS):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port: int = udp.getsockname()[1]
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                tcp.bind((host, port))
            except OSError:
                tcp.close()
                continue
        with tcp:
            yield port
        return
    raise RuntimeError(f"no free UDP and TCP port pair on {host}")


def _truncated(query: dns.message.Message) -> bytes:
    response = dns.message.make_response(query)
    response.flags |= dns.flags.AA | dns.flags.RA | dns.flags.TC
    return response.to_wire()


def _formerr(wire: bytes) -> bytes | None:
    if len(wire) < 12:
        return None  # not even a header to reply to
    response = dns.message.Message(id=int.from_bytes(wire[:2], "big"))
    response.flags = dns.flags.QR | dns.flags.RA
    response.set_rcode(dns.rcode.FORMERR)
    return response.to_wire()


class _DNSDatagramProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: FakeDNS) -> None:
        self._server = server
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector transport does not subclass DatagramTransport, it only behaves like one.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | bytes, int]) -> None:
        reply = self._server.answer(data, "udp")
        if reply is not None and self._transport is not None:
            with contextlib.suppress(OSError):
                self._transport.sendto(reply, addr)


class _DNSStreamServer(StreamServer):
    """DNS over TCP: 2-byte length-prefixed messages, many per connection."""

    def __init__(self, server: FakeDNS) -> None:
        super().__init__(server.host)
        self._dns = server

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(MAX_TCP_MESSAGES):
            try:
                length = int.from_bytes(await reader.readexactly(2), "big")
                wire = await reader.readexactly(length)
            except asyncio.IncompleteReadError:
                return  # client closed
            reply = self._dns.answer(wire, "tcp")
            if reply is not None:
                writer.write(len(reply).to_bytes(2, "big") + reply)
                await writer.drain()
