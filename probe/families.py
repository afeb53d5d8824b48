"""Which address families this site uses: IPv6 is checked only where the probe has it.

A site without IPv6 would otherwise report every v6 check as failing; a site with a broken v6
path must see those failures, in their own series, while v4 keeps working.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Final

# Any global address will do: connecting a UDP socket only asks the kernel for a route and a
# source address; no packet is sent.
_V6_PROBE: Final = ("2001:db8::1", 9)
_GLOBAL_UNICAST: Final = ipaddress.ip_network("2000::/3")


def host_has_ipv6() -> bool:
    """True when the host has a route to the IPv6 internet from a global unicast address.

    A unique-local (fd00::/8) or link-local source does not count: from there the v6 internet
    is not reachable without NAT66, which Apple devices on the same network would not have.
    """
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.connect(_V6_PROBE)
            source = ipaddress.ip_address(sock.getsockname()[0])
    except OSError:  # no IPv6 stack, or no route
        return False
    return source in _GLOBAL_UNICAST
