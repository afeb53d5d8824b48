"""The lab's address plan: everything inside 198.18.0.0/15 (RFC 2544, benchmarking) and, for
IPv6, 2001:db8::/32 (RFC 3849, documentation). Nothing here is routed beyond the lab.

    root namespace  198.18.255.(4k+1)/30 ── router 198.18.255.(4k+2)   (the collector's link;
                    one /30 per lab alive on the machine, k picked free at creation)
    router          198.18.0.1/30, 2001:db8:ff00::1/64 ── apple 198.18.0.2, 2001:db8:ff00::2
    router          198.18.N.1/24, 2001:db8:N::1/64 ── site N 198.18.N.2, 2001:db8:N::2
                    (N = 1, 2, ... in the order the sites are given; hex in IPv6)
    apple services  198.19.0.0/16 and 2001:db8:ff::/48, on the apple namespace's loopback
"""

from __future__ import annotations

import enum
from typing import Final

LAB_RANGES: Final = ("198.18.0.0/15", "2001:db8::/32")  # the probes' apple.ranges
APPLE_NET4: Final = "198.19.0.0/16"
APPLE_NET6: Final = "2001:db8:ff::/48"
ROUTER_APPLE4, APPLE4 = "198.18.0.1", "198.18.0.2"
ROUTER_APPLE6, APPLE6 = "2001:db8:ff00::1", "2001:db8:ff00::2"
NOC_BLOCK: Final = "198.18.255"  # /30s of the root namespace's links, one per lab
PRIVATE_ADDRESS: Final = "10.20.30.40"  # what a hijacking resolver answers (never routed)
PROXY_PORT: Final = 3128
MAX_SITES: Final = 254


class Service(enum.IntEnum):
    """Apple's service addresses: the last byte (v4) or group (v6) of each."""

    COURIER = 10  # TLS on 5223 and 443, courier.push.apple.com, ALPN apns-security-v3
    PROVIDER = 11  # TLS on 443 and 2197, the provider API names, ALPN h2
    WEB = 12  # HTTPS 443 and HTTP 80 for every other catalog name (OCSP, CRL, setup ...)
    INSPECTION = 20  # an SSL-inspection box: the inspection CA's chain on 443, 5223, 2197
    PROVIDER_H1 = 21  # the provider API behind a middlebox that speaks only HTTP/1.1


def service(role: Service, family: int) -> str:
    return f"198.19.0.{int(role)}" if family == 4 else f"2001:db8:ff::{int(role)}"


def resolver(n: int) -> str:
    """Site N's nameserver (a FakeDNS in the apple namespace answering N's zone)."""
    return f"198.19.53.{n}"


def ntp(n: int, family: int) -> str:
    """Site N's time.apple.com (its own clock, so one site can be skewed alone)."""
    return f"198.19.123.{n}" if family == 4 else f"2001:db8:ff:123::{n}"


def router_side(n: int, family: int) -> str:
    return f"198.18.{n}.1" if family == 4 else f"2001:db8:{n:x}::1"


def site_side(n: int, family: int) -> str:
    return f"198.18.{n}.2" if family == 4 else f"2001:db8:{n:x}::2"


def noc_link(k: int) -> tuple[str, str]:
    """(root side, router side) of the k-th collector link."""
    return f"{NOC_BLOCK}.{4 * k + 1}", f"{NOC_BLOCK}.{4 * k + 2}"


def apple_addresses(sites: int) -> list[str]:
    """Every address the apple namespace holds on its loopback, as CIDR."""
    out = [f"{service(role, 4)}/32" for role in Service]
    out += [f"{service(role, 6)}/128" for role in Service]
    for n in range(1, sites + 1):
        out += [f"{resolver(n)}/32", f"{ntp(n, 4)}/32", f"{ntp(n, 6)}/128"]
    return out
