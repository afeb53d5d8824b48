"""Hostile Apple-side servers: what a broken middlebox, a tarpit or a malicious resolver puts
where Apple should be. Every one stays within bounds itself (a capped number of writes, all
connections closed at stop), however long the probe would have listened.

TCP (all on 127.0.0.1, any free port; each counts the connections that ended, `ended`, so
a test can see the probe hang up):
  Tarpit          SilentServer (servers.py): accepts and never speaks
  StallingTLS     reads the ClientHello, sends the first bytes of a ServerHello record, stops
  Garbage         sends `payload` (random bytes, an HTTP banner) instead of TLS, then listens
  ScriptedHTTP    reads a request head, then writes its `script` piece by piece, `pace` apart:
                  `slowloris` (a byte at a time), `endless_body` (with Content-Length,
                  without, chunked), `huge_status_line`, `huge_header_line`, `endless_headers`
DNS:
  ChainDNS        a FakeDNS that also answers names with records as given (`add_loop`,
                  `add_deep_chain`), as a resolver that passes a broken chain on would
  TruncatingDNS   answers every UDP query with TC set, and its TCP retry is refused (nothing
                  listens), hung up on or reset
`HostileApple` starts one of each, and two healthy servers, behind one ChainDNS zone.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import itertools
import os
import random
import socket
import struct
from collections.abc import Callable, Iterable, Iterator
from typing import cast

import dns.message
import dns.name
import dns.rrset
import trustme

from ._streams import LOCALHOST, STOP_TIMEOUT, Service, StreamServer, drain_until_eof
from .dns import BIND_ATTEMPTS, FakeDNS, _name, _truncated
from .pki import TestPKI
from .servers import HTTPServer, SilentServer, TLSServer, _server_context

MAX_WRITES = 1_000_000  # pieces one connection is sent: "forever" for any test
MAX_HEAD_LINES = 100  # request lines read before answering
CHUNK = b"x" * 16_384
SLOWLORIS_PACE = 0.3  # seconds between the bytes of a slowloris answer
DEEP_CHAIN = 60  # CNAMEs in `add_deep_chain`
HUGE_ANSWER = 200  # A records in HostileApple's huge answer, padded to HUGE_BYTES with TXT
HUGE_BYTES = 64_000  # (4,000 A records would do too, but dnspython takes long to render them)
RANDOM_SEED = 5223

Script = Callable[[], Iterable[bytes]]


# -- TCP ------------------------------------------------------------------------------------


class Hostile(StreamServer):
    """A StreamServer that counts the connections that ended (`ended`): closed by the client,
    since these servers never close one themselves before stop()."""

    def __init__(self, host: str = LOCALHOST) -> None:
        super().__init__(host)
        self.ended = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await super()._serve(reader, writer)
        finally:
            self.ended += 1
            async with self._changed:
                self._changed.notify_all()

    async def wait_ended(self, count: int) -> None:
        """Wait (at most STOP_TIMEOUT) until `count` connections ended."""
        async with asyncio.timeout(STOP_TIMEOUT), self._changed:
            await self._changed.wait_for(lambda: self.ended >= count)


class Tarpit(Hostile, SilentServer):
    """SilentServer (accepts, never speaks), counting the connections that ended."""


class StallingTLS(Hostile):
    """Reads one TLS record (the ClientHello), answers with the start of a ServerHello record
    whose announced length never arrives, and says nothing more: a handshake stalled midway."""

    # Handshake record, TLS 1.2, 122 bytes announced; ServerHello of 118, version, 4 of random.
    PARTIAL_SERVER_HELLO = bytes.fromhex("160303007a020000760303c0ffee00")

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        header = await reader.readexactly(5)
        await reader.readexactly(int.from_bytes(header[3:5], "big"))
        writer.write(self.PARTIAL_SERVER_HELLO)
        await writer.drain()
        await drain_until_eof(reader)


class Garbage(Hostile):
    """Sends `payload` as soon as a connection opens, whatever the client says, then listens
    until the client hangs up: what a port answering some other protocol does to TLS."""

    def __init__(self, payload: bytes, host: str = LOCALHOST) -> None:
        super().__init__(host)
        self.payload = payload

    @classmethod
    def random_bytes(cls, size: int = 4_096) -> Garbage:
        return cls(random.Random(RANDOM_SEED).randbytes(size))  # the same bytes every run

    @classmethod
    def http_banner(cls) -> Garbage:
        return cls(b"HTTP/1.1 400 Bad Request\r\nServer: middlebox\r\nContent-Length: 0\r\n\r\n")

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(self.payload)
        await writer.drain()
        await drain_until_eof(reader)


class ScriptedHTTP(Hostile):
    """Over TLS when `cert` is given: reads a request head (up to its blank line), then writes
    what `script()` yields, one piece at a time, `pace` seconds apart, at most MAX_WRITES
    pieces; until the client hangs up, which ends the connection."""

    def __init__(
        self,
        script: Script,
        *,
        pace: float = 0.0,
        cert: trustme.LeafCert | None = None,
        host: str = LOCALHOST,
    ) -> None:
        super().__init__(host)
        self.script = script
        self.pace = pace
        self.server_names: list[str | None] = []  # SNI of each ClientHello, as TLSServer
        self._context = _server_context(cert, ["http/1.1"], self.server_names) if cert else None

    async def start(self) -> None:
        await self._listen(ssl_context=self._context)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(MAX_HEAD_LINES):
            if (await reader.readline()).strip() == b"":
                break
        for piece in itertools.islice(self.script(), MAX_WRITES):
            writer.write(piece)
            await writer.drain()  # raises once the client is gone
            # The hostile pace. Even at 0 it yields: drain() does not while the kernel takes
            # the bytes, and a server in another process would not hold up the probe's loop.
            await asyncio.sleep(self.pace)


def _endless(head: bytes, piece: bytes) -> Script:
    return lambda: itertools.chain((head,), itertools.repeat(piece))


def slowloris() -> Script:
    """An answer one byte at a time (use with a pace), whose status line never ends."""
    start = b"HTTP/1.1 200 "
    pieces = [start[i : i + 1] for i in range(len(start))]
    return lambda: itertools.chain(pieces, itertools.repeat(b"z"))


class Body(enum.Enum):
    LENGTH = "Content-Length: 1000000000000\r\n"  # a terabyte announced
    CLOSE = ""  # delimited by the close that never comes
    CHUNKED = "Transfer-Encoding: chunked\r\n"


def endless_body(body: Body) -> Script:
    head = f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n{body.value}\r\n".encode()
    piece = b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK) if body is Body.CHUNKED else CHUNK
    return _endless(head, piece)


def huge_status_line() -> Script:
    return _endless(b"HTTP/1.1 200 ", CHUNK)  # the reason phrase never ends


def huge_header_line() -> Script:
    return _endless(b"HTTP/1.1 200 OK\r\nX-Huge: ", CHUNK)


def endless_headers() -> Script:
    return _endless(b"HTTP/1.1 200 OK\r\n", b"X-More: yes\r\n")


# -- DNS ------------------------------------------------------------------------------------


class ChainDNS(FakeDNS):
    """FakeDNS, plus names whose answer section is given as is (FakeDNS itself would follow
    the chain and answer SERVFAIL for a loop or more than 16 hops, as a careful resolver
    does); NOERROR, echoing the question's spelling."""

    def __init__(self, host: str = LOCALHOST) -> None:
        super().__init__(host)
        self._raw: dict[dns.name.Name, list[dns.rrset.RRset]] = {}

    def add_raw(self, name: str, *records: tuple[str, str, str]) -> None:
        """Answer `name` with these (owner, type, value) records, TTL 60."""
        self.add_rrsets(name, *_rrsets(records))

    def add_rrsets(self, name: str, *rrsets: dns.rrset.RRset) -> None:
        """Answer `name` with these RRsets (built beforehand, for an answer slow to parse)."""
        self._raw[_name(name)] = list(rrsets)

    def add_loop(self, name: str, *hops: str) -> None:
        """name -> hops[0] -> ... -> hops[-1] -> name, every CNAME in the answer."""
        owners, targets = [name, *hops], [*hops, name]
        self.add_raw(name, *((o, "CNAME", f"{t}.") for o, t in zip(owners, targets, strict=True)))

    def add_deep_chain(self, name: str, address: str, depth: int = DEEP_CHAIN) -> None:
        """name -> hop-1.name -> ... -> hop-{depth}.name, which has A `address`."""
        names = [name, *(f"hop-{i}.{name}" for i in range(1, depth + 1))]
        records = [(o, "CNAME", f"{t}.") for o, t in itertools.pairwise(names)]
        self.add_raw(name, *records, (names[-1], "A", address))

    def _resolve(self, response: dns.message.Message) -> bool:
        rrsets = self._raw.get(response.question[0].name)
        if rrsets is None:
            return super()._resolve(response)
        response.answer.extend(rrsets)
        return True


