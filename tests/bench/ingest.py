"""Collector ingest benchmark: N simulated probes stream batches to a real collector process;
prints results applied per second, the collector's CPU and memory, and how long a result takes
from being sent to showing on /metrics.

    python tests/bench/ingest.py                      # N = 10, 100, 1000, 5000
    python tests/bench/ingest.py --probes 1000 --seconds 20 --profile /tmp/prof

For each N, two phases on one collector, after --warmup seconds:
1. Visibility: the probes are paced to --visible-rate results/s in all (a saturated
   collector would only show how deep the senders' queues are). A few times a second one
   probe's next batch carries an extra result whose started_at is the moment it is sent.
   "acked": from sending it to its Ack, which the collector sends once the batch is applied
   and committed. "visible": from sending it to the first scrape of /metrics that shows it
   (the time its response began: an upper bound, by up to one gap between scrapes). Scrapes
   come a few times a second, never back to back, and take at most a third of the time.
   B/series: RSS at the end of this phase (scraped, paced) less that of the idle collector,
   per live series; it includes each stream's own memory. Peak RSS is the whole run's.
2. Throughput: every probe sends as fast as its Acks allow (--window batches unacknowledged);
   results/s, the collector's CPU (from /proc), its RSS; no scrapes meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

import harness

# Seconds between the end of a scrape and the next: a few a second, and the scrapes never
# more than a third of the collector's time (they would slow what they measure).
SCRAPE_GAP = 0.25
SCRAPE_SHARE = 1 / 3
MIN_SCRAPES, MAX_SCRAPES = 3, 1000


@dataclass(slots=True)
class Row:
    probes: int
    series: int
    results_per_second: float
    cpu_cores: float
    hwm: int
    growth: int  # RSS at the end of the paced phase minus RSS of the idle collector
    paced: float  # results/s during the visibility phase
    acks: list[float]  # seconds from sending a marker to its Ack: applied (and committed)
    delays: list[float]  # seconds from sending a marker to the scrape that first showed it
    scrape_seconds: list[float]
    applied_ok: bool

    def cells(self) -> list[str]:
        per_cpu = self.results_per_second / self.cpu_cores if self.cpu_cores else 0.0
        return [
            f"{self.probes:,}",
            f"{self.results_per_second:,.0f}",
            f"{self.cpu_cores:.2f}",
            f"{per_cpu:,.0f}",
            f"{self.hwm / 2**20:,.0f}",
            f"{self.series:,}",
            f"{self.growth / self.series:,.0f}" if self.series else "-",
            f"{self.paced:,.0f}",
            f"{harness.percentile(self.acks, 50):.3f}",
            f"{harness.percentile(self.acks, 99):.3f}",
            f"{harness.percentile(self.delays, 50):.3f}",
            f"{harness.percentile(self.delays, 99):.3f}",
            f"{len(self.delays)}",
            f"{harness.median(self.scrape_seconds):.3f}",
            "yes" if self.applied_ok else "NO",
        ]


HEADERS = [
    "probes", "results/s", "collector CPU (cores)", "results/CPU-s", "peak RSS MiB",
    "live series", "B/series", "paced results/s", "acked p50 s", "acked p99 s",
    "visible p50 s", "visible p99 s", "markers", "scrape p50 s", "acked <= applied",
]  # fmt: skip


async def sample_delays(url: str, stop: asyncio.Event, delays: list[float],
                        seconds: list[float]) -> harness.Scrape | None:  # fmt: skip
    """Scrape until told to stop, and at least MIN_SCRAPES times; each marker's delay the
    first time it is seen (markers sent before the first scrape are not counted: they may
    have been visible for long)."""
    seen: set[float] = set()
    since = time.time()
    last = None
    async with harness.session() as session:
        for _ in range(MAX_SCRAPES):
            if stop.is_set() and len(seconds) >= MIN_SCRAPES:
                break
            last = await harness.scrape(session, url)
            seconds.append(last.seconds)
            for started in last.markers():
                if started not in seen and started >= since:
                    seen.add(started)
                    delays.append(last.headers - started)
            gap = max(SCRAPE_GAP, last.seconds * (1 / SCRAPE_SHARE - 1))
            if not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), gap)
            else:
                await asyncio.sleep(gap)
    return last


async def run(probes: int, args: argparse.Namespace) -> Row:
    async with harness.running_collector() as collector:
        return await measure(collector, probes, args)


async def measure(collector: harness.Collector, probes: int, args: argparse.Namespace) -> Row:
    generators = await harness.Generators.start(
        collector.grpc, probes, max_seconds=args.warmup + 2 * args.seconds + 120,
        checks=args.checks, batch=args.batch, window=args.window,
        interval=probes * args.batch / args.visible_rate, markers_per_second=args.markers,
    )  # fmt: skip
    delays: list[float] = []
    scrape_seconds: list[float] = []
    try:
        generators.go()
        await fill(generators, probes * args.batch)
        await asyncio.sleep(args.warmup)
        # Visibility, paced.
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_delays(collector.url, stop, delays, scrape_seconds))
        await generators.marker_acks()  # from before the sampler: not counted
        acked0, t0 = await generators.acked(), time.time()
        await asyncio.sleep(args.seconds)
        acked1, t1 = await generators.acked(), time.time()
        stop.set()
        last = await sampler  # (it may want more scrapes, while the pace goes on)
        acks = await generators.marker_acks()
        steady_rss, _ = collector.memory()
        # Throughput, as fast as the collector acknowledges.
        generators.pace(0)
        await asyncio.sleep(1)
        acked2, cpu2, t2 = await generators.acked(), collector.cpu_seconds(), time.time()
        async with harness.profiling(collector, args.profile, f"ingest-{probes}"):
            await asyncio.sleep(args.seconds)
        acked3, cpu3, t3 = await generators.acked(), collector.cpu_seconds(), time.time()
    finally:
        acked_total = await generators.stop()
    async with harness.session() as session:
        settled = await harness.scrape(session, collector.url)
    return Row(
        probes=probes, series=last.series if last else 0,
        results_per_second=(acked3 - acked2) / (t3 - t2), cpu_cores=(cpu3 - cpu2) / (t3 - t2),
        hwm=collector.memory()[1], growth=steady_rss - collector.idle_rss,
        paced=(acked1 - acked0) / (t1 - t0), acks=acks, delays=delays,
        scrape_seconds=scrape_seconds, applied_ok=settled.applied() >= acked_total,
    )  # fmt: skip


async def fill(generators: harness.Generators, results: int, seconds: float = 60) -> None:
    """Wait (`seconds` at most) until the first batch of every probe is acknowledged: the
    burst of the start is not the pace measured."""
    async with asyncio.timeout(seconds):
        while await generators.acked() < results:  # noqa: ASYNC110 - another process's count
            await asyncio.sleep(0.25)


async def main(args: argparse.Namespace) -> None:
    harness.pin_driver()
    print(f"# ingest: {harness.machine()}")
    print(f"# {args.checks} checks per probe, batches of {args.batch}, "
          f"{args.window} unacknowledged batches per probe; visibility paced at "
          f"{args.visible_rate:,.0f} results/s; {args.seconds:g} s per phase after "
          f"{args.warmup:g} s warm-up", flush=True)  # fmt: skip
    rows = []
    for probes in args.probes:
        row = await run(probes, args)
        rows.append(row)
        print(f"# N={probes}: {row.results_per_second:,.0f} results/s", flush=True)
    print(harness.table(HEADERS, [row.cells() for row in rows]))


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--probes", type=lambda s: [int(n) for n in s.split(",")],
                        default=[10, 100, 1000, 5000], help="comma-separated N")
    parser.add_argument("--checks", type=int, default=20, help="distinct checks per probe")
    parser.add_argument("--batch", type=int, default=100, help="results per batch")
    parser.add_argument("--window", type=int, default=2, help="unacknowledged batches per probe")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per N")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    parser.add_argument("--markers", type=float, default=4.0, help="marker results per second")
    parser.add_argument("--visible-rate", type=float, default=20_000,
                        help="results/s of the visibility phase (5,000 sites x 250 checks "
                             "a minute: 20,000)")
    parser.add_argument("--profile", type=Path,
                        help="py-spy the collector meanwhile, stacks into this folder")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse()))
