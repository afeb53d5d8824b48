"""The collector's HTTP side: /metrics for Prometheus, /healthz for load balancers, and the
status page (/ and /api/status) for people."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest

# 0.0.4: the text format every Prometheus reads, Debian's 2.42 included.
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from courierwatch.collector import status
from courierwatch.collector.exposition import Exposition
from courierwatch.collector.remote.telemetry import Telemetry
from courierwatch.collector.state import State


def build_app(
    state: State,
    store_problem: Callable[[], str | None] = lambda: None,
    remote_write: Telemetry | None = None,
) -> web.Application:
    """`store_problem`: why the collector cannot commit (and so acknowledges nothing) now.
    `remote_write`: the remote writer's own metrics, in remote-write mode."""
    exposition = Exposition(state)  # keeps what it rendered, for the next scrape
    # The collector process's own health (process_cpu_seconds_total, ..._resident_memory_bytes,
    # ..._open_fds): its own registry, read from /proc at each scrape.
    process = CollectorRegistry()
    ProcessCollector(registry=process)

    async def metrics(request: web.Request) -> web.StreamResponse:
        chunks = exposition.render_chunks()  # renders now, before anything is sent
        response = web.StreamResponse(headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})
        await response.prepare(request)
        for chunk in chunks:
            await response.write(chunk)
        if remote_write is not None:
            await response.write(remote_write.render().encode())
        await response.write(generate_latest(process))
        await response.write_eof()
        return response

    async def healthz(_: web.Request) -> web.Response:
        problem = store_problem()
        if problem is not None:  # up, but holding every probe's results in their spools
            return web.Response(status=503, text=f"{problem}: acknowledging nothing\n")
        return web.Response(text="ok\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.add_routes(status.routes(state))
    return app
