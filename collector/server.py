"""The collector as a service: the gRPC ingest and the HTTP side on one event loop.

SIGHUP reloads the configuration file, as Prometheus does: a valid one takes effect at once
(authorization, limits, series) without closing streams it still authorizes; what needs the
sockets or files opened anew (listen, transport, state_dir) waits for a restart, and says so.
An invalid one is logged in one line and the running one stays. Both are shown by
courierwatch_config_last_reload_successful and ..._success_timestamp_seconds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from aiohttp import web

from courierwatch.collector import heap
from courierwatch.collector.config import CollectorConfig, load_collector_config
from courierwatch.collector.ingest import Ingest
from courierwatch.collector.remote.current import StateWriter
from courierwatch.collector.remote.send import RemoteWriter
from courierwatch.collector.state import State
from courierwatch.collector.store import Store
from courierwatch.collector.web import build_app
from courierwatch.common.configfile import (
    BUILTIN,
    ConfigError,
    TransportConfig,
    join_host_port,
    split_host_port,
)

log = logging.getLogger(__name__)

# Answer the probes' keepalive pings (every 30 s) and ping back, so a stream whose path
# died is closed (and the probe shown down) within about a minute.
SERVER_OPTIONS = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 1),
    # gRPC sets SO_REUSEPORT by default: a second collector on the same port would start and
    # the kernel would split probes between the two. Off, the port in use is a start error.
    ("grpc.so_reuseport", 0),
)
# Seconds a stopping collector lets open streams finish applying what they received.
DRAIN_SECONDS = 5.0
# How often silent probes are looked for and forgotten.
HOUSEKEEPING_SECONDS = 60.0
# What changes only with a restart: the sockets and files opened at start.
_AT_RESTART = ("grpc_listen", "http_listen", "transport", "state_dir", "remote_write")
_LINGER_SECONDS = 1.0  # that a connection turned away may take to close
_TURNED_AWAY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


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
    config: CollectorConfig,
    stop: asyncio.Event,
    on_ready: Callable[[Bound], None],
    *,
    hangup: asyncio.Event | None = None,
) -> None:
    """Run until `stop` is set. `hangup`: set by the caller's SIGHUP handler to reload the
    config file; without it, serve() takes SIGHUP over itself (when the config is a file)."""
    state = State(
        stale_intervals=config.stale_intervals,
        min_stale=config.min_stale,
        forget_after=config.forget_after,
        count_checks=config.remote_write is None,
    )
    store = Store(Path(config.state_dir) / "collector.sqlite")
    for probe in await store.open():
        state.restore(probe)
    credentials = server_credentials(config.transport)
    writer = RemoteWriter.from_config(config.remote_write)  # None: scrape mode
    # ... and the live probes' state, written every state_interval (remote/current.py).
    state_writer = StateWriter.from_config(state, config.remote_write)
    ingest = Ingest(
        state,
        store,
        authorization=config.authorization,
        limits=config.limits,
        require_identity=credentials is not None,
        writer=writer,
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
    runner = web.AppRunner(
        build_app(state, lambda: store.problem, writer.telemetry if writer else None),
        access_log=None,
        # aiohttp closes a connection idle this long between requests, and times a new one
        # from its start: a client that never finishes its headers is closed after it.
        keepalive_timeout=config.limits.http_header_timeout,
        shutdown_timeout=DRAIN_SECONDS,
    )
    await runner.setup()
    assert runner.server is not None
    connections = _Capped(runner.server, state, config.limits.max_http_connections)
    http_host, http_port = split_host_port(config.http_listen, allow_zero=True)
    if writer is not None:
        await writer.open()
    if state_writer is not None:
        await state_writer.open()
    await server.start()
    housekeeping = asyncio.create_task(_forget_silent(state, store, writer))
    freezing = asyncio.create_task(heap.freeze_periodically())
    reloading: asyncio.Task[None] | None = None
    if config.source != BUILTIN:  # built in code (`up`): there is no file to read again
        if hangup is None:
            hangup = asyncio.Event()
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, hangup.set)
        reload = _Reload(config, state, ingest, connections)
        reloading = asyncio.create_task(_reload_on(hangup, reload))
    http: asyncio.Server | None = None
    try:
        http = await asyncio.get_running_loop().create_server(
            connections, http_host or None, http_port, reuse_address=True
        )
        bound = Bound(
            grpc=join_host_port(split_host_port(config.grpc_listen, allow_zero=True)[0], grpc_port),
            http=join_host_port(http_host, http.sockets[0].getsockname()[1]),
        )
        on_ready(bound)
        await stop.wait()
    finally:
        housekeeping.cancel()
        freezing.cancel()
        if reloading is not None:
            reloading.cancel()
        if http is not None:
            http.close()
        # Stop taking streams, let open ones finish the batch in hand (saves are shielded).
        await server.stop(DRAIN_SECONDS)
        if state_writer is not None:
            await state_writer.close()
        if writer is not None:  # what the streams left unacknowledged waits in the spools
            await writer.close()
        await runner.cleanup()
        await store.close()


class _Capped:
    """The HTTP side's protocol factory: beyond `cap` open connections, a new one is turned
    away with a 503 (and counted) rather than served; aiohttp itself has no such cap."""

    def __init__(self, server: web.Server, state: State, cap: int) -> None:
        self._server, self._state, self.cap = server, state, cap
        # Made but not yet in server.connections (asyncio calls connection_made soon after
        # the factory, so one turn of the loop may accept many before any of them shows),
        # with when they were made: one lost before it was seen goes after STARTING_SECONDS.
        self._starting: list[tuple[float, asyncio.BaseProtocol]] = []

    def __call__(self) -> asyncio.BaseProtocol:
        now = asyncio.get_running_loop().time()
        # A handler has its transport once connection_made put it in server.connections.
        self._starting = [(at, h) for at, h in self._starting
                          if getattr(h, "transport", None) is None
                          and now - at < STARTING_SECONDS]  # fmt: skip
        if len(self._server.connections) + len(self._starting) >= self.cap:
            self._state.limited["http_connections"] += 1
            return _TurnAway()
        handler = self._server()
        self._starting.append((now, handler))
        return handler


STARTING_SECONDS = 1.0


class _TurnAway(asyncio.Protocol):
    """Answers 503 and closes. Half-closed first, so that the client reads the answer rather
    than a reset for the request it sent; aborted after a second if it does not close."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(_TURNED_AWAY)
        transport.write_eof()
        asyncio.get_running_loop().call_later(_LINGER_SECONDS, transport.abort)

    def eof_received(self) -> bool:
        return False  # the transport closes itself


