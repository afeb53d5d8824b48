"""The one interface every check kind implements, and what a check may use to do its work.

A check is a pure measurer: given a target and the shared context it fills in a Result
(phases, addresses, TLS facts, ...) and raises CheckFailure (or lets an OS/TLS error escape)
when the endpoint does not work. Timing, timeouts and classifying errors into outcomes are
the runner's job (courierwatch.probe.runner), so every kind gets them the same way.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from courierwatch.probe import catalog
from courierwatch.probe.rotation import Rotation
from courierwatch.v1 import courierwatch_pb2 as pb

if TYPE_CHECKING:
    from courierwatch.probe.proxy import ProxySettings
    from courierwatch.probe.resolver import Resolver
    from courierwatch.probe.sanity import Network
    from courierwatch.probe.targets import Target
    from courierwatch.probe.trust import TrustStore


class CheckFailure(Exception):
    """The endpoint answered, but not in a way that works; carries the outcome to report."""

    def __init__(self, outcome: pb.Outcome.ValueType, detail: str) -> None:
        super().__init__(detail)
        self.outcome = outcome
        self.detail = detail


@dataclass(frozen=True, slots=True)
class CheckContext:
    """What checks share: built once per probe (courierwatch.probe.context.build_context)."""

    resolver: Resolver
    trust: TrustStore
    apple_ranges: Sequence[Network] = field(default_factory=lambda: catalog.apple().ranges)
    pop_pattern: re.Pattern[str] = field(default_factory=lambda: catalog.apple().pop_pattern)
    proxy: ProxySettings | None = None  # the site's HTTP proxy, for targets with via="proxy"
    rotation: Rotation = field(default_factory=Rotation)  # which numbered host comes next


Check = Callable[["Target", CheckContext, pb.Result], Awaitable[None]]
