"""Exposition benchmark: how long a real collector process takes to serve /metrics over HTTP
at 10k, 100k and 500k live series, while its probes keep streaming.

    python tests/bench/exposition.py                  # 10k, 100k, 500k series
    python tests/bench/exposition.py --series 500000 --scrapes 8 --profile /tmp/prof

The fleet is probes with --checks checks each (the built-in catalog has about 250), enough of
them for the series wanted. Each probe sends all its checks' results once every --period
seconds, and /metrics is scraped once a period: every check has a new result at every scrape,
the worst case for a renderer that reuses what did not change (as when checks run as often
as Prometheus scrapes). A second scrape right after each shows the best case.

A second table renders the same fleet in this process, with no HTTP: "before" is the reference
renderer (the exposition table through prometheus_client, tests/reference_exposition.py), the
others are the collector's own Exposition with every check changed and right after.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import harness
import workload

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for the reference
import reference_exposition

from courierwatch.collector.exposition import Exposition
from courierwatch.collector.state import State
from courierwatch.v1 import courierwatch_pb2 as pb


@dataclass(slots=True)
class Row:
    probes: int
    series: int
    body_bytes: int
    results_per_second: float
    changed: list[float]  # seconds per scrape, every check changed since the previous one
    ttfb: list[float]  # of those: until the response began (the rendering)
    repeat: list[float]  # seconds per scrape right after another
    hwm: int
    growth: int

    def cells(self, checks: int) -> list[str]:
        return [
            f"{self.series:,}",
            f"{self.probes:,} x {checks}",
            f"{self.body_bytes / 2**20:,.1f}",
            f"{self.results_per_second:,.0f}",
            f"{harness.median(self.changed):.3f}",
            f"{max(self.changed, default=float('nan')):.3f}",
            f"{harness.median(self.ttfb):.3f}",
            f"{harness.median(self.repeat):.3f}",
            f"{self.hwm / 2**20:,.0f}",
            f"{self.growth / self.series:,.0f}" if self.series else "-",
        ]


HEADERS = [
    "live series", "probes x checks", "body MiB", "ingest results/s", "scrape p50 s",
    "scrape max s", "first byte p50 s", "repeat scrape p50 s", "peak RSS MiB", "B/series",
]  # fmt: skip


async def run(series: int, per_check: float, args: argparse.Namespace) -> Row:
    probes = max(1, round(series / (args.checks * per_check)))
    async with harness.running_collector() as collector:
        return await measure(collector, probes, args)


async def measure(collector: harness.Collector, probes: int, args: argparse.Namespace) -> Row:
    generators = await harness.Generators.start(
        collector.grpc, probes, max_seconds=(args.scrapes + 2) * args.period + 300,
        checks=args.checks, batch=args.checks, window=1, interval=args.period,
    )  # fmt: skip
    changed: list[float] = []
    ttfb: list[float] = []
    repeat: list[float] = []
    last = None
    try:
        generators.go()
        await asyncio.sleep(args.period + 1)  # every probe has sent everything at least once
        acked0, t0 = await generators.acked(), time.time()
        async with (
            harness.session() as session,
            harness.profiling(collector, args.profile, f"exposition-{probes}"),
        ):
            for _ in range(args.scrapes):
                due = time.monotonic() + args.period
                last = await harness.scrape(session, collector.url)
                changed.append(last.seconds)
                ttfb.append(last.headers - last.sent)
                repeat.append((await harness.scrape(session, collector.url)).seconds)
                await asyncio.sleep(max(0.0, due - time.monotonic()))
        acked1, t1 = await generators.acked(), time.time()
        rss, hwm = collector.memory()
    finally:
        await generators.stop()
    assert last is not None
    return Row(
        probes=probes, series=last.series, body_bytes=len(last.body),
        results_per_second=(acked1 - acked0) / (t1 - t0), changed=changed, ttfb=ttfb,
        repeat=repeat, hwm=hwm, growth=rss - collector.idle_rss,
    )  # fmt: skip


def fleet(probes: int, checks: int) -> tuple[State, list[list[pb.Result]]]:
    """A state of `probes` probes with `checks` checks each, and a second round of results
    for each probe (every check changed)."""
    now = time.time()
    state = State(clock=lambda: now + 1)
    first, second = workload.results(checks, now), workload.results(checks, now + 1)
    rounds = []
    for i in range(probes):
        probe = state.connect(pb.Hello(site=f"site-{i}", probe_id=f"pi-{i}"))
        for seq, result in enumerate(first, 1):
            result.seq = seq
        state.apply(probe, first)
        rounds.append(second)
    return state, rounds


def series_per_check(checks: int) -> float:
    """Series one probe's checks make on /metrics, by the collector's own exposition code."""
    def lines(state: State) -> int:
        text = Exposition(state).render()
        return text.count(b"\n") - text.count(b"\n#") - text.startswith(b"#")

    bare = State()
    bare.connect(pb.Hello(site="site-0", probe_id="pi-0"))
    return (lines(fleet(1, checks)[0]) - lines(bare)) / checks


def in_process(series: int, checks: int, per_check: float) -> list[str]:
    probes = max(1, round(series / (checks * per_check)))
    state, rounds = fleet(probes, checks)
    t0 = time.perf_counter()
    reference_exposition.render(state)
    before = time.perf_counter() - t0
    exposition = Exposition(state)
    exposition.render()
    for probe, second in zip(state.probes(), rounds, strict=True):
        for seq, result in enumerate(second, probe.applied_through + 1):
            result.seq = seq
        state.apply(probe, second)
    t0 = time.perf_counter()
    body = exposition.render()
    changed = time.perf_counter() - t0
    t0 = time.perf_counter()
    exposition.render()
    repeat = time.perf_counter() - t0
    lines = body.count(b"\n") - body.count(b"\n#") - body.startswith(b"#")
    return [f"{lines:,}", f"{before:.3f}", f"{changed:.3f}", f"{repeat:.3f}",
            f"{before / changed:.1f}"]  # fmt: skip


IN_PROCESS = ["live series", "before: reference s", "changed s", "repeat s", "speed-up"]


async def main(args: argparse.Namespace) -> None:
    harness.pin_driver()
    per_check = series_per_check(args.checks)
    print(f"# exposition: {harness.machine()}")
    print(f"# {args.checks} checks per probe ({per_check:.2f} series each), every check "
          f"reporting every {args.period:g} s, one scrape per period, {args.scrapes} scrapes "
          "per size", flush=True)  # fmt: skip
    rows = []
    for series in args.series:
        row = await run(series, per_check, args)
        rows.append(row)
        print(f"# {row.series:,} series: {harness.median(row.changed):.3f} s", flush=True)
    print(harness.table(HEADERS, [row.cells(args.checks) for row in rows]))
    print("\n# in process, no HTTP: the reference renderer (before) and Exposition", flush=True)
    print(harness.table(IN_PROCESS, [in_process(n, args.checks, per_check) for n in args.series]))


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=lambda s: [int(n) for n in s.split(",")],
                        default=[10_000, 100_000, 500_000], help="comma-separated live series")
    parser.add_argument("--checks", type=int, default=250, help="distinct checks per probe")
    parser.add_argument("--period", type=float, default=5.0,
                        help="seconds between a check's results, and between scrapes")
    parser.add_argument("--scrapes", type=int, default=4, help="scrapes per size")
    parser.add_argument("--profile", type=Path,
                        help="py-spy the collector meanwhile, stacks into this folder")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse()))