class TcpFault(enum.Enum):
    REFUSE = "refuse"  # the TCP port is closed (bound, not listening)
    HANG_UP = "hang_up"  # accepts, reads the query, closes without a word (FIN)
    RESET = "reset"  # accepts, reads the query, resets the connection (RST)


_LINGER_ZERO = struct.pack("ii", 1, 0)  # struct linger {on, 0 s}: close() sends a RST


class _HangUp(StreamServer):
    def __init__(self, host: str, reset: bool) -> None:
        super().__init__(host)
        self.reset = reset

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        length = int.from_bytes(await reader.readexactly(2), "big")
        await reader.readexactly(length)  # read, so that what ends it is the fault alone
        if self.reset:
            writer.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO
            )
            writer.transport.abort()
        # else _serve closes the connection


class _TruncateAll(asyncio.DatagramProtocol):
    def __init__(self, server: TruncatingDNS) -> None:
        self._server = server
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | bytes, int]) -> None:
        self._server.udp_queries += 1
        if self._transport is not None:
            with contextlib.suppress(OSError):
                self._transport.sendto(_truncated(dns.message.from_wire(data)), addr)


class TruncatingDNS(Service):
    """Every UDP query answered with TC set and nothing else; the TCP retry that TC calls for
    meets `fault` on the same port. `udp_queries` counts the questions."""

    def __init__(self, fault: TcpFault, host: str = LOCALHOST) -> None:
        self.host = host
        self.fault = fault
        self.udp_queries = 0
        self.port = 0
        self._udp: asyncio.DatagramTransport | None = None
        self._held: socket.socket | None = None  # REFUSE: the TCP port, bound, not listening
        self._tcp: _HangUp | None = None  # HANG_UP, RESET: the listener

    async def start(self) -> None:
        for _ in range(BIND_ATTEMPTS):
            port = await self._bind_tcp()
            try:
                self._udp, _ = await asyncio.get_running_loop().create_datagram_endpoint(
                    lambda: _TruncateAll(self), local_addr=(self.host, port)
                )
            except OSError:  # someone holds that UDP port: try another pair
                await self._release_tcp()
                continue
            self.port = port
            return
        raise RuntimeError("could not bind UDP and TCP to one port")

    async def _bind_tcp(self) -> int:
        if self.fault is not TcpFault.REFUSE:
            self._tcp = _HangUp(self.host, reset=self.fault is TcpFault.RESET)
            await self._tcp.start()
            return self._tcp.port
        self._held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._held.bind((self.host, 0))
        port: int = self._held.getsockname()[1]
        return port

    async def _release_tcp(self) -> None:
        if self._held is not None:
            self._held.close()
            self._held = None
        if self._tcp is not None:
            await self._tcp.stop()
            self._tcp = None

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        await self._release_tcp()


