"""What a test asks of a site: its resolver, its path faults and its proxy. Plain values,
checked when made, so a typo fails in the test that wrote it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from courierwatch.probe import catalog

DnsMode = Literal["normal", "sinkhole", "hijack", "unreachable"]
Block = Literal[False, True, "refuse", "drop"]  # True is "refuse"
Ipv6 = Literal["ok", "broken", "off"]
DNS_MODES: Final = ("normal", "sinkhole", "hijack", "unreachable")
IPV6_MODES: Final = ("ok", "broken", "off")
PROXY_PORTS: Final = (80, 443, 2197, 5223)  # what a proxy allows CONNECT to unless denied


@dataclass(frozen=True, slots=True)
class Proxy:
    """The site's explicit HTTP proxy (a real tinyproxy). deny_ports: CONNECT to these is
    refused (403: tinyproxy's ConnectPort lists the others); auth: every request needs
    BasicAuth (407)."""

    deny_ports: tuple[int, ...] = ()
    auth: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "deny_ports", tuple(self.deny_ports))
        unknown = set(self.deny_ports) - set(PROXY_PORTS)
        if unknown:
            raise ValueError(f"Proxy.deny_ports: {sorted(unknown)} not among {PROXY_PORTS}")


@dataclass(frozen=True, slots=True)
class Site:
    """One site. Path faults apply between the site and Apple's addresses only (never to the
    collector's link), in the router, except `delay`/`jitter` (on the site's own egress) and
    dns="unreachable" (no route to its nameserver, in the site).

    dns         normal; sinkhole: courier names answer 0.0.0.0 and :: (a Pi-hole);
                hijack: courier names answer PRIVATE_ADDRESS; unreachable: no route to it
    block_5223, block_443
                True or "refuse": TCP resets; "drop": SYNs vanish (timeouts)
    loss        port -> share of packets towards that port dropped at random, both families
    delay, jitter  seconds added to every packet towards Apple (jitter: uniform on top)
    ipv6        ok; broken: the router drops the site's IPv6; off: the site has none
    intercept   an SSL-inspection box answers the couriers and the provider API (DNAT to it)
    strip_h2    a middlebox answers the provider API with HTTP/1.1 only
    proxy       the site's HTTP proxy (the probe config gets proxy.url)
    pop         the POP the courier CNAME chain names
    ntp_offset  seconds the site's time.apple.com runs ahead (lab.set_ntp_offset changes it)
    groups      catalog groups the site's probe checks
    unresolved  catalog groups whose names the site's resolver answers NXDOMAIN (a service
                blocked by name); a name another group shares goes with it
    """

    dns: DnsMode = "normal"
    block_5223: Block = False
    block_443: Block = False
    loss: Mapping[int, float] = field(default_factory=dict)
    delay: float = 0.0
    jitter: float = 0.0
    ipv6: Ipv6 = "ok"
    intercept: bool = False
    strip_h2: bool = False
    proxy: Proxy | None = None
    pop: str = "eu-central"
    ntp_offset: float = 0.0
    groups: tuple[str, ...] = ("push", "push_provider")
    unresolved: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.dns not in DNS_MODES:
            raise ValueError(f"Site.dns: {self.dns!r}, expected one of {DNS_MODES}")
        if self.ipv6 not in IPV6_MODES:
            raise ValueError(f"Site.ipv6: {self.ipv6!r}, expected one of {IPV6_MODES}")
        for name in ("block_5223", "block_443"):
            if getattr(self, name) not in (False, True, "refuse", "drop"):
                raise ValueError(f"Site.{name}: {getattr(self, name)!r}, expected True, "
                                 "'refuse' or 'drop'")  # fmt: skip
        for port, share in self.loss.items():
            if not (1 <= port <= 65535 and 0.0 < share < 1.0):
                raise ValueError(f"Site.loss: {port}: {share}, expected a port and 0 < share < 1")
        if self.delay < 0 or self.jitter < 0:
            raise ValueError("Site.delay, Site.jitter: seconds, not negative")
        object.__setattr__(self, "groups", tuple(self.groups))
        object.__setattr__(self, "unresolved", tuple(self.unresolved))
        unknown = set(self.unresolved) - set(catalog.groups())
        if unknown:
            raise ValueError(f"Site.unresolved: {sorted(unknown)} are not catalog groups")

    def blocked(self) -> dict[int, str]:
        """port -> "refuse" or "drop"."""
        out = {}
        for port, how in ((5223, self.block_5223), (443, self.block_443)):
            if how:
                out[port] = "refuse" if how is True else str(how)
        return out

    @property
    def families(self) -> tuple[int, ...]:
        return (4,) if self.ipv6 == "off" else (4, 6)
