"""The collector's status page: each site's state and its causes at a glance, without Grafana.

GET / serves one self-contained page (status.html: no external assets, the NOC's
network may be closed) whose inline script renders GET /api/status, a JSON snapshot of the
state, and polls it every few seconds (`?refresh=SECONDS` to change). Probe-supplied strings
reach the page only as JSON data that the script sets as text, never as markup; a nonce in
the Content-Security-Policy lets only the page's own script and style run.
"""

from __future__ import annotations

import functools
import json
import secrets
from collections import Counter
from collections.abc import Iterator, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any

from aiohttp import web

from courierwatch.collector.state import Probe, State
from courierwatch.common import sitestate
from courierwatch.common.bounds import DEFAULT_MAX_STRING_BYTES, cut
from courierwatch.common.results import courier_state, outcome_label
from courierwatch.v1 import courierwatch_pb2 as pb

if TYPE_CHECKING:
    from courierwatch.collector.snapshots import Snapshots

COURIER_PORTS = (5223, 443)  # the primary port, then Apple's fallback
MAX_FINDINGS = 8  # per probe; the page says how many more there are
CHUNK_PROBES = 25  # probes viewed between two turns of the event loop (up to 30 ms)
# Site states as the page orders them, worst first. An offline probe says nothing about Apple,
# so it sorts below every state a working probe reports, but above ok.
ORDER = (
    sitestate.UNREACHABLE, sitestate.INTERCEPTED, sitestate.FILTERED, sitestate.DEGRADED,
    sitestate.PROBE_OFFLINE, sitestate.OK,
)  # fmt: skip


# Per probe: the fresh results a view's checks part was made from (State.fresh's tuple, the
# same object while the fresh set is the same), and that part.
Views = dict[tuple[str, str], tuple[Sequence[pb.Result], dict[str, Any]]]


def snapshot(state: State, views: Views | None = None) -> dict[str, Any]:
    """What the page (and /api/status) shows, worst site first: JSON-ready, plain values only.
    Each probe has its site state and causes (common/sitestate, as on /metrics); a site's state
    is its worst probe's, probe_offline only when no probe of it reports. `views`: what the
    last snapshot made of each probe's results, kept and updated here (a page polled every few
    seconds, of thousands of probes, reads again only those whose results changed)."""
    *_, made = snapshot_steps(state, {} if views is None else views)
    assert made is not None  # the last step is the snapshot
    return made


def snapshot_steps(
    state: State, views: Views, chunk: int = CHUNK_PROBES
) -> Iterator[dict[str, Any] | None]:
    """snapshot(), `chunk` probes at a time: None after each chunk, then the snapshot (a
    caller on the event loop lets it run in between: collector/snapshots.py). `views` is
    left holding the probes of this snapshot only."""
    now = state.clock()
    probes = state.probes()
    for gone in views.keys() - {probe.key for probe in probes}:
        del views[gone]
    by_site: dict[str, list[dict[str, Any]]] = {}
    for n, probe in enumerate(probes, 1):
        results = state.fresh(probe)
        view = views.get(probe.key)
        if view is None or view[0] is not results:
            view = views[probe.key] = (results, _checks_view(state, probe, results))
        by_site.setdefault(probe.site, []).append(_probe_view(state, probe, results, view[1]))
        if n % chunk == 0:
            yield None
    sites = []
    for name, probes in by_site.items():
        probes.sort(key=lambda p: (ORDER.index(p["state"]), p["probe"]))
        sites.append({"site": name, "state": _site_state(probes), "probes": probes})
    sites.sort(key=lambda s: (ORDER.index(s["state"]), s["site"]))
    yield {
        "generated_at": now,
        "summary": dict(Counter(s["state"] for s in sites)),
        "sites": sites,
    }


def _site_state(probes: Sequence[dict[str, Any]]) -> str:
    reporting = [p["state"] for p in probes if p["state"] != sitestate.PROBE_OFFLINE]
    return min(reporting, key=ORDER.index) if reporting else sitestate.PROBE_OFFLINE


