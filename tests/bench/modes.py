"""Remote-write mode and scrape mode side by side (issue 12, item 8): per fleet size, a real
collector process in each mode, the same simulated probes (loadgen.py, 250 checks each: the
catalog's size), and a real store for remote write.

    python tests/bench/modes.py                     # 100k and 500k series, both stores
    python tests/bench/modes.py --series 100000 --stores victoria-metrics --profile /tmp/prof
    python tests/bench/modes.py --fleet 5000        # 5,000 sites x 250 checks, remote write

The fleet for S series is S / (8.87 x 250) probes of 250 checks (8.87 series per check in
scrape mode). Per mode (and per store in remote-write mode), on a fresh collector and store:

1. Paced: every check reports every --period seconds (each probe one batch of its 250 results
   per period), a few marker results a second. `acked`: from sending a marker's batch to its
   Ack; in remote-write mode the Ack comes once the store answered 2xx for its samples, so
   this is arrival-to-stored. /metrics is scraped meanwhile (never more than a third of the
   time): scrape p50 and max; the collector's CPU over the phase (scrapes included).
2. Throughput: every probe as fast as its Acks allow; results/s acknowledged, the collector's
   CPU-seconds from /proc (all threads), results per collector CPU-second: gRPC in, apply,
   commit, and in remote-write mode encode, snappy and HTTP out to the store. No scrapes.

With --stores null the store is this process answering 204 at once: what the collector does
per core when no store holds it back.

--fleet N: N probes x 250 checks in remote-write mode, to a store in this process that answers
204 to everything (the store's speed is not what this measures), paced at --rate results/s in
all; /metrics, /healthz and /api/status requested in turn meanwhile: the first of each (for
which the status snapshot is made, no one having read it before), then p50 and max of each.

The collector runs on CPU 0; the store, the load generators and this driver share the others
(harness.COLLECTOR_CPUS, DRIVER_CPUS).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import harness
from aiohttp import web
from ingest import fill

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/: the store fixtures
from test_remotewrite_stores import STORES

CHECKS = 250
SERIES_PER_CHECK = 8.87  # scrape mode, workload.results' mix (exposition.py measured it)
SCRAPE_SHARE = 1 / 3  # of the collector's time at most
MIN_GAP = 0.5  # seconds between the end of a scrape and the next
NULL_STORE = "null"  # --stores: a store in this process that answers 204 to everything


@dataclass(slots=True)
class Row:
    mode: str
    probes: int
    paced: float = 0.0  # results/s acknowledged while paced
    acks: list[float] = field(default_factory=list)
    scrapes: list[float] = field(default_factory=list)
    series: int = 0  # sample lines of the last scrape
    paced_cpu: float = 0.0  # collector cores while paced
    throughput: float = 0.0
    cpu: float = 0.0  # collector cores during the throughput phase
    hwm: int = 0

    def cells(self) -> list[str]:
        per_cpu = self.throughput / self.cpu if self.cpu else math.nan
        return [
            self.mode, f"{self.probes:,} x {CHECKS}",
            f"{self.probes * CHECKS * SERIES_PER_CHECK:,.0f}", f"{self.series:,}",
            f"{self.paced:,.0f}",
            f"{harness.median(self.acks):.3f}", f"{harness.percentile(self.acks, 99):.3f}",
            f"{harness.median(self.scrapes):.3f}", f"{max(self.scrapes, default=math.nan):.3f}",
            f"{self.paced_cpu:.2f}", f"{self.throughput:,.0f}", f"{self.cpu:.2f}",
            f"{per_cpu:,.0f}", f"{self.hwm / 2**20:,.0f}",
        ]  # fmt: skip


HEADERS = [
    "mode", "probes x checks", "series (scrape mode)", "/metrics lines", "paced results/s",
    "acked p50 s", "acked p99 s", "scrape p50 s", "scrape max s", "paced CPU (cores)",
    "results/s", "CPU (cores)", "results/CPU-s", "peak RSS MiB",
]  # fmt: skip


async def scraping(url: str, stop: asyncio.Event, row: Row) -> None:
    """Scrape /metrics until `stop`, at most a third of the time, at least once."""
    async with harness.session() as session:
        while True:
            last = await harness.scrape(session, url)
            row.scrapes.append(last.seconds)
            row.series = last.series
            gap = max(MIN_GAP, last.seconds * (1 / SCRAPE_SHARE - 1))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), gap)
            if stop.is_set():
                return


async def measure(collector: harness.Collector, row: Row, args: argparse.Namespace,
                  name: str) -> Row:  # fmt: skip
    probes = row.probes
    generators = await harness.Generators.start(
        collector.grpc, probes, max_seconds=2 * args.seconds + 300, checks=CHECKS,
        batch=CHECKS, window=args.window, interval=args.period,
        markers_per_second=args.markers,
    )  # fmt: skip
    try:
        generators.go()
        await fill(generators, probes * CHECKS, seconds=300)
        # Paced, scraped.
        stop = asyncio.Event()
        scraper = asyncio.create_task(scraping(collector.url, stop, row))
        await generators.marker_acks()  # from before: not counted
        acked0, cpu0, t0 = await generators.acked(), collector.cpu_seconds(), time.time()
        await asyncio.sleep(args.seconds)
        acked1, cpu1, t1 = await generators.acked(), collector.cpu_seconds(), time.time()
        stop.set()
        await scraper
        row.acks = await generators.marker_acks()
        row.paced, row.paced_cpu = (acked1 - acked0) / (t1 - t0), (cpu1 - cpu0) / (t1 - t0)
        # Throughput.
        generators.pace(0)
        await asyncio.sleep(1)
        acked2, cpu2, t2 = await generators.acked(), collector.cpu_seconds(), time.time()
        async with harness.profiling(collector, args.profile, name):
            await asyncio.sleep(args.seconds)
        acked3, cpu3, t3 = await generators.acked(), collector.cpu_seconds(), time.time()
        row.throughput, row.cpu = (acked3 - acked2) / (t3 - t2), (cpu3 - cpu2) / (t3 - t2)
    finally:
        await generators.stop()
    row.hwm = collector.memory()[1]
    return row


@contextlib.asynccontextmanager
async def collector_in(
    directory: Path, remote_write: dict[str, object] | None, probes: int, idle: float = 30.0
) -> AsyncIterator[harness.Collector]:
    """`idle`: seconds a stream may be silent (the load generators send no health beats)."""
    limits = {"max_streams": max(4096, probes + 100),  # the default takes 4,096
              "idle_timeout": f"{idle:g}s"}  # fmt: skip
    collector = await harness.Collector.start(directory, limits, remote_write)
    try:
        yield collector
    finally:
        await collector.stop()


async def scrape_mode(probes: int, args: argparse.Namespace) -> Row:
    with tempfile.TemporaryDirectory(prefix="cw-modes-") as tmp:
        async with collector_in(Path(tmp), None, probes) as collector:
            return await measure(collector, Row("scrape", probes), args, f"scrape-{probes}")


@contextlib.asynccontextmanager
async def store_url(store: str, directory: Path) -> AsyncIterator[str]:
    """A store's remote-write URL: a real one of STORES, on the driver's CPUs (as we are), or
    NULL_STORE (the collector's own limit, with no store to wait for)."""
    if store == NULL_STORE:
        async with null_store() as url:
            yield url
        return
    async with STORES[store](directory) as running:
        yield running.write


async def remote_mode(store: str, probes: int, args: argparse.Namespace) -> Row:
    with tempfile.TemporaryDirectory(prefix="cw-modes-") as tmp:
        async with store_url(store, Path(tmp)) as url:
            section = {"url": url, "max_request_samples": args.request_samples}
            async with collector_in(Path(tmp), section, probes) as collector:
                row = Row(f"remote write, {store}", probes)
                return await measure(collector, row, args, f"rw-{store}-{probes}")


# --- --fleet: the HTTP side at 5,000 sites x 250 checks ------------------------------------


@contextlib.asynccontextmanager
async def null_store() -> AsyncIterator[str]:
    """A remote-write URL that reads every request and answers 204, served by a process of its
    own (this one's event loop reads big scrapes meanwhile)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--serve-null-store", stdout=asyncio.subprocess.PIPE)
    try:
        assert process.stdout is not None
        async with asyncio.timeout(30):
            port = int((await process.stdout.readline()).decode().split()[1])
        yield f"http://127.0.0.1:{port}/api/v1/write"
    finally:
        process.terminate()
        await process.wait()


async def serve_null_store() -> None:
    """Says "listening PORT", then answers 204 to every write until terminated."""

    async def write(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=204)

    app = web.Application(client_max_size=256 * 2**20)
    app.router.add_post("/api/v1/write", write)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(f"listening {site._server.sockets[0].getsockname()[1]}", flush=True)
    await asyncio.Event().wait()  # until SIGTERM


async def timed(get: Callable[[], Awaitable[None]]) -> float:
    started = time.monotonic()
    await get()
    return time.monotonic() - started


def turn_figures(metrics: bytes) -> tuple[float, float, float]:
    """The collector's batches waiting for their turn, the seconds they waited in all, and
    the Busy messages it sent its probes meanwhile, in all."""
    names = (b"courierwatch_collector_batches_waiting",
             b"courierwatch_collector_batch_wait_seconds_total",
             b"courierwatch_collector_busy_notices_total")
    waiting, waited, busy = (float(re.search(rb"^" + name + rb" (\S+)$", metrics, re.M)[1])
                             for name in names)  # fmt: skip
    return waiting, waited, busy


async def fleet(args: argparse.Namespace) -> list[list[str]]:
    probes = args.fleet
    interval = probes * CHECKS / args.rate  # seconds between a probe's batches
    with tempfile.TemporaryDirectory(prefix="cw-fleet-") as tmp:
        async with (
            null_store() as url,
            collector_in(Path(tmp), {"url": url}, probes, idle=max(600, 3 * interval)) as collector,
        ):
            base = collector.url.removesuffix("/metrics")
            generators = await harness.Generators.start(
                collector.grpc, probes, max_seconds=args.seconds + 600, checks=CHECKS,
                batch=CHECKS, window=args.window, interval=interval,
            )  # fmt: skip
            times: dict[str, list[float]] = {"/metrics": [], "/healthz": [], "/api/status": []}
            first: dict[str, float] = {}
            # /api/status answers 503 while its first snapshot is made (collector/snapshots.py)
            not_yet = dict.fromkeys(times, 0)
            turns: list[tuple[float, float, float, float]] = []  # per /metrics: time, turns()
            try:
                generators.go()
                await fill(generators, probes * CHECKS, seconds=600)
                acked0, t0 = await generators.acked(), time.time()
                async with harness.session() as session:

                    def getter(path: str) -> Callable[[], Awaitable[None]]:
                        async def get() -> None:
                            async with session.get(base + path) as response:
                                making = path == "/api/status" and response.status == 503
                                assert response.status == 200 or making, (path, response.status)
                                not_yet[path] += making
                                body = await response.read()
                            if path == "/metrics":
                                turns.append((time.monotonic(), *turn_figures(body)))
                        return get

                    # The first of each: the status snapshot is made for it (no one read
                    # one before), the others find one made in the background.
                    for path in list(times):
                        first[path] = await timed(getter(path))
                    until = time.monotonic() + args.seconds
                    while time.monotonic() < until:
                        for path, seconds in times.items():
                            seconds.append(await timed(getter(path)))
                            await asyncio.sleep(0.1)  # pacing the requests, not syncing
                acked1, t1 = await generators.acked(), time.time()
            finally:
                await generators.stop()
            rss, hwm = collector.memory()
    rate = (acked1 - acked0) / (t1 - t0)
    waiting = [n for _, n, _, _ in turns[1:]]  # the requests after the first
    (start, _, waited0, busy0), (end, _, waited1, busy1) = turns[1], turns[-1]
    print(f"# batches waiting for their turn, at each /metrics: p50 "
          f"{harness.median(waiting):,.0f}, max {max(waiting):,.0f}; on average over the "
          f"window (wait seconds per second): "
          f"{(waited1 - waited0) / (end - start):,.1f}; Busy messages sent: "
          f"{(busy1 - busy0) / (end - start):,.1f}/s")  # fmt: skip
    return [[path, f"{probes:,} x {CHECKS}", f"{rate:,.0f}", f"{first[path]:.3f}",
             f"{len(seconds)}", f"{not_yet[path]}", f"{harness.median(seconds):.3f}",
             f"{max(seconds):.3f}",
             f"{rss / 2**20:,.0f}", f"{hwm / 2**20:,.0f}"]
            for path, seconds in times.items()]  # fmt: skip


async def main(args: argparse.Namespace) -> None:
    harness.pin_driver()
    if args.serve_null_store:
        await serve_null_store()
        return
    if args.fleet:
        rows = await fleet(args)
        print(f"# {harness.machine()}; load average {os.getloadavg()[0]:.1f}")
        headers = ["request", "probes x checks", "results/s", "first s", "then", "503s",
                   "p50 s", "max s", "RSS MiB", "peak RSS MiB"]  # fmt: skip
        print(harness.table(headers, rows))
        return
    print(f"# {harness.machine()}; load average {os.getloadavg()[0]:.1f} at the start", flush=True)
    rows = []
    for series in args.series:
        probes = max(1, round(series / (SERIES_PER_CHECK * CHECKS)))
        for store in args.stores.split(",") if args.stores else ():
            rows.append(await remote_mode(store, probes, args))
            print(f"# {rows[-1].mode}, {probes} probes: {rows[-1].throughput:,.0f} results/s, "
                  f"load average {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
        rows.append(await scrape_mode(probes, args))
        print(f"# scrape, {probes} probes: load average {os.getloadavg()[0]:.1f}", flush=True)
    print(f"# {CHECKS} checks per probe, one batch of them per probe every {args.period:g} s "
          f"while paced; {args.seconds:g} s per phase; {args.window} batches unacknowledged "
          f"per probe; load average {os.getloadavg()[0]:.1f} at the end")  # fmt: skip
    print(harness.table(HEADERS, [row.cells() for row in rows]))


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=lambda s: [int(n) for n in s.split(",")],
                        default=[100_000, 500_000], help="comma-separated, scrape mode's count")
    parser.add_argument("--stores", default=",".join(sorted(STORES)),
                        help=f"comma-separated, or {NULL_STORE!r} (answers 204 at once); "
                             "empty: scrape mode only")
    parser.add_argument("--period", type=float, default=5.0,
                        help="seconds between a probe's batches while paced")
    parser.add_argument("--seconds", type=float, default=10.0, help="per phase")
    parser.add_argument("--window", type=int, default=2, help="unacknowledged batches per probe")
    parser.add_argument("--markers", type=float, default=4.0, help="marker results per second")
    parser.add_argument("--request-samples", type=int, default=50_000,
                        help="remote write: samples per request at most")  # fmt: skip
    parser.add_argument("--profile", type=Path,
                        help="py-spy the collector during each throughput phase, into here")
    parser.add_argument("--fleet", type=int, help="probes: the HTTP side at this fleet size")
    parser.add_argument("--rate", type=float, default=20_000,
                        help="--fleet: results/s in all (5,000 x 250 a minute: 20,000)")
    parser.add_argument("--serve-null-store", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse()))
