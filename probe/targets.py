"""What to check: one Target is one (host, port, check kind) with its schedule and options.

A configured target can stand for several series: `expand` makes one per address family and,
when the site has a proxy, one more through it. `key` names what a config wrote; `series`
tells the expanded copies apart.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

FAMILIES: Final = ("ipv4", "ipv6")
VIAS: Final = ("direct", "proxy")
# What DNS answers are acceptable for the name, checked before anything is dialled:
#   apple   inside Apple's ranges (and never a sinkhole or private address)
#   public  anything routable: no sinkhole, loopback or private address
#   any     only 0.0.0.0 and :: are refused (dialling them reaches this very host)
ADDRESS_POLICIES: Final = ("apple", "public", "any")

# Kinds that open a connection: they run once per address family and through a proxy.
_PER_FAMILY: Final = frozenset({"tcp", "tls", "http", "courier", "ntp"})
_PROXIABLE: Final = frozenset({"tcp", "tls", "http", "courier"})  # CONNECT carries TCP only


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
    # The handshake must negotiate this protocol (one of alpn); anything else means a
    # middlebox answered instead of the service.
    require_alpn: str | None = None
    # Extra trust anchors (PEM paths) beyond the probe-wide ones: Apple Root CA for couriers.
    anchors: tuple[str, ...] = ()
    # Substrings (case-insensitive) one of which an issuer of the presented chain must contain;
    # empty: any issuer. A chain from anyone else is SSL inspection.
    expect_issuer: tuple[str, ...] = ()
    # HTTP
    tls: bool | None = None  # HTTP over TLS; None means "unless the port is 80"
    path: str = "/"
    expect_status: tuple[int, ...] = ()  # empty: any status below 500 is an answer
    # Numbered instances: each run dials f"{n}-{host}" for the next n, as devices pick one of
    # the N-courier.push.apple.com names; host stays the logical name (and the SNI).
    numbers: tuple[int, ...] = ()
    addresses: str = "any"  # one of ADDRESS_POLICIES
    family: str = ""  # "ipv4", "ipv6", or "" for whichever DNS gives first
    via: str = "direct"  # "direct", or "proxy" for HTTP CONNECT through the site's proxy

    @property
    def server_name(self) -> str:
        return self.sni or self.host

    @property
    def key(self) -> tuple[str, int, str]:
        """What a config names: a custom target with the same key replaces a catalog one."""
        return (self.host, self.port, self.check)

    @property
    def series(self) -> tuple[str, int, str, str, str]:
        """Identity within one probe after expansion: two targets alike here are one series."""
        return (*self.key, self.family, self.via)


def expand(
    targets: Iterable[Target], families: Sequence[str], *, proxy: bool
) -> tuple[Target, ...]:
    """Each connecting target once per family (bound to it), plus once through the proxy.

    DNS targets stay as they are: a name is checked once, whatever path its users take.
    Through a proxy the proxy resolves and picks the family, so that copy is bound to none.
    """
    out: list[Target] = []
    for target in targets:
        if target.check not in _PER_FAMILY or target.family or target.via != "direct":
            out.append(target)  # already bound, or nothing to bind
            continue
        out.extend(
            dataclasses.replace(target, family=family)
            for family in _families_of(target.host, families)
        )
        if proxy and target.check in _PROXIABLE:
            out.append(dataclasses.replace(target, via="proxy"))
    return tuple(out)


def _families_of(host: str, families: Sequence[str]) -> Sequence[str]:
    """An address literal has one family whatever the site has; a name has the site's."""
    try:
        version = ipaddress.ip_address(host).version
    except ValueError:
        return families
    return ("ipv6",) if version == 6 else ("ipv4",)
