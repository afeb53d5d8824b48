"""The collector's YAML config: where it listens, how probes connect and who may report for
which site, what it keeps on disk, its limits, and when series go away.

    listen: {grpc: 0.0.0.0:9475, http: 0.0.0.0:9474}
    transport: {ca: fleet-ca.pem, cert: collector.pem, key: collector.key}  # or insecure: true
    state_dir: /var/lib/courierwatch   # default: $STATE_DIRECTORY, else ~/.local/state/courierwatch
    authorization:                     # certificate identity (CN) -> sites it may report for;
      pi-ams-1: [ams-office, ams-lab]  # unlisted identities may report for the site their
                                       # certificate names (OU), as `courierwatch pki` issues
    limits: {max_message_bytes: 1048576, max_batch: 1000, max_label_length: 256,
             max_targets_per_probe: 2000, max_string_bytes: 1024,
             max_state_bytes_per_probe: 8388608, max_streams: 4096, idle_timeout: 30s,
             max_http_connections: 256, http_header_timeout: 10s}
    series: {stale_intervals: 3, min_stale: 60s, forget_after: 30d}  # 1 to 1000 intervals,
                                       # 1s to 1d, 1m to 3650d
    remote_write: {url: http://victoriametrics:8428/api/v1/write}  # absent: scrape mode
                                       # (collector/remote/config.py: its limits)

The transport's PEM files are parsed at load; files must be regular files of at most 1 MiB.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Final

from courierwatch.collector.remote.config import RemoteWriteConfig, read_remote_write
from courierwatch.common.bounds import DEFAULT_MAX_STRING_BYTES
from courierwatch.common.configfile import (
    BUILTIN,
    Section,
    TransportConfig,
    read_transport,
    read_yaml,
    to_address,
    to_str,
)

__all__ = ["CollectorConfig", "load_collector_config"]

_GRPC: Final = "0.0.0.0:9475"
_HTTP: Final = "0.0.0.0:9474"
# Seconds. Below a second every scrape would find gauges gone; beyond ten years a timestamp
# computed from it leaves the calendar.
_MIN_STALE: Final = (1.0, 86400.0)
_FORGET_AFTER: Final = (60.0, 3650 * 86400.0)


@dataclass(frozen=True, slots=True)
class CollectorConfig:
    source: str = BUILTIN  # the config file, or "<built-in defaults>"
    grpc_listen: str = _GRPC  # host:port for probe streams; port 0 picks a free one
    http_listen: str = _HTTP  # host:port for /metrics
    # The default is mTLS without files: unusable until configured, never plaintext by accident.
    transport: TransportConfig = field(default_factory=TransportConfig)
    stale_intervals: float = 3.0  # a check's gauges go after this many of its intervals unheard
    min_stale: float = 60.0  # ... but never sooner than this many seconds
    # Seconds of silence after which a probe and its series go. Long: until then a dead Pi
    # stays visible as courierwatch_probe_up 0, which is what ProbeDown alerts on.
    forget_after: float = 30 * 86400.0
    state_dir: str = field(default_factory=lambda: default_state_dir())
    authorization: dict[str, tuple[str, ...]] = field(default_factory=dict)
    limits: Limits = field(default_factory=lambda: Limits())
    # Where every result also goes, at its own time; None: scrape mode only (the default).
    remote_write: RemoteWriteConfig | None = None


@dataclass(frozen=True, slots=True)
class Limits:
    """What one probe may send; beyond it a message is refused, other probes unaffected."""

    max_message_bytes: int = 1024 * 1024
    max_batch: int = 1000
    # Above the longest DNS name (253): no valid probe result can be refused for its labels.
    max_label_length: int = 256
    max_targets_per_probe: int = 2000
    # Every free-text field of a result is cut to this (the Welcome says so: probes cut first).
    max_string_bytes: int = DEFAULT_MAX_STRING_BYTES
    # What one probe's latest results may hold in memory (about 300 bytes each, normally).
    max_state_bytes_per_probe: int = 8 * 1024 * 1024
    max_streams: int = 4096  # open probe streams; more are refused with RESOURCE_EXHAUSTED
    # A stream that sends neither a batch nor a Health beat for this long is closed as idle:
    # six of the probe's five-second beats.
    idle_timeout: float = 30.0
    max_http_connections: int = 256  # open HTTP connections (scrapes, status page)
    # Seconds an HTTP client has from connecting to finish its request headers (and that a
    # kept-alive connection may idle between requests).
    http_header_timeout: float = 10.0


def default_state_dir() -> str:
    """systemd's StateDirectory= when run as a unit, else the user's state directory."""
    return os.environ.get("STATE_DIRECTORY") or str(
        Path("~/.local/state/courierwatch").expanduser()
    )


def load_collector_config(path: str | None, *, insecure: bool = False) -> CollectorConfig:
    """Read and validate a collector config file; path None gives the built-in defaults.

    The defaults have no mTLS files, so without a file this raises: `up` builds its config in
    code instead. Raises ConfigError, whose str() is one line naming file, line and field.
    """
    doc = read_yaml(path)
    root = doc.root
    root.check_keys("listen", "transport", "series", "state_dir", "authorization", "limits",
                    "remote_write")  # fmt: skip
    listen = root.section("listen")
    listen.check_keys("grpc", "http")
    series = root.section("series")
    series.check_keys("stale_intervals", "min_stale", "forget_after")

    config = CollectorConfig(
        source=doc.source,
        grpc_listen=listen.value("grpc", to_address(allow_zero=True), _GRPC),
        http_listen=listen.value("http", to_address(allow_zero=True), _HTTP),
        transport=read_transport(root.section("transport"), insecure=insecure),
        stale_intervals=series.number("stale_intervals", 3.0, min=1, max=1000),
        min_stale=series.duration("min_stale", 60.0, within=_MIN_STALE),
        forget_after=series.duration("forget_after", 30 * 86400.0, within=_FORGET_AFTER),
        state_dir=root.value("state_dir", _state_dir(doc.source), None) or default_state_dir(),
        authorization=_authorization(root.section("authorization")),
        limits=_limits(root.section("limits")),
        remote_write=read_remote_write(root.section("remote_write"), root.has("remote_write")),
    )
    # Forgetting a probe sooner than its gauges go stale would drop series that are still live.
    if config.forget_after < config.min_stale:
        raise series.error(
            f"must be at least series.min_stale ({config.min_stale:g}s), "
            f"got {config.forget_after:g}s",
            "forget_after",
        )
    return config


def _state_dir(source: str) -> Callable[[Any], str]:
    """A directory path, relative to the config file; one that exists must be a directory."""

    def convert(value: Any) -> str:
        path = Path(to_str()(value)).expanduser()
        if not path.is_absolute() and source != BUILTIN:
            path = Path(source).parent / path
        if path.exists() and not path.is_dir():
            raise ValueError(f"{str(path)!r} is not a directory")
        return str(path)

    return convert


def _authorization(sec: Section) -> dict[str, tuple[str, ...]]:
    return {identity: sec.strings(identity) for identity in sec.names()}


def _limits(sec: Section) -> Limits:
    sec.check_keys(*(f.name for f in fields(Limits)))  # each field is a key
    default = Limits()
    return Limits(
        max_message_bytes=sec.integer(
            "max_message_bytes", default.max_message_bytes, min=4096, max=64 * 1024 * 1024
        ),
        max_batch=sec.integer("max_batch", default.max_batch, min=1, max=100_000),
        max_label_length=sec.integer(
            "max_label_length", default.max_label_length, min=16, max=4096
        ),
        max_targets_per_probe=sec.integer(
            "max_targets_per_probe", default.max_targets_per_probe, min=1, max=1_000_000
        ),
        max_string_bytes=sec.integer(
            "max_string_bytes", default.max_string_bytes, min=64, max=64 * 1024
        ),
        max_state_bytes_per_probe=sec.integer(
            "max_state_bytes_per_probe",
            default.max_state_bytes_per_probe,
            min=64 * 1024,
            max=1024 * 1024 * 1024,
        ),
        max_streams=sec.integer("max_streams", default.max_streams, min=1, max=1_000_000),
        idle_timeout=sec.duration("idle_timeout", default.idle_timeout, within=(1.0, 3600.0)),
        max_http_connections=sec.integer(
            "max_http_connections", default.max_http_connections, min=1, max=100_000
        ),
        http_header_timeout=sec.duration(
            "http_header_timeout", default.http_header_timeout, within=(0.5, 300.0)
        ),
    )
