"""Write tests/data/site-sample.pcapng: an hour of DNS at a small site behind a Pi-hole, shaped
like a real capture on the Pi-hole's LAN side, for `courierwatch discover` and its README run.

    python tests/data/make_sample.py            # rewrites tests/data/site-sample.pcapng

What it holds: six Apple devices (192.168.10.21-26) asking the Pi-hole (192.168.10.2) for
couriers (today's POP shape pop-eur-benelux-courier.push-apple.com.akadns.net and the older
eu-central-courier-4...), catalog names with their CNAME chains to Apple's and Akamai's edge,
names outside the catalog (Maps, App Store artwork through an Akamai CDN name), a numbered iCloud
family, a name that does not exist, two names the Pi-hole blocks (answered 0.0.0.0), one query
over TCP, the TCP connections the devices opened afterwards, non-Apple traffic, and three
malformed packets (a truncated DNS header, a question cut short, an answer running past the end).

Packet building (Capture) and Pi-hole's database schemas (FTL_V5_SCHEMA, FTL_V6_SCHEMA) are
importable for the tests and the benchmark. Deterministic: the same
bytes on every run.
"""

from __future__ import annotations

import itertools
import random
import socket
import struct
import sys
from pathlib import Path
from typing import BinaryIO

import dpkt

HERE = Path(__file__).resolve().parent
SAMPLE = HERE / "site-sample.pcapng"
START = 1_764_576_000.0  # 2025-12-01 08:00:00 UTC
RESOLVER = "192.168.10.2"
CLIENTS = tuple(f"192.168.10.{n}" for n in range(21, 27))
_MAC_A, _MAC_B = b"\x02\x00\x00\x00\x00\x01", b"\x02\x00\x00\x00\x00\x02"

# Pi-hole's long-term database as FTL creates it, for the tests' and the benchmark's databases.
# pi-hole/FTL src/database/query-table.h: CREATE_QUERIES_TABLE_V1 and the additional_info column
# Pi-hole v5 adds to it (add_additional_info_column), with its timestamp index.
FTL_V5_SCHEMA = """
CREATE TABLE queries ( id INTEGER PRIMARY KEY AUTOINCREMENT, timestamp INTEGER NOT NULL,
    type INTEGER NOT NULL, status INTEGER NOT NULL, domain TEXT NOT NULL, client TEXT NOT NULL,
    forward TEXT );
ALTER TABLE queries ADD COLUMN additional_info TEXT;
CREATE INDEX idx_queries_timestamp ON queries (timestamp);
CREATE TABLE ftl ( id INTEGER PRIMARY KEY NOT NULL, value BLOB NOT NULL );
"""
# The same file: CREATE_QUERY_STORAGE_TABLE, the linking tables and CREATE_QUERIES_VIEW (v6).
FTL_V6_SCHEMA = """
CREATE TABLE query_storage ( id INTEGER PRIMARY KEY AUTOINCREMENT, timestamp INTEGER NOT NULL,
    type INTEGER NOT NULL, status INTEGER NOT NULL, domain INTEGER NOT NULL,
    client INTEGER NOT NULL, forward INTEGER, additional_info INTEGER, reply_type INTEGER,
    reply_time REAL, dnssec INTEGER, list_id INTEGER, ede INTEGER );
CREATE TABLE domain_by_id (id INTEGER PRIMARY KEY, domain TEXT NOT NULL);
CREATE TABLE client_by_id (id INTEGER PRIMARY KEY, ip TEXT NOT NULL, name TEXT);
CREATE TABLE forward_by_id (id INTEGER PRIMARY KEY, forward TEXT NOT NULL);
CREATE TABLE addinfo_by_id (id INTEGER PRIMARY KEY, type INTEGER NOT NULL, content NOT NULL);
CREATE VIEW queries AS SELECT id, timestamp, type, status,
    CASE typeof(domain) WHEN 'integer' THEN (SELECT domain FROM domain_by_id d WHERE d.id = q.domain) ELSE domain END domain,
    CASE typeof(client) WHEN 'integer' THEN (SELECT ip FROM client_by_id c WHERE c.id = q.client) ELSE client END client,
    CASE typeof(forward) WHEN 'integer' THEN (SELECT forward FROM forward_by_id f WHERE f.id = q.forward) ELSE forward END forward,
    CASE typeof(additional_info) WHEN 'integer' THEN (SELECT content FROM addinfo_by_id a WHERE a.id = q.additional_info) ELSE additional_info END additional_info,
    reply_type, reply_time, dnssec, list_id FROM query_storage q;
CREATE UNIQUE INDEX domain_by_id_domain_idx ON domain_by_id(domain);
CREATE UNIQUE INDEX client_by_id_client_idx ON client_by_id(ip,name);
CREATE UNIQUE INDEX addinfo_by_id_idx ON addinfo_by_id(type,content);
"""  # noqa: E501 (Pi-hole's view, as published)


