"""The shared context every check of one probe runs with, built from its config."""

from __future__ import annotations

from courierwatch.probe.checks.base import CheckContext
from courierwatch.probe.config import ProbeConfig
from courierwatch.probe.net.resolver import Resolver
from courierwatch.probe.trust import TrustStore


def build_context(config: ProbeConfig) -> CheckContext:
    return CheckContext(
        resolver=Resolver(config.nameservers, config.resolver_port),
        trust=TrustStore(config.trust_anchors, config.trust_system, config.trust_site),
        apple_ranges=config.apple_ranges,
        pop_pattern=config.pop_pattern,
        proxy=config.proxy,
    )