def _probe_view(
    state: State, probe: Probe, results: Sequence[pb.Result], checks: dict[str, Any]
) -> dict[str, Any]:
    # Asked each time: a probe goes offline with the same results (site_state caches).
    site = state.site_state(probe, results)
    return {
        "probe": probe.probe_id,
        "up": state.is_up(probe),
        "state": site.state,
        "causes": [_cause(c) for c in site.causes],
        **checks,
        "last_seen": probe.last_seen,
        "version": probe.version,
        "pop": probe.pop,
        "spool_depth": probe.health.spool_depth,
        # Results applied from the probe, and replays ignored, by this collector (since it
        # first heard of the probe: they survive restarts in its store).
        "applied": probe.applied,
        "duplicates": probe.duplicates,
    }


def _checks_view(state: State, probe: Probe, results: Sequence[pb.Result]) -> dict[str, Any]:
    """What a probe's view reads of its fresh results (and of its group facts, which a new
    Hello changes along with the revision, and so the fresh set)."""

    # Couriers first, then the groups the probe's catalog calls critical.
    def severity(result: pb.Result) -> tuple[bool, bool, str, str, int]:
        critical = state.group_facts(probe, result.group).critical
        return (result.check != "courier", not critical, result.group, result.target, result.port)

    failing = sorted((r for r in results if r.outcome != pb.OUTCOME_OK), key=severity)
    return {
        "couriers": courier_state(results) or "no result",
        "ports": [{"port": port, "status": _port_status(results, port)} for port in COURIER_PORTS],
        "checks": len(results),
        "failing": len(failing),
        "findings": [
            _finding(r, state.group_facts(probe, r.group).critical) for r in failing[:MAX_FINDINGS]
        ],
    }


def _cause(cause: sitestate.Cause) -> dict[str, str]:
    detail = cut(cause.detail, DEFAULT_MAX_STRING_BYTES)
    return {"state": cause.state, "cause": cause.cause, "group": cause.group, "detail": detail}


def _port_status(results: Sequence[pb.Result], port: int) -> str:
    """Whether a courier answered on this port (direct path): "ok", else the likeliest why."""
    outcomes = [
        r.outcome for r in results if r.check == "courier" and r.port == port and r.via != "proxy"
    ]
    if not outcomes:
        return "no result"
    if pb.OUTCOME_OK in outcomes:
        return "ok"
    return outcome_label(Counter(outcomes).most_common(1)[0][0])


def _finding(result: pb.Result, critical: bool) -> dict[str, Any]:
    return {
        "group": result.group,
        "critical": critical,
        "target": result.target,
        "port": result.port,
        "check": result.check,
        "family": result.address_family,
        "via": result.via,
        "outcome": outcome_label(result.outcome),
        "detail": result.detail,
    }


@functools.cache
def _template() -> str:
    return resources.files("courierwatch.collector").joinpath("status.html").read_text()


def _script_json(data: dict[str, Any]) -> str:
    """JSON safe inside a <script> element: no "</script>" or "<!--" can end it early."""
    text = json.dumps(data, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_page(snapshot: dict[str, Any] | None, nonce: str) -> str:
    """The page, with `snapshot` inline (None: the first is still being made)."""
    # The nonce first: probe data can then contain the placeholder text harmlessly.
    page = _template().replace("{{NONCE}}", nonce)
    return page.replace("{{INITIAL}}", _script_json(snapshot))


def routes(snapshots: Snapshots) -> list[web.RouteDef]:
    async def page(_: web.Request) -> web.Response:
        nonce = secrets.token_urlsafe(16)
        policy = (
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
            "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        )
        headers = {
            "Content-Security-Policy": policy,
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        }
        made = await snapshots.latest()
        snapshot = None if made is None else made.snapshot
        return web.Response(
            text=render_page(snapshot, nonce), content_type="text/html", headers=headers
        )

    async def api(_: web.Request) -> web.Response:
        made = await snapshots.latest()
        if made is None:
            return web.json_response({"making": "the first status snapshot"}, status=503,
                                     headers={"Cache-Control": "no-store", "Retry-After": "1"})
        return web.Response(body=made.body, content_type="application/json",
                            headers={"Cache-Control": "no-store"})  # fmt: skip

    return [web.get("/", page), web.get("/api/status", api)]
