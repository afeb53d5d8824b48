"""Which Akamai point of presence a courier name is steered to, read from its CNAME chain.

N-courier.push.apple.com -> N.courier-push-apple.com.akadns.net -> apac-asia-courier-4.push-
apple.com.akadns.net: the last hop names the POP. Akamai may rename it any day, so the pattern
is configurable, and a courier chain that no longer fits is "unknown": still a courier, still
reported, never silently dropped.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

UNKNOWN: Final = "unknown"
NOT_A_COURIER: Final = ""

# Any hop of Akamai's courier names, whatever its shape: tells "a courier chain we cannot read"
# apart from "not a courier at all".
_COURIER_HOP = re.compile(r"(?:^|[.-])courier[^.]*\..*akadns\.net$")


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
    if any(_COURIER_HOP.search(name.rstrip(".").lower()) for name in chain):
        return UNKNOWN
    return NOT_A_COURIER
