"""DNS from a packet capture (pcap or pcapng): queries, and from responses the CNAME chain and
the addresses, over UDP and TCP; and the TCP ports clients opened, so a name's service is known.

The capture formats are dpkt's (dpkt.pcap.Reader, dpkt.pcapng.Reader), and so is DNS name
decoding with its compression checks (dpkt.dns.unpack_name). The fixed-size headers around them
(link, IPv4/IPv6, UDP/TCP, the DNS header and resource-record headers) are read with struct at
known offsets: building dpkt's packet objects costs about 25 microseconds per DNS response,
several times the rest of the work, and only names, types and addresses are needed.

A packet that cannot be decoded is skipped and counted (the first one named by its number);
a capture cut off mid-record ends the read there, keeping what came before.
DNS over TCP is reassembled simply, per flow: segments in order are appended, messages are
taken off the front by their two-byte length; a flow with a gap is dropped until it ends.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from typing import IO, Final

import dpkt

from courierwatch.discover.tally import SourceStats, Tally

__all__ = ["PCAPNG_MAGIC", "PCAP_MAGICS", "read"]

PCAP_MAGICS: Final = frozenset(
    {b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d"}
)
PCAPNG_MAGIC: Final = b"\x0a\x0d\x0d\x0a"
_DNS_PORT: Final = 53
_MAX_FLOWS: Final = 4096  # TCP flows carrying DNS held at once; the oldest goes first
_MAX_NAMES: Final = 65536  # names remembered by their wire bytes
_MAX_FLOW_BYTES: Final = 2 + 65535 + 1500  # one whole message and the next segment's start
_TYPES: Final = {
    1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA",
    33: "SRV", 35: "NAPTR", 43: "DS", 48: "DNSKEY", 64: "SVCB", 65: "HTTPS", 255: "ANY",
}  # fmt: skip
_RCODES: Final = {1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}
_HEADER = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")
_QUESTION = struct.Struct("!HH")
_U16 = struct.Struct("!H")
_TCP = struct.Struct("!HHIIBB")
_UDP = struct.Struct("!HHH")
_SYN, _RST, _FIN, _ACK = 0x02, 0x04, 0x01, 0x10
_V6_EXTENSIONS: Final = frozenset({0, 43, 60})  # hop-by-hop, routing, destination options
_V6_FRAGMENT: Final = 44

# Link type -> where the IP packet starts (None: read the EtherType chain).
_ETHERNET, _NULL, _RAW, _SLL, _SLL2 = 1, 0, 101, 113, 276
_LOOP, _RAW_ALT, _IPV4, _IPV6 = 108, 12, 228, 229


class _Malformed(Exception):
    """This packet cannot be decoded; the message says why."""


def read(path: str, tally: Tally, label: str) -> SourceStats:
    stats = SourceStats(path, "pcap")
    tally.sources.append(stats)
    try:
        with open(path, "rb") as file:  # noqa: PTH123 (dpkt reads a file object)
            reader = _reader(file, stats)
            if reader is None:
                return stats
            _Decoder(tally, label, stats, reader.datalink()).run(reader)
    except _Unsupported as error:
        stats.error = f"{path}: {error}"
    except OSError as error:
        stats.error = f"{path}: {error.strerror or error}"
    return stats


def _reader(file: IO[bytes], stats: SourceStats) -> dpkt.pcap.Reader | dpkt.pcapng.Reader | None:
    magic = file.read(4)
    file.seek(0)
    try:
        if magic == PCAPNG_MAGIC:
            stats.kind = "pcapng"
            return dpkt.pcapng.Reader(file)
        if magic in PCAP_MAGICS:
            return dpkt.pcap.Reader(file)
    except (ValueError, dpkt.Error, struct.error) as error:
        stats.error = f"{stats.path}: not a readable {stats.kind} file: {error}"
        return None
    stats.error = f"{stats.path}: not a pcap or pcapng capture"
    return None


class _Decoder:
    def __init__(self, tally: Tally, label: str, stats: SourceStats, linktype: int) -> None:
        self.tally = tally
        self.label = label
        self.stats = stats
        self.ip_start = _link(linktype)
        self.flows: dict[tuple[bytes, int, bytes, int], tuple[int, bytearray]] = {}
        self.broken: dict[tuple[bytes, int, bytes, int], None] = {}  # flows with a gap
        self.names = _Names()

    def run(self, reader: dpkt.pcap.Reader | dpkt.pcapng.Reader) -> None:
        stats = self.stats
        packets = iter(reader)
        while True:
            try:
                ts, buf = next(packets)
            except StopIteration:
                return
            except (dpkt.Error, struct.error, ValueError) as error:
                stats.skip(f"packet {stats.records + 1}", f"capture cut off ({error})")
                return
            stats.records += 1
            try:
                self.packet(buf, ts)
            except dpkt.NeedData:
                stats.skip(f"packet {stats.records}", "cut short")
            except (_Malformed, dpkt.Error, struct.error, IndexError, UnicodeDecodeError) as e:
                stats.skip(f"packet {stats.records}", str(e) or type(e).__name__)

    def packet(self, buf: bytes, ts: float) -> None:
        start = self.ip_start(buf)
        if start < 0:
            return  # not IP (ARP, LLDP, ...): nothing to count
        version = buf[start] >> 4
        if version == 4:
            ihl = (buf[start] & 0x0F) * 4
            if ihl < 20 or len(buf) < start + ihl:
                raise _Malformed("truncated IPv4 header")
            if _U16.unpack_from(buf, start + 6)[0] & 0x3FFF:
                return  # a fragment: DNS that needs reassembly is beyond "simply"
            proto = buf[start + 9]
            (total,) = _U16.unpack_from(buf, start + 2)
            src, dst = buf[start + 12 : start + 16], buf[start + 16 : start + 20]
            payload = buf[start + ihl : start + total]
            family = socket.AF_INET
        elif version == 6:
            if len(buf) < start + 40:
                raise _Malformed("truncated IPv6 header")
            proto = buf[start + 6]
            (length,) = _U16.unpack_from(buf, start + 4)
            src, dst = buf[start + 8 : start + 24], buf[start + 24 : start + 40]
            payload = buf[start + 40 : start + 40 + length]
            while proto in _V6_EXTENSIONS and len(payload) >= 8:
                proto, skip = payload[0], (payload[1] + 1) * 8
                payload = payload[skip:]
            if proto == _V6_FRAGMENT:
                return
            family = socket.AF_INET6
        else:
            raise _Malformed(f"IP version {version}")
        if proto == 17:
            if len(payload) < 8:
                raise _Malformed("truncated UDP header")
            sport, dport, length = _UDP.unpack_from(payload)
            if sport == _DNS_PORT or dport == _DNS_PORT:
                self.message(payload[8:length], src, dst, family, ts)
        elif proto == 6:
            self.tcp(payload, src, dst, family, ts)

    def tcp(self, payload: bytes, src: bytes, dst: bytes, family: int, ts: float) -> None:
        if len(payload) < 20:
            raise _Malformed("truncated TCP header")
        sport, dport, seq, _ack, offset, flags = _TCP.unpack_from(payload)
        if flags & _SYN and not flags & _ACK:
            self.tally.connection(socket.inet_ntop(family, dst), dport)
        if _DNS_PORT not in (sport, dport):
            return
        key = (src, sport, dst, dport)
        data = payload[(offset >> 4) * 4 :]
        if flags & _SYN:
            self.flows[key] = (seq + 1, bytearray())
            self.broken.pop(key, None)
        elif data and key not in self.broken:
            for message in self.reassemble(key, seq, data):
                self.message(message, src, dst, family, ts)
        if flags & (_RST | _FIN):
            self.flows.pop(key, None)
            self.broken.pop(key, None)

    def reassemble(self, key: tuple[bytes, int, bytes, int], seq: int, data: bytes) -> list[bytes]:
        expected, buffer = self.flows.pop(key, (seq, bytearray()))
        if seq != expected:
            overlap = (expected - seq) & 0xFFFFFFFF
            if overlap > 0x7FFFFFFF:  # data beyond a gap: the stream cannot be framed
                self._break(key)
                raise _Malformed("gap in a DNS-over-TCP stream")
            if overlap >= len(data):
                self.flows[key] = (expected, buffer)  # a retransmission of what we have
                return []
            data = data[overlap:]
        buffer += data
        messages = []
        while len(buffer) >= 2:
            (size,) = _U16.unpack_from(buffer)
            if len(buffer) < 2 + size:
                break
            messages.append(bytes(buffer[2 : 2 + size]))
            del buffer[: 2 + size]
        if len(buffer) > _MAX_FLOW_BYTES:
            self._break(key)
            raise _Malformed("DNS-over-TCP message longer than its length says")
        self.flows[key] = ((expected + len(data)) & 0xFFFFFFFF, buffer)
        while len(self.flows) > _MAX_FLOWS:
            del self.flows[next(iter(self.flows))]
        return messages

    def _break(self, key: tuple[bytes, int, bytes, int]) -> None:
        self.broken[key] = None
        while len(self.broken) > _MAX_FLOWS:
            del self.broken[next(iter(self.broken))]

    def message(self, data: bytes, src: bytes, dst: bytes, family: int, ts: float) -> None:
        if len(data) < 12:
            raise _Malformed("truncated DNS header")
        _id, flags, questions, answers, _ns, _ar = _HEADER.unpack_from(data)
        if questions != 1 or flags & 0x7800:  # one question, opcode QUERY: what devices send
            raise _Malformed(f"not a DNS query or response ({questions} questions)")
        here: dict[int, str] = {}  # offset -> the name that starts there, in this message
        name, offset = self.names.read(data, 12, here)
        qtype, _qclass = _QUESTION.unpack_from(data, offset)
        if not name:
            raise _Malformed("empty DNS name")
        tally = self.tally
        if not flags & 0x8000:
            client = socket.inet_ntop(family, src)
            tally.query(name, _TYPES.get(qtype) or f"TYPE{qtype}", client, ts, self.label)
            self.stats.used += 1
            return
        chain, addresses = self.answers(data, offset + 4, answers, name, here)
        self.stats.used += 1
        client = socket.inet_ntop(family, dst)
        rcode = flags & 0x000F
        if rcode:
            tally.rcode(name, _RCODES.get(rcode) or f"RCODE{rcode}")
        if addresses or len(chain) > 1:
            tally.answer(chain, addresses, client, ts, self.label)

    def answers(
        self, data: bytes, offset: int, count: int, name: str, here: dict[int, str]
    ) -> tuple[list[str], list[str]]:
        """The CNAME chain from name and the A/AAAA addresses at its end."""
        chain = [name]
        addresses: list[str] = []
        end = len(data)
        read = self.names.read
        for _ in range(count):
            owner, offset = read(data, offset, here)
            rtype, _rclass, _ttl, size = _RR.unpack_from(data, offset)
            offset += 10
            if offset + size > end:
                raise _Malformed("DNS answer runs past the packet")
            if rtype == 5:
                target, _ = read(data, offset, here)
                if owner == chain[-1]:
                    chain.append(target)
            elif rtype == 1 and size == 4:
                addresses.append(socket.inet_ntop(socket.AF_INET, data[offset : offset + 4]))
            elif rtype == 28 and size == 16:
                addresses.append(socket.inet_ntop(socket.AF_INET6, data[offset : offset + 16]))
            offset += size
        return chain, addresses


class _Names:
    """DNS names as dpkt decodes them (lower case, no trailing dot), remembered: a site asks
    for the same names all day. A name written out in full (no compression pointer) is decided
    by its own bytes, so it is looked up by them; a bare pointer to a name already read in the
    same message is that name. Anything else goes to dpkt.dns.unpack_name."""

    def __init__(self) -> None:
        self.plain: dict[bytes, str] = {}

    def read(self, data: bytes, offset: int, here: dict[int, str]) -> tuple[str, int]:
        first = data[offset]
        wire = b""
        if first >= 0xC0:
            if offset + 1 < len(data):
                known = here.get(((first & 0x3F) << 8) | data[offset + 1])
                if known is not None:
                    return known, offset + 2
        else:
            wire = data[offset : data.find(b"\x00", offset) + 1]
            known = self.plain.get(wire)
            if known is not None:
                here[offset] = known
                return known, offset + len(wire)
        name, after = dpkt.dns.unpack_name(data, offset)
        name = name.lower().rstrip(".")
        here[offset] = name
        if wire and after == offset + len(wire) and _plain(wire):
            if len(self.plain) >= _MAX_NAMES:
                self.plain.clear()
            self.plain[wire] = name
        return name, after


def _plain(wire: bytes) -> bool:
    """The bytes are labels ending in the root label, with no compression pointer."""
    at = 0
    while at < len(wire) and wire[at]:
        if wire[at] & 0xC0:
            return False
        at += wire[at] + 1
    return at == len(wire) - 1


def _link(linktype: int) -> Callable[[bytes], int]:
    """Where IP starts in a frame of this link type (-1: not IP)."""
    if linktype == _ETHERNET:
        return _ethernet
    if linktype in (_NULL, _LOOP):
        return _at(4)
    if linktype in (_RAW, _RAW_ALT, _IPV4, _IPV6):
        return _at(0)
    if linktype == _SLL:
        return _ethertype_at(14, 16)
    if linktype == _SLL2:
        return _ethertype_at(0, 20)
    raise _Unsupported(linktype)


class _Unsupported(dpkt.Error):
    def __init__(self, linktype: int) -> None:
        super().__init__(f"link type {linktype} is not supported (Ethernet, Linux cooked, raw IP)")


def _at(start: int) -> Callable[[bytes], int]:
    def ip_start(buf: bytes) -> int:
        return start if len(buf) > start and buf[start] >> 4 in (4, 6) else -1

    return ip_start


def _ethertype_at(field: int, start: int) -> Callable[[bytes], int]:
    def ip_start(buf: bytes) -> int:
        if len(buf) <= start:
            raise _Malformed("truncated link header")
        (ethertype,) = _U16.unpack_from(buf, field)
        return start if ethertype in (0x0800, 0x86DD) else -1

    return ip_start


def _ethernet(buf: bytes) -> int:
    start = 14
    if len(buf) <= start:
        raise _Malformed("truncated Ethernet header")
    (ethertype,) = _U16.unpack_from(buf, 12)
    while ethertype in (0x8100, 0x88A8) and len(buf) > start + 4:  # VLAN tags
        (ethertype,) = _U16.unpack_from(buf, start + 2)
        start += 4
    return start if ethertype in (0x0800, 0x86DD) else -1
