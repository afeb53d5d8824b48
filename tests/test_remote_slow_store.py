"""Remote-write mode with a slow store and many probes, with real processes (issue 12, item 6):
a collector process in remote-write mode, PROBES simulated probes each streaming over its own
gRPC channel, and a store on loopback that first refuses (503, then 429), then answers 2xx
only after STORE_DELAY per request, then at once.

While the store is slow: the collector's RSS stays within a bound derived from
max_queued_samples (however much the probes have waiting); the queue depth on /metrics never
exceeds its configured limit (and reaches it: the backpressure is real); the retries, their
reasons and the requests' durations are counted there; no probe is acknowledged a result the
store does not have (checked at every Ack), so the probes keep spooling what they measure.
Once the store is fast again, everything every probe made is delivered, exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import cramjam
import grpc
import pytest
import yaml
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from courierwatch.prompb import remote_pb2 as prompb
from courierwatch.v1 import courierwatch_pb2 as pb
from processes import courierwatch, line_starting

pytestmark = [pytest.mark.integration]

PROBES = 20
CHECKS = 250  # per probe; one batch per round holds one result of each
ROUNDS = 16  # a probe measures this many rounds, ROUND_SECONDS apart, whatever the store does
ROUND_SECONDS = 0.25
MAX_QUEUED = 5000  # samples: the collector's bound
MAX_REQUEST = 1000
REFUSALS = [(503, {}), (503, {}), (503, {}), (429, {"Retry-After": "0"}), (429, {})]
STORE_DELAY = 0.3  # seconds before each 2xx while the store is slow
# What the collector may grow by while the store is slow, beyond what it held once every
# probe was connected and had one round stored: the queue at the configuration's ~240 bytes
# per sample, twice over (the request in flight is a copy, and its snappy body one more);
# per stream, a batch parsed and encoded while it waits for room, and what gRPC buffers of the
# messages not read yet (its receive window, which BDP probing grows to about a megabyte: the
# probe's uplink, like these, writes as fast as flow control lets it); and the allocator's
# slack. Measured: ~31 MB (the queue bound at 5,000 samples), against ~76 MB with the queue
# unbounded, for the ~560,000 samples the probes hold meanwhile (asserted).
BYTES_PER_QUEUED_SAMPLE = 240
PER_STREAM_ALLOWANCE = 2 * 2**20
FIXED_ALLOWANCE = 8 * 2**20
BASE_MS = int((time.time() - 3600) * 1000)  # a result's started_at: BASE_MS + its seq, in ms
METHOD = "/courierwatch.v1.Collector/Report"


@dataclass
class SlowStore:
    """A remote-write receiver that records the outcome sample of every result it answers 2xx
    for, per probe by seq (its timestamp less BASE_MS); `slow` makes it refuse, then wait."""

    slow: bool = False
    refusals: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    stored: dict[str, Counter[int]] = field(default_factory=dict)  # probe: seq -> copies
    contiguous: dict[str, int] = field(default_factory=dict)  # probe: every seq up to it stored
    answered: Counter[int] = field(default_factory=Counter)  # requests by status
    slow_answers: int = 0  # 2xx answered after STORE_DELAY
    state_requests: int = 0  # answered at once: not the results' writer (remote/current.py)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        series = prompb.WriteRequest.FromString(
            bytes(cramjam.snappy.decompress_raw(await request.read()))).timeseries  # fmt: skip
        outcomes = [s for s in series if s.labels[0].value == "courierwatch_check_outcome"]
        if not outcomes:  # the collector's other writer: its probes' state, now and then
            self.state_requests += 1
            return web.Response(status=204)
        if self.slow and self.refusals:
            status, headers = self.refusals.pop(0)
            self.answered[status] += 1
            return web.Response(status=status, headers=headers, text="busy")
        if self.slow:
            await asyncio.sleep(STORE_DELAY)  # the slow store itself, not a synchronisation
            self.slow_answers += 1
        self._record(outcomes)
        self.answered[204] += 1
        return web.Response(status=204)

    def _record(self, outcomes: list[prompb.TimeSeries]) -> None:
        for series in outcomes:  # labels sorted by name: __name__ first
            probe = next(label.value for label in series.labels if label.name == "probe")
            copies = self.stored.setdefault(probe, Counter())
            for sample in series.samples:
                copies[sample.timestamp - BASE_MS] += 1
            through = self.contiguous.get(probe, 0)
            while copies[through + 1]:
                through += 1
            self.contiguous[probe] = through


@contextlib.asynccontextmanager
async def serving(store: SlowStore) -> AsyncIterator[SlowStore]:
    app = web.Application(client_max_size=64 * 2**20)
    app.router.add_post("/api/v1/write", store.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    store.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/api/v1/write"
    try:
        yield store
    finally:
        await runner.cleanup()


class Probe:
    """A simulated probe: measures a round every ROUND_SECONDS into its spool (here a count),
    streams the spool in batches as fast as the stream takes them (as the probe's uplink does:
    HTTP/2 flow control is its only window), and checks each Ack against what the store has."""

    def __init__(self, index: int, store: SlowStore) -> None:
        self.id = f"p{index:03d}"
        self.store = store
        self.made = 0  # results measured (seq 1..made)
        self.sent = 0  # results sent
        self.acked = 0  # acknowledged through this seq
        self.room = asyncio.Condition()  # notified when a round is made or an Ack comes
        self.overacked: list[tuple[int, int]] = []  # (acked through, the store's through)
        self.first_stored = asyncio.Event()

    def batch(self, first: int, last: int) -> bytes:
        results = []
        for seq in range(first, last + 1):
            n = (seq - 1) % CHECKS
            result = pb.Result(seq=seq, target=f"{n}.courier.push.apple.com", port=5223,
                               check="tls", group="push", via="direct", interval_seconds=30.0,
                               outcome=pb.OUTCOME_OK if n % 10 else pb.OUTCOME_TIMEOUT)  # fmt: skip
            result.started_at.FromMilliseconds(BASE_MS + seq)
            result.phases.dns, result.phases.connect = 0.001 * n, 0.02
            result.phases.tls, result.phases.total = 0.03, 0.06
            results.append(result)
        return pb.ProbeMessage(batch=pb.ResultBatch(results=results)).SerializeToString()

    async def measure(self, go_on: asyncio.Event) -> None:
        """A first round at once; the others from `go_on` on."""
        for round_ in range(ROUNDS):
            async with self.room:
                self.made += CHECKS
                self.room.notify_all()
            if round_ == 0:
                await go_on.wait()
            else:
                await asyncio.sleep(ROUND_SECONDS)  # the probe's schedule

    async def stream(self, target: str) -> None:
        hello = pb.ProbeMessage(hello=pb.Hello(
            probe_id=self.id, site="slow", config_digest="0", software_version="test",
        )).SerializeToString()  # fmt: skip
        # One TCP connection per probe, as in a fleet.
        options = (("grpc.use_local_subchannel_pool", 1),)
        async with grpc.aio.insecure_channel(target, options=options) as channel:
            call = channel.stream_stream(METHOD, request_serializer=None,
                                         response_deserializer=None)()  # fmt: skip
            await call.write(hello)
            assert pb.CollectorMessage.FromString(await call.read()).HasField("welcome")
            reader = asyncio.create_task(self._read_acks(call))
            try:
                while self.sent < ROUNDS * CHECKS:
                    async with self.room:
                        await self.room.wait_for(lambda: self.made > self.sent)
                        first, last = self.sent + 1, min(self.made, self.sent + CHECKS)
                        self.sent = last
                    await call.write(self.batch(first, last))
                await reader
            finally:
                reader.cancel()
                call.cancel()

    async def _read_acks(self, call: grpc.aio.StreamStreamCall) -> None:
        while self.acked < ROUNDS * CHECKS:
            message = await call.read()
            assert message is not grpc.aio.EOF, f"{self.id}: the collector ended the stream"
            through = pb.CollectorMessage.FromString(message).ack.through_seq
            stored = self.store.contiguous.get(self.id, 0)
            if through > stored:
                self.overacked.append((through, stored))
            async with self.room:
                self.acked = max(self.acked, through)
                self.room.notify_all()
            if self.acked >= CHECKS:
                self.first_stored.set()


def rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)[1]) * 1024


async def remote_write(url: str) -> dict[str, float]:
    """The courierwatch_remote_write_* samples of a scrape, by name (less the prefix) with
    labels and bucket: only those lines are parsed (the state's families are many)."""
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        text = await response.text()
    ours = "\n".join(line for line in text.splitlines()
                     if line.startswith(("courierwatch_remote_write_",
                                         "# TYPE courierwatch_remote_write_")))  # fmt: skip
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(ours + "\n"):
        for sample in family.samples:
            labels = sample.labels
            short = sample.name.removeprefix("courierwatch_remote_write_")
            named = ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "le")
            found[short + (f"{{{named}}}" if named else "")
                  + (f"[{labels['le']}]" if "le" in labels else "")] = sample.value  # fmt: skip
    return found


