"""Which Akamai point of presence a courier name is steered to, read from its CNAME chain.

N-courier.push.apple.com -> N.courier-push-apple.com.akadns.net -> <edge>: the edge hop names
the POP. Its shape has changed over the years, and the catalog's pattern reads every one seen:

    pop-namer-ne-courier.push-apple.com.akadns.net      2017 talk        -> namer-ne
    apac-asia-courier-4.push-apple.com.akadns.net       2019 talk        -> apac-asia
    pop-eur-benelux-courier.push-apple.com.akadns.net   public captures  -> eur-benelux
    us-courier.push-apple.com.akadns.net, china-courier...               -> us, china

A `pop-` prefix is not part of the name, so `pop-eur-central` and `eu-central` style names
both read as the POP. Akamai may rename it any day, so the pattern is configurable, and a
courier chain that no longer fits is "unknown": still a courier, still reported, never silently
dropped, and its edge hop is logged once so that the pattern can be taught the new shape.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Final

log = logging.getLogger(__name__)

UNKNOWN: Final = "unknown"
NOT_A_COURIER: Final = ""

# Any hop of Akamai's courier names, whatever its shape: tells "a courier chain we cannot read"
# apart from "not a courier at all".
_COURIER_HOP = re.compile(r"(?:^|[.-])courier[^.]*\..*akadns\.net$")
# Edge names of unknown shape already logged: each once, and a bounded number of them, since a
# hostile resolver could answer every lookup with a new one.
_LOGGED: set[str] = set()
_MAX_LOGGED: Final = 100


def compile_pattern(text: str) -> re.Pattern[str]:
    """A POP pattern: a regular expression with a named group `pop`; ValueError if not."""
    try:
        pattern = re.compile(text, re.IGNORECASE)
    except re.error as error:
        raise ValueError(f"not a regular expression: {error}") from None
    if "pop" not in pattern.groupindex:
        raise ValueError("needs a named group (?P<pop>...)")
    return pattern


def extract(chain: Sequence[str], pattern: re.Pattern[str]) -> str:
    """The POP token of the first hop the pattern matches in full; "unknown" when the chain
    goes through courier names but none matches; "" when it is no courier chain."""
    for name in chain:
        match = pattern.fullmatch(name.rstrip("."))
        if match and match["pop"]:
            return match["pop"].lower()
    hops = [name.rstrip(".").lower() for name in chain]
    unknown = [hop for hop in hops if _COURIER_HOP.search(hop)]
    if not unknown:
        return NOT_A_COURIER
    edge = unknown[-1]
    if edge not in _LOGGED and len(_LOGGED) < _MAX_LOGGED:
        _LOGGED.add(edge)
        log.warning("courier chain of unknown shape (POP %r): edge hop %s", UNKNOWN, edge)
    return UNKNOWN
