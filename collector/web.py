"""The collector's HTTP side: /metrics for Prometheus, /healthz for load balancers, and the
status page (/ and /api/status) for people."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

# 0.0.4: the text format every Prometheus reads, Debian's 2.42 included.
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from courierwatch.collector import status
from courierwatch.collector.exposition import StateCollector
from courierwatch.collector.state import State


def build_app(state: State) -> web.Application:
    # A registry of our own: only courierwatch's series, and a fresh one per app in tests.
    registry = CollectorRegistry(auto_describe=True)
    registry.register(StateCollector(state))

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4}
        )

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.add_routes(status.routes(state))
    return app
