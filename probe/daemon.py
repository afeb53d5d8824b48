"""The probe as a long-running service: schedule checks, queue results, stream them out."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import grpc

from courierwatch import __version__
from courierwatch.configfile import TransportConfig
from courierwatch.probe.checks.base import CheckContext
from courierwatch.probe.config import ProbeConfig
from courierwatch.probe.outbox import Outbox
from courierwatch.probe.resolver import Resolver
from courierwatch.probe.scheduler import Scheduler
from courierwatch.probe.trust import TrustStore
from courierwatch.probe.uplink import Uplink
from courierwatch.v1 import courierwatch_pb2 as pb

log = logging.getLogger(__name__)


def build_context(config: ProbeConfig) -> CheckContext:
    return CheckContext(
        resolver=Resolver(config.nameservers, config.resolver_port),
        trust=TrustStore(config.trust_anchors, config.trust_system),
    )


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


async def run_probe(config: ProbeConfig, stop: asyncio.Event) -> None:
    if config.transport.insecure:
        log.warning("insecure mode: results go to the collector in plaintext, unauthenticated")
    outbox = Outbox()
    scheduler = Scheduler(
        config.targets,
        build_context(config),
        outbox.put,
        concurrency=config.concurrency,
        jitter=config.jitter,
    )
    hello = pb.Hello(
        probe_id=config.probe_id,
        site=config.site,
        software_version=__version__,
        config_digest=config.digest,
    )
    uplink = Uplink(config.collectors, outbox, hello, channel_credentials(config.transport))
    log.info(
        "probe %s at site %s on %s: %d checks, collectors %s",
        config.probe_id, config.site, socket.gethostname(), len(config.targets),
        ", ".join(config.collectors),
    )
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(scheduler.run()), group.create_task(uplink.run())]
        await stop.wait()
        for task in tasks:
            task.cancel()
