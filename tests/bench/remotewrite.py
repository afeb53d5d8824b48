"""Remote-write throughput and arrival-to-stored latency, to a real VictoriaMetrics and to a
real Prometheus (started here, as the store tests start them), through the collector's encoder
and sender (courierwatch.collector.remote) running in this process on one core.

    python tests/bench/remotewrite.py                     # both stores, about a minute
    python tests/bench/remotewrite.py --stores victoria-metrics --seconds 5 --profile out.prof

A fleet of --probes probes of --checks checks each (workload.results: the catalog's mix) sends
one result per check per round, as many streams would: each probe writes a batch, keeps
--window deliveries outstanding, and a batch is done when the store answered 2xx for it. Round n
of a check starts n x 30 s after its first, so every sample is new and in order per series.

Per store:
- throughput: every probe as fast as its deliveries allow. results/s stored; this process's
  CPU (all threads) less the time spent making the workload (moving timestamps), as results
  per CPU-second: what one collector core does through encode + send.
- paced: --rate results/s (default 20,000: 5,000 sites x 250 checks a minute); arrival (the
  batch handed to the writer, as ingest would after applying it) to stored (its delivery
  done): p50 and p99.
The line "encoder only" is the encoder alone on the same results, no network.

This process runs pinned to CPU 0 when the machine has two or more cores, the stores to the
others (harness.COLLECTOR_CPUS, DRIVER_CPUS).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import harness
import workload

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/: the store fixtures
from test_remotewrite_stores import STORES

from courierwatch.collector.remote.encode import Encoder
from courierwatch.collector.remote.send import RemoteWriter
from courierwatch.collector.state import check_key
from courierwatch.v1 import courierwatch_pb2 as pb

ROUND_SECONDS = 30  # between two runs of a check


class Fleet:
    """Every probe's results, moved on by ROUND_SECONDS each round; the CPU time of moving
    them is kept, to be taken out of the collector's."""

    def __init__(self, probes: int, checks: int, start: float) -> None:
        self.probes = [(f"site{n // 2}", f"probe{n % 2}") for n in range(probes)]
        self.results = {probe: workload.results(checks, start) for probe in self.probes}
        self.keys = {probe: [check_key(r) for r in rs] for probe, rs in self.results.items()}
        self.overhead = 0.0  # CPU seconds spent moving timestamps

    def next_round(self, probe: tuple[str, str]) -> list[pb.Result]:
        started = time.process_time()
        results = self.results[probe]
        for result in results:
            result.started_at.seconds += ROUND_SECONDS
        self.overhead += time.process_time() - started
        return results


async def run_probes(writer: RemoteWriter, fleet: Fleet, window: int, until: float,
                     pace: float | None, latencies: list[float]) -> int:  # fmt: skip
    """Every probe writes rounds until `until` (monotonic), `pace` seconds apart if given;
    returns the results stored."""

    def stored_at(arrived: float) -> Callable[[asyncio.Future], None]:
        return lambda _: latencies.append(time.monotonic() - arrived)

    async def probe(who: tuple[str, str], offset: float) -> int:
        pending: list[asyncio.Future] = []
        stored = 0
        due = time.monotonic() + offset
        while time.monotonic() < until:
            if pace is not None:
                await asyncio.sleep(max(0.0, due - time.monotonic()))  # pacing, not syncing
                due += pace
            results = fleet.next_round(who)
            arrived = time.monotonic()
            delivery = await writer.write(*who, results, fleet.keys[who])
            delivery.add_done_callback(stored_at(arrived))  # when the store answered
            pending.append(delivery)
            while len(pending) >= window or (pending and pending[0].done()):
                assert await pending.pop(0) is None, "the store refused samples"
                stored += len(results)
        for delivery in pending:
            assert await delivery is None, "the store refused samples"
            stored += len(fleet.results[who])
        return stored

    spread = pace or 0.0
    counts = await asyncio.gather(*(probe(who, spread * n / len(fleet.probes))
                                    for n, who in enumerate(fleet.probes)))  # fmt: skip
    return sum(counts)


