"""The probe as a long-running service: schedule checks, queue results, stream them out."""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
from pathlib import Path

import grpc

from courierwatch.common import __version__
from courierwatch.common.configfile import TransportConfig
from courierwatch.probe.config import ProbeConfig
from courierwatch.probe.context import build_context
from courierwatch.probe.scheduler import Scheduler
from courierwatch.probe.spool import Spool
from courierwatch.probe.uplink import Uplink
from courierwatch.v1 import courierwatch_pb2 as pb

log = logging.getLogger(__name__)

# On SIGTERM: how long to wait for the collector to acknowledge what is spooled. What it
# does not acknowledge in time stays in the spool and goes at the next start.
DRAIN_SECONDS = 10.0


def channel_credentials(transport: TransportConfig) -> grpc.ChannelCredentials | None:
    """mTLS material for the stream; None only in the explicit insecure (plaintext) mode."""
    if transport.insecure:
        return None
    assert transport.ca and transport.cert and transport.key  # the config layer guarantees it
    return grpc.ssl_channel_credentials(
        root_certificates=Path(transport.ca).read_bytes(),
        private_key=Path(transport.key).read_bytes(),
        certificate_chain=Path(transport.cert).read_bytes(),
    )


def hello(config: ProbeConfig) -> pb.Hello:
    """Who this probe is, and the facts of every group it checks (the collector, its status
    page and the alert rules read criticality from them, not from lists of their own)."""
    return pb.Hello(
        probe_id=config.probe_id,
        site=config.site,
        software_version=__version__,
        config_digest=config.digest,
        groups=[pb.GroupInfo(id=g.id, title=g.title, critical=g.critical) for g in config.groups],
    )


async def run_probe(config: ProbeConfig, stop: asyncio.Event) -> None:
    if config.transport.insecure:
        log.warning("insecure mode: results go to the collector in plaintext, unauthenticated")
    spool = Spool(config.spool_path, max_bytes=config.spool_max_bytes, max_age=config.spool_max_age)
    await spool.open()
    scheduler = Scheduler(
        config.targets,
        build_context(config),
        spool.put,
        concurrency=config.concurrency,
        jitter=config.jitter,
    )
    # The config, targets and catalog live as long as the process: the cyclic collector need
    # not walk them again at every full collection.
    gc.freeze()

    def health() -> pb.Health:
        stats = spool.stats()
        beat = pb.Health(
            spool_depth=stats.depth,
            spool_bytes=stats.bytes,
            dropped_total=stats.dropped,
            loop_lag_seconds=scheduler.lag_seconds,
            oldest_pending_seconds=stats.oldest_age,
            quarantined_total=stats.quarantined,
            dropped_disk_full_total=stats.dropped_disk_full,
        )
        beat.sent_at.GetCurrentTime()  # the collector compares it with its own clock
        return beat

    credentials = channel_credentials(config.transport)
    uplink = Uplink(config.collectors, spool, hello(config), credentials, health)
    log.info(
        "probe %s at site %s on %s: %d checks, collectors %s, spool %s",
        config.probe_id, config.site, socket.gethostname(), len(config.targets),
        ", ".join(config.collectors), config.spool_path,
    )  # fmt: skip
    try:
        async with asyncio.TaskGroup() as group:
            checking = group.create_task(scheduler.run())
            flushing = group.create_task(spool.run_flusher())
            sending = group.create_task(uplink.run())
            await stop.wait()
            # Drain in order: no new results, everything on disk, then the collector's acks.
            checking.cancel()
            flushing.cancel()
            await spool.flush()
            if not await uplink.drain(spool.durable_through, DRAIN_SECONDS):
                log.warning(
                    "stopping with %d results unacknowledged: they stay spooled",
                    spool.stats().depth,
                )
            sending.cancel()
    finally:
        await spool.close()
