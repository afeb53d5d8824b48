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

Servers (`*_port` attributes; all on `host`):
  courier    TLS, cert for courier.push.apple.com from the trusted CA, ALPN apns-security-v3
  https      HTTPS, one cert for the HTTPS_NAMES; routes `/`, `/status/{code}`, `/slow`
  http       the same routes over plain HTTP
  untrusted  TLS, cert for untrusted.apple.com from the other (untrusted) CA
  mismatch   TLS, trusted cert for mismatch.example.net only (name mismatch)
  expired    TLS, trusted cert for expired.apple.com whose validity ended yesterday
  silent     TCP, accepts and never sends (handshakes time out)
  closed_port: nothing listens (connections refused)

Trust: `ca_pem_path` is the root to trust; `other_ca_pem_path` the interceptor's.
"""

from __future__ import annotations

import contextlib
import datetime
import os

from ._streams import LOCALHOST, Service
from .dns import FakeDNS
from .pki import TestPKI
from .servers import HTTPServer, SilentServer, TLSServer, closed_port

__all__ = [
    "COURIER_ALPN",
    "COURIER_POP",
    "COURIER_SNI",
    "HTTPS_NAMES",
    "HTTP_NAME",
    "FakeApple",
    "FakeDNS",
    "HTTPServer",
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
        self.dns.nxdomain("nxdomain.apple.com")
        self.dns.servfail("servfail.apple.com")
        self.dns.drop("slowdns.apple.com")
        self.dns.add_txt("noaddress.apple.com", "exists, but has no address")

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
