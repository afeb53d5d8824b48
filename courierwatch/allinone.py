"""`courierwatch up`: a collector and a probe in one process, for a first look."""

from __future__ import annotations

import asyncio
import dataclasses
import logging

from courierwatch.collector.config import CollectorConfig
from courierwatch.collector.server import Bound, serve
from courierwatch.configfile import TransportConfig
from courierwatch.probe.config import ProbeConfig, load_probe_config
from courierwatch.probe.daemon import run_probe

log = logging.getLogger(__name__)

_PLAINTEXT = TransportConfig(insecure=True, ca=None, cert=None, key=None)


def up_config(path: str | None, *, http: str, grpc: str) -> tuple[CollectorConfig, ProbeConfig]:
    collector = CollectorConfig(grpc_listen=grpc, http_listen=http, transport=_PLAINTEXT)
    probe = load_probe_config(path, require_identity=False)
    return collector, probe


async def run_up(collector: CollectorConfig, probe: ProbeConfig, stop: asyncio.Event) -> None:
    ready: asyncio.Future[Bound] = asyncio.get_running_loop().create_future()
    async with asyncio.TaskGroup() as group:
        group.create_task(serve(collector, stop, ready.set_result))
        bound = await ready
        # The probe dials whatever the collector really bound (the port may have been 0).
        local = dataclasses.replace(probe, collectors=(bound.grpc,), transport=_PLAINTEXT)
        group.create_task(run_probe(local, stop))
        print(
            f"courierwatch is up: {len(probe.targets)} checks for site {probe.site!r}.\n"
            f"Metrics: {bound.metrics_url}\nStop with Ctrl-C.",
            flush=True,
        )
