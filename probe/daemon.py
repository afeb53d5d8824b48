"""The probe as a long-running service: schedule checks, queue results, stream them out, and
take a new configuration when asked (SIGHUP) without a restart.

A reload that loads applies at once: the scheduler stops the checks that went, starts the new
ones and rebuilds the check context (resolver, trust, proxy). The spool is never touched, so no
result is lost, and the stream to the collector stays up unless what the collector was told or
how it is reached changed: collectors, mTLS material (also a certificate renewed in place), or
the Hello's facts (identity, groups). A config that does not load is one error line in the log,
and the running configuration carries on. Spool settings take effect at the next start.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import socket
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from courierwatch.common import __version__
from courierwatch.common.configfile import ConfigError, TransportConfig
from courierwatch.probe import eventloop
from courierwatch.probe.config import ProbeConfig
from courierwatch.probe.context import build_context
from courierwatch.probe.scheduler import Scheduler
from courierwatch.probe.spool import Spool
from courierwatch.probe.uplink import Uplink, UplinkCounts
from courierwatch.v1 import courierwatch_pb2 as pb

log = logging.getLogger(__name__)

# On SIGTERM: how long to wait for the collector to acknowledge what is spooled. What it
# does not acknowledge in time stays in the spool and goes at the next start.
DRAIN_SECONDS = 10.0

# What the open spool was made with: a reload leaves it as it is.
_AT_RESTART = ("spool_path", "spool_max_bytes", "spool_max_age")
# The mTLS files' contents (CA, key, certificate); None only in the explicit insecure mode.
Material = tuple[bytes, bytes, bytes] | None


@dataclass(frozen=True, slots=True)
class Reloads:
    """How a running probe is asked for a reload, and how it reads its new configuration."""

    hangup: asyncio.Event  # set (on SIGHUP) to ask; the probe clears it when it starts reading
    load: Callable[[], ProbeConfig]  # raises ConfigError, whose str() is one line


def read_material(transport: TransportConfig) -> Material:
    if transport.insecure:
        return None
    assert transport.ca and transport.cert and transport.key  # the config layer guarantees it
    files = (transport.ca, transport.key, transport.cert)
    ca, key, cert = (Path(name).read_bytes() for name in files)
    return ca, key, cert


def channel_credentials(material: Material) -> grpc.ChannelCredentials | None:
    """mTLS for the stream; None only in the explicit insecure (plaintext) mode."""
    if material is None:
        return None
    ca, key, cert = material
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
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
        families=list(config.families),
        families_reason=config.families_reason,
        ack_timeout_seconds=config.ack_timeout,
    )


async def run_probe(
    config: ProbeConfig,
    stop: asyncio.Event,
    *,
    reloads: Reloads | None = None,
    on_ready: Callable[[], None] = lambda: None,
) -> None:
    """Run until `stop` is set, then drain. What fails before `on_ready` is called (the spool,
    the mTLS files) failed to start: an OSError naming what, to fix before a retry can help."""
    if config.transport.insecure:
        log.warning("insecure mode: results go to the collector in plaintext, unauthenticated")
    spool = Spool(config.spool_path, max_bytes=config.spool_max_bytes, max_age=config.spool_max_age)
    try:
        await spool.open()
    except (OSError, sqlite3.Error) as error:  # sqlite3: a directory it cannot create files in
        raise OSError(f"spool {config.spool_path}: cannot open it: {_reason(error)}") from error
    try:
        probe = _Probe(config, spool, read_material(config.transport))
        on_ready()
        log.info(
            "probe %s at site %s on %s: %d checks, collectors %s, spool %s, %s event loop",
            config.probe_id, config.site, socket.gethostname(), len(config.targets),
            ", ".join(config.collectors), config.spool_path, eventloop.running(),
        )  # fmt: skip
        async with asyncio.TaskGroup() as group:
            probe.start(group)
            following = group.create_task(probe.follow(reloads)) if reloads else None
            await stop.wait()
            if following:
                following.cancel()  # a reload now would restart what is being drained
            await probe.drain()
    finally:
        await spool.close()


class _Probe:
    """The probe's moving parts and the configuration they run."""

    def __init__(self, config: ProbeConfig, spool: Spool, material: Material) -> None:
        self._config = config
        self._spool = spool
        self._material = material
        self._scheduler = Scheduler(
            config.targets,
            build_context(config),
            spool.put,
            concurrency=config.concurrency,
            jitter=config.jitter,
            tick=config.tick,
        )
        # The uplink sends this message at the start of every session: a reload that need not
        # reconnect updates it in place, so the next Hello carries the new config digest.
        self._hello = hello(config)
        self._uplink_counts = UplinkCounts()  # one for every uplink this process makes
        self._uplink = self._new_uplink()
        self._group: asyncio.TaskGroup | None = None
        self._checking: asyncio.Task[None] | None = None
        self._flushing: asyncio.Task[None] | None = None
        self._sending: asyncio.Task[None] | None = None
        _refreeze()

    def _new_uplink(self) -> Uplink:
        credentials = channel_credentials(self._material)
        return Uplink(self._config.collectors, self._spool, self._hello, credentials, self._health,
                      counts=self._uplink_counts)  # fmt: skip

    def _health(self) -> pb.Health:
        stats = self._spool.stats()
        beat = pb.Health(
            spool_depth=stats.depth,
            spool_bytes=stats.bytes,
            dropped_total=stats.dropped,
            loop_lag_seconds=self._scheduler.lag_seconds,
            oldest_pending_seconds=stats.oldest_age,
            quarantined_total=stats.quarantined,
            dropped_disk_full_total=stats.dropped_disk_full,
            collectors_silent_total=self._uplink_counts.silent,
        )
        beat.sent_at.GetCurrentTime()  # the collector compares it with its own clock
        return beat

    def start(self, group: asyncio.TaskGroup) -> None:
        self._group = group
        self._checking = group.create_task(self._scheduler.run())
        self._flushing = group.create_task(self._spool.run_flusher())
        self._sending = group.create_task(self._uplink.run())

    async def drain(self) -> None:
        """No new results, everything on disk, then the collector's acks; then stop sending."""
        assert self._checking and self._flushing and self._sending
        self._checking.cancel()
        self._flushing.cancel()
        # Let the checks finish cancelling first: a result put meanwhile must be flushed (and
        # so sent) too, not only written at close.
        await asyncio.wait({self._checking, self._flushing})
        await self._spool.flush()
        if not await self._uplink.drain(self._spool.durable_through, DRAIN_SECONDS):
            log.warning(
                "stopping with %d results unacknowledged: they stay spooled",
                self._spool.stats().depth,
            )
        self._sending.cancel()

    async def follow(self, reloads: Reloads) -> None:
        """Reload at each request, one at a time (requests made meanwhile are one more)."""
        while True:
            await reloads.hangup.wait()
            reloads.hangup.clear()
            log.info("reloading the configuration (SIGHUP)")
            try:
                config = await asyncio.to_thread(reloads.load)
                material = await asyncio.to_thread(read_material, config.transport)
            except (ConfigError, OSError) as error:
                log.error("reload failed, still running the previous configuration: %s", error)
                continue
            await self._apply(config, material)

    async def _apply(self, config: ProbeConfig, material: Material) -> None:
        old = self._config
        if later := [name for name in _AT_RESTART if getattr(old, name) != getattr(config, name)]:
            log.warning("%s changed: that takes effect at the next start", ", ".join(later))
            config = dataclasses.replace(config, **{name: getattr(old, name) for name in later})
        self._config = config
        changes = self._scheduler.update(
            config.targets, build_context(config), concurrency=config.concurrency,
            jitter=config.jitter, tick=config.tick,
        )  # fmt: skip
        fresh = hello(config)
        reconnect = _why_reconnect(old, config, self._material != material, self._hello, fresh)
        if reconnect:
            self._hello, self._material = fresh, material
            await self._reconnect()
        else:
            self._hello.CopyFrom(fresh)  # the running uplink's, for its next session
        _refreeze()
        log.info(
            "reloaded %s (digest %s): %d checks; %d added, %d removed, %d changed; %s",
            config.source, config.digest[:12], len(config.targets), changes.added,
            changes.removed, changes.changed, f"reconnecting: {reconnect}" if reconnect
            else "stream kept",
        )  # fmt: skip

    async def _reconnect(self) -> None:
        """End the stream (what it sent unacknowledged stays spooled and is sent again) and
        open one as the new configuration says."""
        assert self._group and self._sending
        self._sending.cancel()
        await asyncio.wait([self._sending])  # the old channel is closed before a new one opens
        self._uplink = self._new_uplink()
        self._sending = self._group.create_task(self._uplink.run())


def _why_reconnect(
    old: ProbeConfig, new: ProbeConfig, material_changed: bool, sent: pb.Hello, fresh: pb.Hello
) -> str:
    """Why the stream must start over for `new`, or "" if it need not: a changed digest alone
    waits for the next session's Hello."""
    if old.collectors != new.collectors:
        return "collectors changed"
    if old.transport != new.transport or material_changed:
        return "transport changed"
    return "" if _facts(sent) == _facts(fresh) else "identity or group facts changed"


def _facts(message: pb.Hello) -> pb.Hello:
    """A Hello without its config digest."""
    facts = pb.Hello()
    facts.CopyFrom(message)
    facts.ClearField("config_digest")
    return facts


def _reason(error: OSError | sqlite3.Error) -> str:
    if isinstance(error, OSError) and error.strerror:
        return f"{error.filename}: {error.strerror}" if error.filename else error.strerror
    return str(error)


def _refreeze() -> None:
    # The config, targets and catalog live until the next reload: the cyclic collector need
    # not walk them at every full collection. What an old configuration left is collected first.
    gc.unfreeze()
    gc.collect()
    gc.freeze()
