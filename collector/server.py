"""The collector as a service: the gRPC ingest and the HTTP side on one event loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from aiohttp import web

from courierwatch.collector.config import CollectorConfig
from courierwatch.collector.ingest import Ingest
from courierwatch.collector.state import State
from courierwatch.collector.store import Store
from courierwatch.collector.web import build_app
from courierwatch.common.configfile import TransportConfig

log = logging.getLogger(__name__)

# Answer the probes' keepalive pings (every 30 s) and ping back, so a stream whose path
# died is closed (and the probe shown down) within about a minute.
SERVER_OPTIONS = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 1),
)
# Seconds a stopping collector lets open streams finish applying what they received.
DRAIN_SECONDS = 5.0
# How often silent probes are looked for and forgotten.
HOUSEKEEPING_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class Bound:
    """Where the collector actually listens (ports chosen by the OS when configured as 0)."""

    grpc: str
    http: str

    @property
    def metrics_url(self) -> str:
        return f"http://{self.http}/metrics"


def server_credentials(transport: TransportConfig) -> grpc.ServerCredentials | None:
    """mTLS that requires a client certificate; None only in the explicit insecure mode."""
    if transport.insecure:
        return None
    assert transport.ca and transport.cert and transport.key  # the config layer guarantees it
    return grpc.ssl_server_credentials(
        [(Path(transport.key).read_bytes(), Path(transport.cert).read_bytes())],
        root_certificates=Path(transport.ca).read_bytes(),
        require_client_auth=True,
    )


async def serve(
    config: CollectorConfig, stop: asyncio.Event, on_ready: Callable[[Bound], None]
) -> None:
    state = State(
        stale_intervals=config.stale_intervals,
        min_stale=config.min_stale,
        forget_after=config.forget_after,
    )
    store = Store(Path(config.state_dir) / "collector.sqlite")
    for probe in await store.open():
        state.restore(probe)
    credentials = server_credentials(config.transport)
    ingest = Ingest(
        state,
        store,
        authorization=config.authorization,
        limits=config.limits,
        require_identity=credentials is not None,
    )
    # gRPC itself refuses only what is far over the limit; up to twice the limit the
    # servicer sees the message, so it can refuse it with a reason and count it.
    server = grpc.aio.server(
        options=(*SERVER_OPTIONS, ("grpc.max_receive_message_length",
                                   2 * config.limits.max_message_bytes)),
    )  # fmt: skip
    server.add_generic_rpc_handlers((ingest.handler(),))
    if credentials is None:
        log.warning("insecure mode: probes are accepted in plaintext without certificates")
        grpc_port = server.add_insecure_port(config.grpc_listen)
    else:
        grpc_port = server.add_secure_port(config.grpc_listen, credentials)
    runner = web.AppRunner(build_app(state), access_log=None)
    await runner.setup()
    http_host, http_port = _split(config.http_listen)
    site = web.TCPSite(runner, http_host, http_port)
    await server.start()
    housekeeping = asyncio.create_task(_forget_silent(state, store))
    try:
        await site.start()
        bound = Bound(
            grpc=_join(_split(config.grpc_listen)[0], grpc_port),
            http=_join(http_host, runner.addresses[0][1]),
        )
        on_ready(bound)
        await stop.wait()
    finally:
        housekeeping.cancel()
        # Stop taking streams, let open ones finish the batch in hand (saves are shielded).
        await server.stop(DRAIN_SECONDS)
        await runner.cleanup()
        await store.close()


async def _forget_silent(state: State, store: Store) -> None:
    while True:
        await asyncio.sleep(HOUSEKEEPING_SECONDS)
        await store.forget(state.forget_silent())


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
