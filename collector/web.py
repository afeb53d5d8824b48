"""The collector's HTTP side: /metrics for Prometheus, /healthz for load balancers, and the
status page (/ and /api/status) for people."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest

# 0.0.4: the text format every Prometheus reads, Debian's 2.42 included.
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from courierwatch.collector import status
from courierwatch.collector.exposition import COLLECTOR_FAMILIES, FAMILIES, Exposition
from courierwatch.collector.remote.telemetry import Telemetry
from courierwatch.collector.snapshots import Snapshots
from courierwatch.collector.state import State


def build_app(
    state: State,
    store_problem: Callable[[], str | None] = lambda: None,
    remote_write: Telemetry | None = None,
) -> web.Application:
    """`store_problem`: why the collector cannot commit (and so acknowledges nothing) now.
    `remote_write`: the remote writer's own metrics, in remote-write mode, where /metrics
    has only the collector's own families: the checks', results' and probes' are written to
    the store (remote/), and scraped too they would be stored twice."""
    # Keeps what it rendered, for the next scrape.
    exposition = Exposition(state, FAMILIES if remote_write is None else COLLECTOR_FAMILIES)
    rendering = asyncio.Lock()  # one scrape at a time renders (and updates what it keeps)
    # The collector process's own health (process_cpu_seconds_total, ..._resident_memory_bytes,
    # ..._open_fds): its own registry, read from /proc at each scrape.
    process = CollectorRegistry()
    ProcessCollector(registry=process)

    async def metrics(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})
        await response.prepare(request)
        async with rendering:
            for chunk in exposition.render_chunks():
                await response.write(chunk)
                # write() returns at once while the socket takes it: let batches, health
                # checks and the status page in between two chunks of a big scrape.
                await asyncio.sleep(0)
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
    snapshots = Snapshots(state)
    app.cleanup_ctx.append(snapshots.context)
    app.add_routes(status.routes(snapshots))
    return app
