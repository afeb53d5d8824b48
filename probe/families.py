"""Which address families this site uses: IPv6 is checked only where the probe has it.

A site without IPv6 would otherwise report every v6 check as failing; a site with a broken v6
path must see those failures, in their own series, while v4 keeps working. `families: auto`
decides once per config load and says why, so that a site whose IPv6 checks are missing can
tell "not routed here" from "left out by mistake" (the log, and the probe's Hello).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["CONFIGURED", "Choice", "IPv6", "auto", "host_has_ipv6"]

# Any global address will do: connecting a UDP socket only asks the kernel for a route and a
# source address; no packet is sent.
_V6_PROBE: Final = ("2001:db8::1", 9)
_GLOBAL_UNICAST: Final = ipaddress.ip_network("2000::/3")
_UNIQUE_LOCAL: Final = ipaddress.ip_network("fc00::/7")
_IF_INET6: Final = "/proc/net/if_inet6"  # Linux: one line per address, its interface last
CONFIGURED: Final = "configured"  # the reason when the config lists the families itself


@dataclass(frozen=True, slots=True)
class IPv6:
    """What this host's IPv6 looks like: usable for checks, and the evidence in words."""

    usable: bool
    evidence: str  # e.g. "global address 2001:db8::5 on eth0 with a route to the IPv6 internet"


@dataclass(frozen=True, slots=True)
class Choice:
    families: tuple[str, ...]
    reason: str  # one line: which families and why


def auto(found: IPv6 | bool) -> Choice:
    """What `families: auto` runs for what the host has (a bare bool: told, not looked at)."""
    if isinstance(found, bool):
        found = IPv6(found, "a global IPv6 address with a route" if found else "no IPv6 route")
    if found.usable:
        return Choice(("ipv4", "ipv6"), f"IPv6 too: {found.evidence}")
    return Choice(("ipv4",), f"IPv4 only: {found.evidence}")


def host_has_ipv6() -> IPv6:
    """Usable when the host has a route to the IPv6 internet from a global unicast address.

    A unique-local (fc00::/7) or link-local source does not count: from there the v6 internet
    is not reachable without NAT66, which Apple devices on the same network would not have.
    """
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    except OSError:
        return IPv6(False, "this host has no IPv6 stack")
    with sock:
        try:
            sock.connect(_V6_PROBE)
        except OSError:
            return IPv6(False, "no IPv6 default route")
        source = ipaddress.ip_address(sock.getsockname()[0])
    device = _interface(source)
    where = f"{source} on {device}" if device else str(source)
    if source in _GLOBAL_UNICAST:
        return IPv6(True, f"global address {where} with a route to the IPv6 internet")
    kind = (
        "unique-local"
        if source in _UNIQUE_LOCAL
        else "link-local"
        if source.is_link_local
        else "non-global"
    )
    return IPv6(
        False, f"the IPv6 route leaves from {where}, a {kind} address (no NAT66 for devices)"
    )


def _interface(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """The interface holding the address, where the system says (Linux), else None."""
    try:
        with Path(_IF_INET6).open(encoding="ascii") as file:
            table = file.read(1 << 16)  # one short line per address
    except OSError:
        return None
    wanted = address.packed.hex()
    for line in table.splitlines():
        fields = line.split()
        if len(fields) == 6 and fields[0] == wanted:
            return fields[5]
    return None
