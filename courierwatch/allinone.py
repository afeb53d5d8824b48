"""`courierwatch up`: a collector and a probe in one process, for a first look.

SIGHUP reloads the probe part from its file. The collector part has no file to reload: its
settings are the command line's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
from collections.abc import Callable
from pathlib import Path

from courierwatch.collector.config import CollectorConfig
from courierwatch.collector.server import Bound, serve
from courierwatch.common.configfile import TransportConfig
from courierwatch.probe.config import ProbeConfig
from courierwatch.probe.daemon import Reloads, run_probe

_PLAINTEXT = TransportConfig(insecure=True, ca=None, cert=None, key=None)


def up_collector(*, http: str, grpc: str) -> CollectorConfig:
    return CollectorConfig(grpc_listen=grpc, http_listen=http, transport=_PLAINTEXT)


async def run_up(
    collector: CollectorConfig,
    probe: ProbeConfig,
    stop: asyncio.Event,
    *,
    reloads: Reloads | None = None,
    on_ready: Callable[[], None] = lambda: None,
) -> None:
    # A first look starts clean: the spool and the collector's memory live only this long.
    with tempfile.TemporaryDirectory(prefix="courierwatch-up-") as scratch:
        collector = dataclasses.replace(collector, state_dir=scratch)
        ready: asyncio.Future[Bound] = asyncio.get_running_loop().create_future()
        async with asyncio.TaskGroup() as group:
            group.create_task(serve(collector, stop, ready.set_result))
            bound = await ready

            def local(config: ProbeConfig) -> ProbeConfig:
                # The probe dials what the collector really bound (the port may have been 0).
                return dataclasses.replace(
                    config,
                    collectors=(bound.grpc,),
                    transport=_PLAINTEXT,
                    spool_path=str(Path(scratch) / "spool.sqlite"),
                )

            started = asyncio.Event()
            group.create_task(run_probe(
                local(probe), stop, on_ready=started.set,
                reloads=reloads and Reloads(reloads.hangup, lambda: local(reloads.load())),
            ))  # fmt: skip
            await started.wait()
            on_ready()
            print(
                f"courierwatch is up: {len(probe.targets)} checks for site {probe.site!r}.\n"
                f"Metrics: {bound.metrics_url}\nStop with Ctrl-C.",
                flush=True,
            )