def message(
    name: str,
    qtype: int = dpkt.dns.DNS_A,
    *,
    ident: int = 1,
    response: bool = False,
    chain: tuple[str, ...] = (),
    addresses: tuple[str, ...] = (),
    rcode: int = 0,
) -> bytes:
    """A DNS query, or a response whose answer section is the CNAME chain from name and then
    the addresses of its last hop."""
    dns = dpkt.dns.DNS(id=ident, qd=[dpkt.dns.DNS.Q(name=name, type=qtype)])
    dns.rd = 1
    if response:
        dns.qr, dns.ra, dns.rcode = dpkt.dns.DNS_R, 1, rcode
        hops = (name, *chain)
        answers = [
            dpkt.dns.DNS.RR(name=here, type=dpkt.dns.DNS_CNAME, ttl=60, cname=there)
            for here, there in itertools.pairwise(hops)
        ]
        for address in addresses:
            if ":" in address:
                rr = dpkt.dns.DNS.RR(name=hops[-1], type=dpkt.dns.DNS_AAAA, ttl=60)
                rr.ip6 = socket.inet_pton(socket.AF_INET6, address)
            else:
                rr = dpkt.dns.DNS.RR(name=hops[-1], type=dpkt.dns.DNS_A, ttl=60)
                rr.ip = socket.inet_aton(address)
            answers.append(rr)
        dns.an = answers
    return bytes(dns)


def frame(src: str, dst: str, transport: dpkt.Packet) -> bytes:
    """An Ethernet frame carrying transport (UDP or TCP) over IPv4 or IPv6."""
    if ":" in src:
        ip: dpkt.Packet = dpkt.ip6.IP6(
            src=socket.inet_pton(socket.AF_INET6, src),
            dst=socket.inet_pton(socket.AF_INET6, dst),
            nxt=transport_number(transport),
            hlim=64,
            data=transport,
            plen=len(transport),
        )
        ethertype = dpkt.ethernet.ETH_TYPE_IP6
    else:
        ip = dpkt.ip.IP(
            src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=transport_number(transport),
            ttl=64, data=transport,
        )  # fmt: skip
        ip.len = len(ip)
        ethertype = dpkt.ethernet.ETH_TYPE_IP
    return bytes(dpkt.ethernet.Ethernet(src=_MAC_A, dst=_MAC_B, type=ethertype, data=ip))


def transport_number(transport: dpkt.Packet) -> int:
    return dpkt.ip.IP_PROTO_UDP if isinstance(transport, dpkt.udp.UDP) else dpkt.ip.IP_PROTO_TCP


def udp(sport: int, dport: int, payload: bytes) -> dpkt.udp.UDP:
    datagram = dpkt.udp.UDP(sport=sport, dport=dport, data=payload)
    datagram.ulen = len(datagram)
    return datagram


def tcp(sport: int, dport: int, seq: int, flags: int, payload: bytes = b"") -> dpkt.tcp.TCP:
    return dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq, flags=flags, data=payload)


