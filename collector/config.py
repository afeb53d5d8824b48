"""The collector's YAML config: where it listens, how probes connect, when series go away."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from courierwatch.configfile import BUILTIN, TransportConfig, read_transport, read_yaml, to_address

__all__ = ["CollectorConfig", "load_collector_config"]

_GRPC: Final = "0.0.0.0:9475"
_HTTP: Final = "0.0.0.0:9474"


@dataclass(frozen=True, slots=True)
class CollectorConfig:
    source: str = BUILTIN  # the config file, or "<built-in defaults>"
    grpc_listen: str = _GRPC  # host:port for probe streams; port 0 picks a free one
    http_listen: str = _HTTP  # host:port for /metrics
    # The default is mTLS without files: unusable until configured, never plaintext by accident.
    transport: TransportConfig = field(default_factory=TransportConfig)
    stale_intervals: float = 3.0  # a check's gauges go after this many of its intervals unheard
    min_stale: float = 60.0  # ... but never sooner than this many seconds
    forget_after: float = 86400.0  # seconds of silence after which a probe and its series go


def load_collector_config(path: str | None) -> CollectorConfig:
    """Read and validate a collector config file; path None gives the built-in defaults.

    The defaults have no mTLS files, so without a file this raises: `up` builds its config in
    code instead. Raises ConfigError, whose str() is one line naming file, line and field.
    """
    doc = read_yaml(path)
    root = doc.root
    root.check_keys("listen", "transport", "series")
    listen = root.section("listen")
    listen.check_keys("grpc", "http")
    series = root.section("series")
    series.check_keys("stale_intervals", "min_stale", "forget_after")

    config = CollectorConfig(
        source=doc.source,
        grpc_listen=listen.value("grpc", to_address(allow_zero=True), _GRPC),
        http_listen=listen.value("http", to_address(allow_zero=True), _HTTP),
        transport=read_transport(root.section("transport")),
        stale_intervals=series.number("stale_intervals", 3.0, positive=True),
        min_stale=series.duration("min_stale", 60.0),
        forget_after=series.duration("forget_after", 86400.0),
    )
    # Forgetting a probe sooner than its gauges go stale would drop series that are still live.
    if config.forget_after < config.min_stale:
        raise series.error(
            f"must be at least series.min_stale ({config.min_stale:g}s), "
            f"got {config.forget_after:g}s",
            "forget_after",
        )
    return config