async def bench_store(
    name: str,
    store: Callable[[Path], AbstractAsyncContextManager],
    args: argparse.Namespace,
    profile: cProfile.Profile | None,
) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="cw-rw-bench-") as tmp:
        os.sched_setaffinity(0, harness.DRIVER_CPUS)  # the store's threads inherit this
        async with store(Path(tmp)) as running:
            os.sched_setaffinity(0, harness.COLLECTOR_CPUS)
            fleet = Fleet(args.probes, args.checks, time.time() - 7200)
            writer = RemoteWriter(running.write, concurrency=args.concurrency,
                                  max_request_samples=args.request_samples)  # fmt: skip
            async with writer:
                # Warm up: every series once, so the store has them and the encoder its labels.
                deliveries = [await writer.write(*who, fleet.next_round(who), fleet.keys[who])
                              for who in fleet.probes]  # fmt: skip
                assert [await delivery for delivery in deliveries] == [None] * len(deliveries)
                fleet.overhead = 0.0
                latencies: list[float] = []
                cpu, wall = time.process_time(), time.monotonic()
                if profile is not None:
                    profile.enable()
                stored = await run_probes(writer, fleet, args.window, wall + args.seconds,
                                          None, latencies)  # fmt: skip
                if profile is not None:
                    profile.disable()
                wall = time.monotonic() - wall
                cpu = time.process_time() - cpu - fleet.overhead
                paced: list[float] = []
                period = args.probes * args.checks / args.rate  # seconds between a probe's rounds
                await run_probes(writer, fleet, args.window, time.monotonic() + args.seconds,
                                 period, paced)  # fmt: skip
        os.sched_setaffinity(0, set(harness.ALL_CPUS))
    return [
        name,
        f"{stored / wall:,.0f}",
        f"{cpu / wall:.2f}",
        f"{stored / cpu:,.0f}",
        f"{samples_per_result(fleet):.1f}",
        f"{harness.median(latencies):.3f}",
        f"{harness.percentile(latencies, 99):.3f}",
        f"{args.rate:,}",
        f"{harness.median(paced):.3f}",
        f"{harness.percentile(paced, 99):.3f}",
    ]


def samples_per_result(fleet: Fleet) -> float:
    who = fleet.probes[0]
    results = fleet.results[who]
    return Encoder().encode(*who, results, fleet.keys[who])[1] / len(results)


def encoder_only(args: argparse.Namespace) -> list[str]:
    os.sched_setaffinity(0, harness.COLLECTOR_CPUS)
    fleet = Fleet(args.probes, args.checks, time.time())
    encoder = Encoder()
    for probe in fleet.probes:  # warm: labels cached
        encoder.encode(*probe, fleet.results[probe], fleet.keys[probe])
    rounds = max(1, 200_000 // (args.probes * args.checks))
    cpu = time.process_time()
    for _ in range(rounds):
        for probe in fleet.probes:
            encoder.encode(*probe, fleet.next_round(probe), fleet.keys[probe])
    cpu = time.process_time() - cpu - fleet.overhead
    done = rounds * args.probes * args.checks
    os.sched_setaffinity(0, set(harness.ALL_CPUS))
    return ["encoder only", "", "1.00", f"{done / cpu:,.0f}", f"{samples_per_result(fleet):.1f}",
            "", "", "", "", ""]  # fmt: skip


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", default=",".join(sorted(STORES)))
    parser.add_argument("--probes", type=int, default=100)
    parser.add_argument("--checks", type=int, default=250)
    parser.add_argument("--window", type=int, default=2, help="deliveries outstanding per probe")
    parser.add_argument("--concurrency", type=int, default=1, help="requests in flight")
    parser.add_argument("--request-samples", type=int, default=50_000,
                        help="samples per request at most")  # fmt: skip
    parser.add_argument("--seconds", type=float, default=10.0, help="per phase")
    parser.add_argument("--rate", type=int, default=20_000, help="results/s, paced phase")
    parser.add_argument("--profile", type=Path, help="cProfile stats of the throughput phases")
    args = parser.parse_args()
    profile = cProfile.Profile() if args.profile else None
    rows = [encoder_only(args)]
    for name in args.stores.split(","):
        rows.append(await bench_store(name, STORES[name], args, profile))
    if profile is not None:
        profile.dump_stats(args.profile)
    print(f"{harness.machine()}; load average {os.getloadavg()[0]:.1f}")
    print(f"{args.probes} probes x {args.checks} checks, window {args.window}, "
          f"concurrency {args.concurrency}, requests of {args.request_samples:,} samples at "
          f"most, {args.seconds:g} s per phase\n")  # fmt: skip
    print(harness.table(
        ["store", "results/s", "CPU (cores)", "results/CPU-s", "samples/result",
         "stored p50 s", "stored p99 s", "paced results/s", "paced p50 s", "paced p99 s"],
        rows,
    ))  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