class Capture:
    """DNS the way a capture on the resolver's LAN side sees it; close() writes the packets
    in time order, as a capture holds them."""

    def __init__(self, file: BinaryIO, *, pcapng: bool = True) -> None:
        writer = dpkt.pcapng.Writer if pcapng else dpkt.pcap.Writer
        self.writer = writer(file, linktype=dpkt.pcap.DLT_EN10MB)
        self.frames: list[tuple[float, int, bytes]] = []
        self.ident = 0
        self.port = 40000

    @property
    def packets(self) -> int:
        return len(self.frames)

    def raw(self, ts: float, data: bytes) -> None:
        self.frames.append((ts, len(self.frames), data))

    def close(self) -> None:
        for ts, _, data in sorted(self.frames):
            self.writer.writepkt(data, ts=ts)

    def _next(self) -> tuple[int, int]:
        self.ident = (self.ident + 1) & 0xFFFF
        self.port = 40000 + (self.port - 39999) % 20000
        return self.ident, self.port

    def ask(
        self,
        ts: float,
        client: str,
        name: str,
        qtype: int = dpkt.dns.DNS_A,
        *,
        chain: tuple[str, ...] = (),
        addresses: tuple[str, ...] = (),
        rcode: int = 0,
        resolver: str = RESOLVER,
    ) -> None:
        """A query over UDP and its response 2 ms later."""
        ident, port = self._next()
        query = message(name, qtype, ident=ident)
        self.raw(ts, frame(client, resolver, udp(port, 53, query)))
        reply = message(name, qtype, ident=ident, response=True, chain=chain,
                        addresses=addresses, rcode=rcode)  # fmt: skip
        self.raw(ts + 0.002, frame(resolver, client, udp(53, port, reply)))

    def ask_tcp(
        self,
        ts: float,
        client: str,
        name: str,
        qtype: int,
        *,
        chain: tuple[str, ...] = (),
        addresses: tuple[str, ...] = (),
        split: bool = True,
    ) -> None:
        """A query over TCP: handshake, the length-prefixed query (split over two segments
        when split), the response, and the close."""
        ident, port = self._next()
        c_seq, s_seq = 1000, 5000
        syn, ack, psh, fin = dpkt.tcp.TH_SYN, dpkt.tcp.TH_ACK, dpkt.tcp.TH_PUSH, dpkt.tcp.TH_FIN
        self.raw(ts, frame(client, RESOLVER, tcp(port, 53, c_seq, syn)))
        self.raw(ts, frame(RESOLVER, client, tcp(53, port, s_seq, syn | ack)))
        query = message(name, qtype, ident=ident)
        framed = struct.pack("!H", len(query)) + query
        pieces = [framed[:7], framed[7:]] if split else [framed]
        seq = c_seq + 1
        for piece in pieces:
            self.raw(ts + 0.001, frame(client, RESOLVER, tcp(port, 53, seq, ack | psh, piece)))
            seq += len(piece)
        reply = message(name, qtype, ident=ident, response=True, chain=chain, addresses=addresses)
        answer = struct.pack("!H", len(reply)) + reply
        self.raw(ts + 0.003, frame(RESOLVER, client, tcp(53, port, s_seq + 1, ack | psh, answer)))
        self.raw(ts + 0.004, frame(client, RESOLVER, tcp(port, 53, seq, ack | fin)))

    def connect(self, ts: float, client: str, server: str, port: int) -> None:
        """A client opening TCP to server:port (the SYN a capture sees)."""
        _, sport = self._next()
        self.raw(ts, frame(client, server, tcp(sport, port, 1, dpkt.tcp.TH_SYN)))


def _couriers(capture: Capture, rng: random.Random) -> None:
    for minute in range(0, 60, 2):
        for index, client in enumerate(CLIENTS):
            number = rng.randint(1, 50)
            ts = START + minute * 60 + index * 7.5
            # Five devices land on today's POP shape, one on the older, numbered one.
            pop = "eu-central-courier-4" if index == 5 else "pop-eur-benelux-courier"
            chain = (f"{number}.courier-push-apple.com.akadns.net",
                     f"{pop}.push-apple.com.akadns.net")  # fmt: skip
            address = f"17.57.146.{20 + number % 30}"
            capture.ask(ts, client, f"{number}-courier.push.apple.com", chain=chain,
                        addresses=(address,))  # fmt: skip
            if minute % 10 == 0:
                capture.ask(ts + 0.01, client, f"{number}-courier.push.apple.com",
                            dpkt.dns.DNS_AAAA, chain=chain,
                            addresses=("2a01:b740:a42:1::12",))  # fmt: skip
            capture.connect(ts + 0.02, client, address, 5223)


