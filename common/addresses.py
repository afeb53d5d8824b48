"""Address literal or name? Asked by the config reader and on the probe's hot path."""

from __future__ import annotations

import functools
import ipaddress


@functools.lru_cache(maxsize=4096)  # asked for every check of a few hundred names
def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
