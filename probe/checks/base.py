"""The one interface every check kind implements, and what a check may use to do its work.

A check is a pure measurer: given a target and the shared context it fills in a Result (phases,
addresses, TLS facts, ...) and raises CheckFailure (courierwatch.probe.failures), or lets an OS/TLS
error escape, when the endpoint does not work. Timing, timeouts and classifying errors into outcomes
are the runner's job (courierwatch.probe.runner), so every kind gets them the same way.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from courierwatch.probe.rotation import Rotation
from courierwatch.v1 import courierwatch_pb2 as pb

if TYPE_CHECKING:
    from courierwatch.probe.net.proxy import ProxySettings
    from courierwatch.probe.net.resolver import Resolver
    from courierwatch.probe.sanity import Network
    from courierwatch.probe.targets import Target
    from courierwatch.probe.trust import TrustStore


@dataclass(frozen=True, slots=True)
class CheckContext:
    """What checks share: built once per probe (courierwatch.probe.context.build_context)."""

    resolver: Resolver
    trust: TrustStore
    apple_ranges: Sequence[Network]
    pop_pattern: re.Pattern[str]
    proxy: ProxySettings | None = None  # the site's HTTP proxy, for targets with via="proxy"
    rotation: Rotation = field(default_factory=Rotation)  # which numbered host comes next


Check = Callable[["Target", CheckContext, pb.Result], Awaitable[None]]