_CATALOG = (
    # name, chain, addresses, port opened
    ("gs.apple.com", ("gs-loc.apple.com.akadns.net", "gs-loc-new.ls-apple.com.akadns.net"),
     ("17.253.53.204",), 443),
    ("mesu.apple.com", ("mesu.g.aaplimg.com",), ("17.253.37.205",), 443),
    ("ocsp.apple.com", ("ocsp-a.g.aaplimg.com",), ("17.253.21.201",), 80),
    ("gdmf.apple.com", (), ("17.32.194.6",), 443),
    ("time.apple.com", ("time.g.aaplimg.com",), ("17.253.52.253",), 0),
    ("itunes.apple.com", ("itunes.apple.com.edgekey.net", "e673.dsce9.akamaiedge.net"),
     ("23.40.60.77",), 443),
)  # fmt: skip
_OUTSIDE = (
    ("gspe19-ssl.ls.apple.com", ("gspe19-ssl.ls.apple.com.edgekey.net",
                                 "e6858.dsce9.akamaiedge.net"), ("23.40.61.12",), 443),
    ("is1-ssl.mzstatic.com", ("is1-ssl.mzstatic.com.edgekey.net", "e1329.dscb.akamaiedge.net"),
     ("104.86.109.203",), 443),
    ("weather-data.apple.com", ("weather-data.apple.com.akadns.net",), ("17.253.27.202",), 443),
    ("p23-caldav.icloud.com", (), ("17.248.161.73",), 443),
    ("p41-caldav.icloud.com", (), ("17.248.161.74",), 443),
    ("bag.itunes.apple.com", (), ("17.33.200.12",), 443),
)  # fmt: skip
_OTHER = ("www.example.com", "connectivitycheck.gstatic.com", "api.github.com")


def _names(capture: Capture, rng: random.Random) -> None:
    for minute in range(0, 60, 3):
        for name, chain, addresses, port in (*_CATALOG, *_OUTSIDE):
            client = rng.choice(CLIENTS)
            ts = START + minute * 60 + rng.uniform(0, 50)
            capture.ask(ts, client, name, chain=chain, addresses=addresses)
            if port:
                capture.connect(ts + 0.02, client, addresses[0], port)
        for name in _OTHER:
            capture.ask(START + minute * 60 + 55, rng.choice(CLIENTS), name,
                        addresses=("93.184.215.14",))  # fmt: skip
    for minute in (4, 19, 33, 47):  # blocked by the Pi-hole: its 0.0.0.0
        for client in CLIENTS[:3]:
            ts = START + minute * 60 + 10
            capture.ask(ts, client, "init-p01st.push.apple.com", addresses=("0.0.0.0",))
            capture.ask(ts + 1, client, "metrics.icloud.com", addresses=("0.0.0.0",))
    capture.ask(START + 1200, CLIENTS[2], "nonexistent-service.apple.com",
                rcode=dpkt.dns.DNS_RCODE_NXDOMAIN)  # fmt: skip
    capture.ask_tcp(START + 1500, CLIENTS[4], "configuration.ls.apple.com", dpkt.dns.DNS_A,
                    chain=("configuration.ls-apple.com.akadns.net",),
                    addresses=("17.253.53.209",))  # fmt: skip


def _malformed(capture: Capture) -> None:
    good = message("captive.apple.com", ident=77)
    capture.raw(START + 600, frame(CLIENTS[0], RESOLVER, udp(40999, 53, good[:7])))
    capture.raw(START + 601, frame(CLIENTS[0], RESOLVER, udp(40998, 53, good[:20])))
    reply = message("captive.apple.com", ident=78, response=True, addresses=("17.253.53.208",))
    capture.raw(START + 602, frame(RESOLVER, CLIENTS[0], udp(53, 40997, reply[:-2])))


def build(file: BinaryIO) -> int:
    capture = Capture(file)
    rng = random.Random(13)
    _couriers(capture, rng)
    _names(capture, rng)
    _malformed(capture)
    capture.close()
    return capture.packets


def main() -> None:
    with SAMPLE.open("wb") as file:
        count = build(file)
    print(f"{SAMPLE}: {count} packets", file=sys.stderr)


if __name__ == "__main__":
    main()
