"""`courierwatch check`: every check once, all at the same time, printed as a readiness report."""

from __future__ import annotations

import time
from typing import Final

from courierwatch.common.configfile import join_host_port
from courierwatch.probe.config import ProbeConfig, load_probe_config
from courierwatch.probe.context import build_context
from courierwatch.probe.oneshot import readiness, report
from courierwatch.probe.scheduler import run_once

# A one-shot run starts everything at once so that it takes as long as its slowest check, not
# the sum; the cap only keeps file descriptors well under the usual limit of 1024.
MAX_CONCURRENCY: Final = 512


async def check_once(config_path: str | None, *, as_json: bool, show_all: bool = False) -> int:
    """Exit status: 0 when the site is ready (readiness.Readiness.ready), 1 when it is not (a
    config error raises ConfigError, which the CLI turns into 2). show_all appends every
    check."""
    config = load_probe_config(config_path, require_identity=False)
    started = time.perf_counter()
    results = await run_once(
        config.targets,
        build_context(config),
        concurrency=min(MAX_CONCURRENCY, max(config.concurrency, len(config.targets))),
    )
    assessed = readiness.assess(
        results,
        site=config.site,
        probe=config.probe_id,
        elapsed=time.perf_counter() - started,
        groups=config.groups,
        targets=config.targets,
        facts=facts(config),
    )
    if as_json:
        print(report.readiness_json(assessed))
    else:
        print(report.readiness_text(assessed))
        if show_all:
            print()
            print(report.as_table(results))
    return 0 if assessed.ready else 1


def facts(config: ProbeConfig) -> readiness.Facts:
    """What the fix texts name from the config: Apple's ranges, the proxy, the nameservers."""
    port = config.resolver_port
    resolvers = [ns if port == 53 else join_host_port(ns, port) for ns in config.nameservers]
    return readiness.Facts(
        ranges=config.apple_ranges,
        proxy=config.proxy.name if config.proxy else "",
        resolvers=", ".join(resolvers),
    )
