"""Is a DNS answer one a device could use, or a filter's? Judged before anything is dialled.

A DNS filter (Pi-hole and friends) answers blocked names with 0.0.0.0, :: or loopback; a
rewriting resolver or captive network answers with a private address or someone else's.
Either way the devices cannot reach Apple, but the fix is in DNS, not in the firewall, so
these are DNS outcomes and not "refused" or "timeout" from dialling the wrong place.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Final

from courierwatch.v1 import courierwatch_pb2 as pb

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Finding = tuple[pb.Outcome.ValueType, str]

_PRIVATE: Final = tuple(
    ipaddress.ip_network(net)
    for net in (
        "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",  # RFC 1918
        "100.64.0.0/10",  # carrier-grade NAT (RFC 6598)
        "169.254.0.0/16", "fe80::/10",  # link-local
        "fc00::/7",  # unique local (RFC 4193)
    )
)  # fmt: skip


def parse_ranges(values: Sequence[str]) -> tuple[Network, ...]:
    """CIDR strings -> networks; ValueError naming the bad one."""
    out = []
    for value in values:
        try:
            out.append(ipaddress.ip_network(value, strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not an address range such as 17.0.0.0/8") from None
    return tuple(out)


def judge(
    name: str, addresses: Sequence[str], policy: str, ranges: Sequence[Network]
) -> Finding | None:
    """The outcome and detail for the first unusable address; None when every one is fine.

    One bad address is enough: a device may pick it. An address inside the expected ranges is
    always fine, so a lab can list 127.0.0.0/8 there; 0.0.0.0 and :: never are.
    """
    for text in addresses:
        address = ipaddress.ip_address(text)
        if address.is_unspecified:
            return _sinkhole(name, text)
        if policy == "any" or (policy == "apple" and any(address in net for net in ranges)):
            continue
        if address.is_loopback:
            return _sinkhole(name, text)
        if any(address in net for net in _PRIVATE):
            return pb.OUTCOME_DNS_HIJACK, f"{name} resolved to {text}, a private address"
        if policy == "apple":
            return pb.OUTCOME_DNS_HIJACK, f"{name} resolved to {text}, outside Apple's ranges"
    return None


def _sinkhole(name: str, address: str) -> Finding:
    return pb.OUTCOME_DNS_SINKHOLE, f"{name} resolved to {address}: blocked by a DNS filter"