class _Reload:
    """The SIGHUP handler: read the configuration file again and apply what can change."""

    def __init__(
        self, config: CollectorConfig, state: State, ingest: Ingest, connections: _Capped
    ) -> None:
        self._config, self._state, self._ingest, self._connections = (
            config, state, ingest, connections,
        )  # fmt: skip

    def __call__(self) -> None:
        running = self._config
        try:
            new = load_collector_config(running.source, insecure=running.transport.insecure)
        except (ConfigError, OSError) as error:
            self._state.config_reload_ok = False
            log.error("configuration not reloaded, the running one stays: %s", error)
            return
        later = [name for name in _AT_RESTART if getattr(new, name) != getattr(running, name)]
        if later:
            log.warning("configuration reloaded, but %s change only at a restart",
                        ", ".join(later))  # fmt: skip
        state = self._state
        state.stale_intervals, state.min_stale = new.stale_intervals, new.min_stale
        state.forget_after = new.forget_after
        self._ingest.reconfigure(new.authorization, new.limits)
        self._connections.cap = new.limits.max_http_connections
        self._config = dataclasses.replace(new, **{name: getattr(running, name) for name in later})
        state.config_reload_ok, state.config_reload_at = True, state.clock()
        log.info("configuration reloaded from %s", running.source)


async def _reload_on(hangup: asyncio.Event, reload: Callable[[], None]) -> None:
    while True:
        await hangup.wait()
        hangup.clear()
        reload()


async def _forget_silent(state: State, store: Store, writer: RemoteWriter | None) -> None:
    while True:
        await asyncio.sleep(HOUSEKEEPING_SECONDS)
        forgotten = state.forget_silent()
        if writer is not None:
            writer.forget(forgotten)
        await store.forget(forgotten)