async def test_a_slow_store_holds_the_collector_to_its_bound_and_the_probes_spool(tmp_path):
    store = SlowStore()
    async with serving(store):
        config = tmp_path / "collector.yaml"
        config.write_text(yaml.safe_dump({
            "listen": {"grpc": "127.0.0.1:0", "http": "127.0.0.1:0"},
            "transport": {"insecure": True},
            "state_dir": str(tmp_path / "state"),
            "remote_write": {"url": store.url, "max_queued_samples": MAX_QUEUED,
                             "max_request_samples": MAX_REQUEST},
        }))  # fmt: skip
        async with courierwatch("collector", "--config", str(config)) as collector:
            ready = await line_starting(collector, "collector ready:", 15)
            target = ready.split("grpc=")[1].split()[0]
            metrics = ready.split("metrics=")[1]
            probes = [Probe(n, store) for n in range(PROBES)]
            slow_phase = asyncio.Event()
            measuring = [asyncio.create_task(p.measure(slow_phase)) for p in probes]
            streams = [asyncio.create_task(p.stream(target)) for p in probes]
            try:
                async with asyncio.timeout(20):
                    await asyncio.gather(*(p.first_stored.wait() for p in probes))
                # Every probe connected and its checks known: what the collector holds anyway.
                baseline = rss(collector.pid)
                store.refusals, store.slow = list(REFUSALS), True
                slow_phase.set()
                depths, peak = [], baseline
                async with asyncio.timeout(30):
                    while not all(task.done() for task in measuring):  # polls the collector
                        depths.append((await remote_write(metrics))["queue_samples"])
                        peak = max(peak, rss(collector.pid))
                        await asyncio.wait(measuring, timeout=0.2)
                held = sum(p.made - p.acked for p in probes)
                slow = await remote_write(metrics)
                store.slow = False
                async with asyncio.timeout(30):
                    await asyncio.gather(*streams)
                drained = await remote_write(metrics)
            finally:
                for task in (*measuring, *streams):
                    task.cancel()
                await asyncio.gather(*measuring, *streams, return_exceptions=True)

    samples_per_result = 7  # success, outcome, last run, four phases
    # The probes held, unacknowledged, far more than the collector may.
    assert held * samples_per_result > 20 * MAX_QUEUED, held
    # The collector's memory stayed within its bound; its queue too, and it was full.
    allowance = (2 * MAX_QUEUED * BYTES_PER_QUEUED_SAMPLE + PROBES * PER_STREAM_ALLOWANCE
                 + FIXED_ALLOWANCE)
    assert peak - baseline <= allowance, (peak - baseline, allowance)
    assert slow["queue_limit_samples"] == MAX_QUEUED
    assert max(depths) <= MAX_QUEUED
    assert max(depths) >= MAX_QUEUED - CHECKS * samples_per_result, depths
    # Refusals retried, by reason; every answer's duration observed, the slow ones slow.
    assert slow["retries_total{reason=503}"] == 3
    assert slow["retries_total{reason=429}"] == 2
    assert store.slow_answers >= 3
    assert drained["request_duration_seconds_sum"] >= STORE_DELAY * store.slow_answers
    assert drained["request_duration_seconds_count"] == sum(store.answered.values())
    assert drained["request_duration_seconds_bucket[+Inf]"] == sum(store.answered.values())
    assert "failures_total" not in " ".join(drained)  # nothing refused for good
    # No Ack ahead of the store, ever; and in the end every result of every probe, once.
    assert [(p.id, p.overacked) for p in probes if p.overacked] == []
    assert all(p.acked == ROUNDS * CHECKS for p in probes)
    expected = Counter({seq: 1 for seq in range(1, ROUNDS * CHECKS + 1)})
    assert {p.id: store.stored.get(p.id) == expected for p in probes} == {
        p.id: True for p in probes
    }
    assert drained["queue_samples"] == 0
    assert drained["samples_sent_total"] == PROBES * ROUNDS * CHECKS * samples_per_result
