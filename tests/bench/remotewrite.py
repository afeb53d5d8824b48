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

    python tests/bench/remotewrite.py --disk 6             # VictoriaMetrics' bytes per sample

--disk HOURS writes HOURS of a fleet's results (--disk-probes x --checks, each check at its
interval, 30 s or 60 s; durations with full float precision and the run's jitter, start times
a few ms off their schedule, as a probe's are) to a VictoriaMetrics, merges its parts as it
does by itself, and prints its disk use (vm_data_size_bytes) per sample, data parts and index
apart, and the index per check per day (it grows with series and days, not samples): the
figures deploy/README.md's sizing table uses.

This process runs pinned to CPU 0 when the machine has two or more cores, the stores to the
others (harness.COLLECTOR_CPUS, DRIVER_CPUS).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import aiohttp
import harness
import workload
from prometheus_client.parser import text_string_to_metric_families

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


async def disk(args: argparse.Namespace) -> list[str]:
    """Writes args.disk hours of a fleet to a VictoriaMetrics; its bytes per sample."""
    draw = random.Random(12).random
    probes = [(f"site{n}", "probe0") for n in range(args.disk_probes)]
    fleet = {who: workload.results(args.checks, 0.0) for who in probes}
    keys = {who: [check_key(r) for r in rs] for who, rs in fleet.items()}
    span = int(args.disk * 3600)
    start = int(time.time()) - span - 60
    with tempfile.TemporaryDirectory(prefix="cw-rw-disk-") as tmp:
        async with STORES["victoria-metrics"](Path(tmp)) as running:
            async with RemoteWriter(running.write, max_request_samples=args.request_samples,
                                    concurrency=2) as writer:  # fmt: skip
                pending: list[asyncio.Future] = []
                for at in range(0, span, ROUND_SECONDS):
                    for who, results in fleet.items():
                        due = [(r, k) for r, k in zip(results, keys[who], strict=True)
                               if at % int(r.interval_seconds) == 0]  # fmt: skip
                        for n, (result, _) in enumerate(due):
                            offset = (n * 7919) % int(result.interval_seconds)  # its slot
                            result.started_at.FromNanoseconds(
                                (start + at + offset) * 10**9 + int(draw() * 8e6))
                            phases = result.phases
                            for name in ("dns", "connect", "tls", "first_byte", "total"):
                                if phases.HasField(name):
                                    setattr(phases, name, 0.005 + 0.05 * draw() ** 3)
                        pending.append(await writer.write(*who, [r for r, _ in due],
                                                          [k for _, k in due]))  # fmt: skip
                        while pending and pending[0].done():
                            assert pending.pop(0).result() is None
                assert [await delivery for delivery in pending] == [None] * len(pending)
                samples = writer.telemetry.sent
            async with aiohttp.ClientSession() as session:
                async with session.get(running.flush) as response:
                    assert response.status == 200
                month = time.strftime("%Y_%m", time.gmtime(start))
                async with session.get(running.api + "/internal/force_merge",
                                       params={"partition_prefix": month}) as response:
                    assert response.status == 200
                sizes = await _merged_sizes(session, running.api)
    data = sizes.get("storage/small", 0) + sizes.get("storage/big", 0)
    index = sum(size for kind, size in sizes.items() if kind.startswith("indexdb"))
    checks = sum(len(rs) for rs in fleet.values())
    return [f"{args.disk:g} h", f"{checks:,}", f"{samples:,}",
            f"{data / samples:.2f}", f"{index / samples:.2f}", f"{(data + index) / samples:.2f}",
            f"{index / checks / (args.disk / 24):,.0f}"]  # fmt: skip


async def _merged_sizes(session: aiohttp.ClientSession, api: str) -> dict[str, float]:
    """vm_data_size_bytes by type, once no merge is running (it reports no event)."""
    for _ in range(600):  # at most a minute
        async with session.get(api + "/metrics") as response:
            text = await response.text()
        values = {s.name + s.labels.get("type", ""): s.value
                  for family in text_string_to_metric_families(text)
                  for s in family.samples}  # fmt: skip
        merging = sum(v for k, v in values.items() if k.startswith("vm_active_merges"))
        if not merging:
            break
        await asyncio.sleep(0.1)  # polling: VictoriaMetrics offers nothing to await
    return {k.removeprefix("vm_data_size_bytes"): v for k, v in values.items()
            if k.startswith("vm_data_size_bytes")}  # fmt: skip


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
    parser.add_argument("--disk", type=float, help="hours to write: VictoriaMetrics' disk use")
    parser.add_argument("--disk-probes", type=int, default=4, help="probes, with --disk")
    args = parser.parse_args()
    if args.disk is not None:
        row = await disk(args)
        print(f"{harness.machine()}; load average {os.getloadavg()[0]:.1f}\n")
        print(harness.table(["span", "checks", "samples", "data B/sample", "index B/sample",
                             "total B/sample", "index B/check/day"], [row]))  # fmt: skip
        return
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
