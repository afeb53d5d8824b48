"""`courierwatch up`: a collector and a probe in one process, for a first look."""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
from pathlib import Path

from courierwatch.collector.config import CollectorConfig
from courierwatch.collector.server import Bound, serve
from courierwatch.common.configfile import TransportConfig
from courierwatch.probe.config import ProbeConfig, load_probe_config
from courierwatch.probe.daemon import run_probe

_PLAINTEXT = TransportConfig(insecure=True, ca=None, cert=None, key=None)


def up_config(path: str | None, *, http: str, grpc: str) -> tuple[CollectorConfig, ProbeConfig]:
    collector = CollectorConfig(grpc_listen=grpc, http_listen=http, transport=_PLAINTEXT)
    probe = load_probe_config(path, require_identity=False)
    return collector, probe


async def run_up(collector: CollectorConfig, probe: ProbeConfig, stop: asyncio.Event) -> None:
    # A first look starts clean: the spool and the collector's memory live only this long.
    with tempfile.TemporaryDirectory(prefix="courierwatch-up-") as scratch:
        collector = dataclasses.replace(collector, state_dir=scratch)
        ready: asyncio.Future[Bound] = asyncio.get_running_loop().create_future()
        async with asyncio.TaskGroup() as group:
            group.create_task(serve(collector, stop, ready.set_result))
            bound = await ready
            # The probe dials whatever the collector really bound (the port may have been 0).
            local = dataclasses.replace(
                probe,
                collectors=(bound.grpc,),
                transport=_PLAINTEXT,
                spool_path=str(Path(scratch) / "spool.sqlite"),
            )
            group.create_task(run_probe(local, stop))
            print(
                f"courierwatch is up: {len(probe.targets)} checks for site {probe.site!r}.\n"
                f"Metrics: {bound.metrics_url}\nStop with Ctrl-C.",
                flush=True,
            )