# -- all together ---------------------------------------------------------------------------

ZONE = "hostile.apple.com"


def name_of(key: str) -> str:
    return f"{key}.{ZONE}"


class HostileApple(Service):
    """One of each hostile server, and two healthy ones (`tls-ok`, `https-ok`), each at
    `name_of(key)` in a ChainDNS zone that also holds `loop`, `deep` (DEEP_CHAIN CNAMEs) and
    `huge` (HUGE_ANSWER A records in HUGE_BYTES). The attributes FakeApple's helpers use
    (host, dns_port, ca_pem_path) are here too, so fakeapple.probing.check_context works."""

    def __init__(
        self, directory: str | os.PathLike[str] | None = None, host: str = LOCALHOST
    ) -> None:
        self.directory = directory
        self.host = host
        self.servers: dict[str, Hostile | TLSServer | HTTPServer] = {}
        self._stack = contextlib.AsyncExitStack()

    def _hostile(self, pki: TestPKI) -> dict[str, Hostile]:
        cert = pki.issue(name_of("endless-tls"))
        return {
            "hang": Tarpit(self.host),
            "stall": StallingTLS(self.host),
            "garbage": Garbage.random_bytes(),
            "banner": Garbage.http_banner(),
            "slowloris": ScriptedHTTP(slowloris(), pace=SLOWLORIS_PACE),
            "dribble": ScriptedHTTP(slowloris()),  # the same, as fast as the loop goes
            "endless-length": ScriptedHTTP(endless_body(Body.LENGTH)),
            "endless-close": ScriptedHTTP(endless_body(Body.CLOSE)),
            "endless-chunked": ScriptedHTTP(endless_body(Body.CHUNKED)),
            "endless-tls": ScriptedHTTP(endless_body(Body.CHUNKED), cert=cert),
            "huge-status": ScriptedHTTP(huge_status_line()),
            "huge-header": ScriptedHTTP(huge_header_line()),
            "endless-headers": ScriptedHTTP(endless_headers()),
        }

    async def start(self) -> None:
        async with contextlib.AsyncExitStack() as stack:
            self.pki = stack.enter_context(TestPKI(self.directory))
            self.ca_pem_path = self.pki.ca_pem_path
            self.dns = await stack.enter_async_context(ChainDNS(self.host))
            servers: dict[str, Hostile | TLSServer | HTTPServer] = {
                **self._hostile(self.pki),
                "tls-ok": TLSServer(self.pki.issue(name_of("tls-ok")), host=self.host),
                "https-ok": HTTPServer(self.pki.issue(name_of("https-ok")), host=self.host),
            }
            for key, server in servers.items():
                self.servers[key] = await stack.enter_async_context(server)
                self.dns.add_a(name_of(key), self.host)
            self.dns.add_loop(name_of("loop"), name_of("loop-a"), name_of("loop-b"))
            self.dns.add_deep_chain(name_of("deep"), self.host)
            self.dns.add_rrsets(name_of("huge"), *_huge_answer(name_of("huge")))
            self._stack = stack.pop_all()

    async def stop(self) -> None:
        await self._stack.aclose()

    @property
    def dns_port(self) -> int:
        return self.dns.port

    def port(self, key: str) -> int:
        return self.servers[key].port

    def hostile_server(self, key: str) -> Hostile:
        server = self.servers[key]
        if not isinstance(server, Hostile):
            raise KeyError(f"{key} is not a hostile server")
        return server


def _rrsets(records: Iterable[tuple[str, str, str]]) -> Iterator[dns.rrset.RRset]:
    """(owner, type, value) records as RRsets, TTL 60, in the order owners and types came."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for owner, rdtype, value in records:
        grouped.setdefault((owner, rdtype), []).append(value)
    for (owner, rdtype), values in grouped.items():
        yield dns.rrset.from_text_list(_name(owner), 60, "IN", rdtype, values)


@functools.cache  # parsed once per test run
def _huge_answer(name: str) -> tuple[dns.rrset.RRset, ...]:
    """HUGE_ANSWER distinct loopback addresses (127.1.0.0 upwards; 16 bytes each on the
    wire), then one TXT record of 255-byte strings that makes the message about HUGE_BYTES."""
    addresses = [(name, "A", f"127.1.{i // 256}.{i % 256}") for i in range(HUGE_ANSWER)]
    strings = (HUGE_BYTES - 16 * HUGE_ANSWER) // 256
    padding = (name, "TXT", " ".join(f'"{i:05d}{"p" * 250}"' for i in range(strings)))
    return tuple(_rrsets([*addresses, padding]))
