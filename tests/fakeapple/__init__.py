"""A little Apple for the tests: real sockets on 127.0.0.1 (ephemeral ports) that behave like
the Apple endpoints the probes check, good and broken.

`async with FakeApple(tmp_path) as apple:` starts everything below; every server is also
usable on its own (FakeDNS, TestPKI, TLSServer, HTTPServer, SilentServer, closed_port).

DNS (`apple.dns`, port `apple.dns_port`, UDP and TCP) answers like a recursive resolver:
  1..3-courier.push.apple.com  CNAME {n}.courier-push-apple.com.akadns.net
                               CNAME eu-central-courier-4.push-apple.com.akadns.net  A address
  gdmf.apple.com, mdmenrollment.apple.com, api.push.apple.com   A address (the HTTPS server)
  captive.apple.com                                             A address (the HTTP server)
  untrusted / mismatch / expired / silent .apple.com            A address
  nxdomain.apple.com NXDOMAIN, servfail.apple.com SERVFAIL, slowdns.apple.com never answered,
  noaddress.apple.com TXT only (NODATA for A/AAAA); any other name NXDOMAIN.
  time.apple.com                                                A address (the NTP server)
  sinkhole.push.apple.com  A 0.0.0.0, AAAA ::   (a DNS filter's answer)
  private.push.apple.com   A 10.20.30.40        (a rewriting resolver's answer)
  elsewhere.push.apple.com A 198.51.100.7       (an address outside Apple's ranges)
  9-courier.push.apple.com CNAME 9.courier-push-apple.com.akadns.net CNAME UNKNOWN_EDGE A address
  (a courier chain whose POP hop has a shape the default pattern does not know)
  `move_couriers(pop)` re-points couriers 1..3 at another POP mid-test.

Servers (`*_port` attributes; all on `host`):
  courier    TLS, cert for courier.push.apple.com from the trusted CA, ALPN apns-security-v3
  https      HTTPS, one cert for the HTTPS_NAMES; routes `/`, `/status/{code}`, `/slow`
  http       the same routes over plain HTTP
  untrusted  TLS, cert for untrusted.apple.com from the other (untrusted) CA
  mismatch   TLS, trusted cert for mismatch.example.net only (name mismatch)
  expired    TLS, trusted cert for expired.apple.com whose validity ended yesterday
  silent     TCP, accepts and never sends (handshakes time out)
  intercepting  TLS, what an SSL-inspection proxy presents for courier.push.apple.com and
             api.push.apple.com: a chain from the inspection CA (INSPECTION_ORG) via an
             intermediate; ALPN apns-security-v3 and h2
  provider   TLS, trusted cert for the provider API names, ALPN h2 only
  provider_h1   the same cert, ALPN http/1.1 only (a middlebox that does not speak HTTP/2)
  proxy      HTTP CONNECT proxy (`proxy.mode`: ALLOW, DENY 403, AUTH 407), tunnels to `host`
  ntp        SNTP over UDP, clock `ntp.offset` (2.5 s) ahead; `ntp.mode` SILENT, KISS, GARBAGE
  closed_port: nothing listens (connections refused)

Trust: `ca_pem_path` is the root to trust; `other_ca_pem_path` an unknown signer's;
`inspection_ca_pem_path` the inspection proxy's root (a site would list it under trust.site).

`fakeapple.probing` (not imported here, so the fake stays independent of the probe) has the
`apple` fixture and helpers that point a probe at all this.
"""

from __future__ import annotations

import contextlib
import datetime
import os

from ._streams import LOCALHOST, Service
from .dns import FakeDNS
from .ntp import FakeNTP, NtpMode
from .pki import INSPECTION_ORG, TestPKI
from .proxy import ConnectProxy, ProxyMode
from .servers import HTTPServer, SilentServer, TLSServer, closed_port

__all__ = [
    "COURIER_ALPN",
    "COURIER_NUMBERS",
    "COURIER_POP",
    "COURIER_SNI",
    "ELSEWHERE_NAME",
    "HTTPS_NAMES",
    "HTTP_NAME",
    "INSPECTION_ORG",
    "NTP_NAME",
    "PRIVATE_NAME",
    "PROVIDER_NAMES",
    "SINKHOLE_NAME",
    "UNKNOWN_EDGE",
    "UNKNOWN_POP_COURIER",
    "ConnectProxy",
    "FakeApple",
    "FakeDNS",
    "FakeNTP",
    "HTTPServer",
    "NtpMode",
    "ProxyMode",
    "SilentServer",
    "TLSServer",
    "TestPKI",
    "closed_port",
]

COURIER_SNI = "courier.push.apple.com"  # couriers are verified as this whichever is dialled
COURIER_ALPN = "apns-security-v3"
COURIER_POP = "eu-central"
COURIER_NUMBERS = (1, 2, 3)
HTTPS_NAMES = ("gdmf.apple.com", "mdmenrollment.apple.com", "api.push.apple.com")
HTTP_NAME = "captive.apple.com"
UNTRUSTED_NAME = "untrusted.apple.com"
MISMATCH_NAME = "mismatch.apple.com"
MISMATCH_CERT_NAME = "mismatch.example.net"
EXPIRED_NAME = "expired.apple.com"
SILENT_NAME = "silent.apple.com"
PROVIDER_NAMES = ("api.push.apple.com", "api.sandbox.push.apple.com")
NTP_NAME = "time.apple.com"
SINKHOLE_NAME = "sinkhole.push.apple.com"
PRIVATE_NAME = "private.push.apple.com"
PRIVATE_ADDRESS = "10.20.30.40"
ELSEWHERE_NAME = "elsewhere.push.apple.com"
ELSEWHERE_ADDRESS = "198.51.100.7"
UNKNOWN_POP_COURIER = 9
UNKNOWN_EDGE = "courier-anycast-9.push-apple.com.akadns.net"


