"""What to check: one Target is one (host, port, check kind) with its schedule and options."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    port: int
    check: str  # kind name, a key of courierwatch.probe.checks.CHECKS
    group: str = "custom"  # Apple service group, used as a label
    interval: float = 60.0  # seconds between runs
    timeout: float = 10.0  # seconds for one run, all phases together
    # TLS: server name sent and verified (default: host). Couriers are verified as
    # courier.push.apple.com whichever numbered host is dialled.
    sni: str | None = None
    alpn: tuple[str, ...] = ()  # protocols offered in the TLS handshake
    # Extra trust anchors (PEM paths) beyond the probe-wide ones: Apple Root CA for couriers.
    anchors: tuple[str, ...] = ()
    # HTTP
    tls: bool | None = None  # HTTP over TLS; None means "unless the port is 80"
    path: str = "/"
    expect_status: tuple[int, ...] = ()  # empty: any status below 500 is an answer

    @property
    def server_name(self) -> str:
        return self.sni or self.host

    @property
    def key(self) -> tuple[str, int, str]:
        """Identity within one probe: two targets with the same key would be one series."""
        return (self.host, self.port, self.check)
