"""What to check: one Target is one (host, port, check kind) with its schedule and options.

A configured target can stand for several series: `expand` makes one per address family and,
when the site has a proxy, one more through it, as each kind's spec says. `key` names what a
config wrote; `series` tells the expanded copies apart.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from courierwatch.probe import checks

FAMILIES: Final = ("ipv4", "ipv6")
VIAS: Final = ("direct", "proxy")
# What DNS answers are acceptable for the name, checked before anything is dialled:
#   apple   inside Apple's ranges (and never a sinkhole or private address)
#   public  anything routable: no sinkhole, loopback or private address
#   any     only 0.0.0.0 and :: are refused (dialling them reaches this very host)
ADDRESS_POLICIES: Final = ("apple", "public", "any")


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    port: int
    check: str  # kind name, a key of courierwatch.probe.checks.kinds()
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
    # (name, value) of the options of kinds from outside this package: those have no field.
    extra: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, options: Mapping[str, Any], **fields: Any) -> Target:
        """A target with its kind's options: each in its field, or else in `extra`."""
        own = {name: value for name, value in options.items() if name in _FIELDS}
        extra = tuple((name, value) for name, value in options.items() if name not in _FIELDS)
        return cls(**fields, **own, extra=extra)

    def option(self, name: str) -> Any:
        """A kind option by name, with a field of its own or not (KeyError if the kind has none)."""
        if name in _FIELDS:
            return getattr(self, name)
        return dict(self.extra)[name]

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
    kinds = checks.kinds()
    for target in targets:
        kind = kinds[target.check]
        if not kind.per_family or target.family or target.via != "direct":
            out.append(target)  # already bound, or nothing to bind
            continue
        out.extend(
            dataclasses.replace(target, family=family)
            for family in _families_of(target.host, families)
        )
        if proxy and kind.via_proxy:
            out.append(dataclasses.replace(target, via="proxy"))
    return tuple(out)


_FIELDS: Final = frozenset(field.name for field in dataclasses.fields(Target)) - {"extra"}


def _families_of(host: str, families: Sequence[str]) -> Sequence[str]:
    """An address literal has one family whatever the site has; a name has the site's."""
    try:
        version = ipaddress.ip_address(host).version
    except ValueError:
        return families
    return ("ipv6",) if version == 6 else ("ipv4",)