class FakeApple(Service):
    """Everything in the module docstring, started on enter and stopped on exit.

    `directory` receives the CA PEMs (a private temp dir when None); `address` is what the
    preloaded names resolve to and where servers listen (must be in 127.0.0.0/8)."""

    def __init__(
        self, directory: str | os.PathLike[str] | None = None, address: str = LOCALHOST
    ) -> None:
        self.directory = directory
        self.host = address
        self.courier_hosts = [f"{n}-courier.push.apple.com" for n in COURIER_NUMBERS]
        self._stack = contextlib.AsyncExitStack()

    async def start(self) -> None:
        async with contextlib.AsyncExitStack() as stack:
            # Undo whatever already started if a later piece fails.
            self.pki = stack.enter_context(TestPKI(self.directory))
            self.ca_pem_path = self.pki.ca_pem_path
            self.other_ca_pem_path = self.pki.other_ca_pem_path
            self.inspection_ca_pem_path = self.pki.inspection_ca_pem_path
            now = datetime.datetime.now(datetime.UTC)
            expired_cert = self.pki.issue(
                EXPIRED_NAME,
                not_before=now - datetime.timedelta(days=30),
                not_after=now - datetime.timedelta(days=1),
            )
            host = self.host
            self.dns = await stack.enter_async_context(FakeDNS(host))
            self.courier = await stack.enter_async_context(
                TLSServer(self.pki.issue(COURIER_SNI), alpn=[COURIER_ALPN], host=host)
            )
            self.https = await stack.enter_async_context(
                HTTPServer(self.pki.issue(*HTTPS_NAMES), host=host)
            )
            self.http = await stack.enter_async_context(HTTPServer(None, host=host))
            self.untrusted = await stack.enter_async_context(
                TLSServer(self.pki.issue_untrusted(UNTRUSTED_NAME), host=host)
            )
            self.mismatch = await stack.enter_async_context(
                TLSServer(self.pki.issue(MISMATCH_CERT_NAME), host=host)
            )
            self.expired = await stack.enter_async_context(TLSServer(expired_cert, host=host))
            self.silent = await stack.enter_async_context(SilentServer(host))
            inspected = self.pki.issue_inspected(COURIER_SNI, *PROVIDER_NAMES)
            self.intercepting = await stack.enter_async_context(
                TLSServer(inspected, alpn=[COURIER_ALPN, "h2"], host=host)
            )
            provider_cert = self.pki.issue(*PROVIDER_NAMES)
            self.provider = await stack.enter_async_context(
                TLSServer(provider_cert, alpn=["h2"], host=host)
            )
            self.provider_h1 = await stack.enter_async_context(
                TLSServer(provider_cert, alpn=["http/1.1"], host=host)
            )
            self.proxy = await stack.enter_async_context(ConnectProxy(upstream=host))
            self.ntp = await stack.enter_async_context(FakeNTP())
            self.closed_port = closed_port(host)
            self._load_zone()
            self._stack = stack.pop_all()

    def _load_zone(self) -> None:
        for n in COURIER_NUMBERS:
            self.dns.courier_chain(n, COURIER_POP, self.host)
        for name in (
            *HTTPS_NAMES,
            HTTP_NAME,
            UNTRUSTED_NAME,
            MISMATCH_NAME,
            EXPIRED_NAME,
            SILENT_NAME,
        ):
            self.dns.add_a(name, self.host)
        self.dns.add_a(NTP_NAME, self.host)
        self.dns.add_a(SINKHOLE_NAME, "0.0.0.0")
        self.dns.add_aaaa(SINKHOLE_NAME, "::")
        self.dns.add_a(PRIVATE_NAME, PRIVATE_ADDRESS)
        self.dns.add_a(ELSEWHERE_NAME, ELSEWHERE_ADDRESS)
        self.dns.courier_chain(UNKNOWN_POP_COURIER, "", self.host, edge=UNKNOWN_EDGE)
        self.dns.nxdomain("nxdomain.apple.com")
        self.dns.servfail("servfail.apple.com")
        self.dns.drop("slowdns.apple.com")
        self.dns.add_txt("noaddress.apple.com", "exists, but has no address")

    def move_couriers(self, pop: str) -> None:
        """Re-point couriers 1..3 at another POP, as Akamai does when it steers a site."""
        for n in COURIER_NUMBERS:
            self.dns.courier_chain(n, pop, self.host)

    async def stop(self) -> None:
        await self._stack.aclose()

    # Ports, so a test can write a probe config without reaching into the servers.
    @property
    def dns_port(self) -> int:
        return self.dns.port

    @property
    def courier_port(self) -> int:
        return self.courier.port

    @property
    def https_port(self) -> int:
        return self.https.port

    @property
    def http_port(self) -> int:
        return self.http.port

    @property
    def untrusted_port(self) -> int:
        return self.untrusted.port

    @property
    def mismatch_port(self) -> int:
        return self.mismatch.port

    @property
    def expired_port(self) -> int:
        return self.expired.port

    @property
    def silent_port(self) -> int:
        return self.silent.port

    @property
    def intercepting_port(self) -> int:
        return self.intercepting.port

    @property
    def provider_port(self) -> int:
        return self.provider.port

    @property
    def provider_h1_port(self) -> int:
        return self.provider_h1.port

    @property
    def proxy_port(self) -> int:
        return self.proxy.port

    @property
    def ntp_port(self) -> int:
        return self.ntp.port
