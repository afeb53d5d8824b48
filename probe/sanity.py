"""Is a DNS answer one a device could use, or a filter's? Judged before anything is dialled.

A DNS filter (Pi-hole and friends) answers blocked names with 0.0.0.0, :: or loopback; a
rewriting resolver or captive network answers with a private address or someone else's.
Either way the devices cannot reach Apple, but the fix is in DNS, not in the firewall, so
these are DNS outcomes and not "refused" or "timeout" from dialling the wrong place.

A hijacked answer says how it differs from Apple's: a courier name answered directly, without
the CNAME chain into Akamai's push-apple.com.akadns.net that Apple's answers always take, is
named so, with the address (what a device then gets there is the courier kind's to find out).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from typing import Final, NamedTuple

from courierwatch.v1 import courierwatch_pb2 as pb

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Finding(NamedTuple):
    outcome: pb.Outcome.ValueType
    detail: str
    address: str  # the answer that is not usable


# Names whose genuine answers always come through a CNAME chain, and where it leads: every
# courier capture (reference/apns-facts.md section 3) goes N-courier.push.apple.com ->
# N.courier-push-apple.com.akadns.net -> <pop>-courier.push-apple.com.akadns.net -> A.
_CHAINED: Final = (
    (
        re.compile(r"(?:\d+-)?courier(?:\.sandbox)?\.push\.apple\.com"),
        "*.push-apple.com.akadns.net",
    ),
)

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
    name: str,
    addresses: Sequence[str],
    policy: str,
    ranges: Sequence[Network],
    chain: Sequence[str] = (),
) -> Finding | None:
    """The finding for the first unusable address; None when every one is fine. `chain`: the
    CNAME chain the answer came through, to say how a hijacked one differs from Apple's.

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
            return _hijack(name, text, chain, "a private address")
        if policy == "apple":
            return _hijack(name, text, chain, "outside Apple's ranges")
    return None


def _hijack(name: str, address: str, chain: Sequence[str], why: str) -> Finding:
    expected = next((to for pattern, to in _CHAINED if pattern.fullmatch(name)), None)
    if chain:
        detail = f"{name} resolved to {address} via {chain[-1]}, {why}"
    elif expected:
        detail = (
            f"{name} answered {address} directly, without Apple's CNAME chain to {expected} ({why})"
        )
    else:
        detail = f"{name} resolved to {address}, {why}"
    return Finding(pb.OUTCOME_DNS_HIJACK, detail, address)


def _sinkhole(name: str, address: str) -> Finding:
    return Finding(
        pb.OUTCOME_DNS_SINKHOLE, f"{name} resolved to {address}: blocked by a DNS filter", address
    )
