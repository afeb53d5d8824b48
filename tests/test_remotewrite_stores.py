"""Remote write into two real stores, Debian's Prometheus 2.42 and VictoriaMetrics single-node,
each started here on a free loopback port: a probe outage delivered late, all at once (as a
probe's spool replays it), then written again (a replay, or a second collector); afterwards the
store holds every sample of every result at the result's own timestamp, exactly once, with its
value, and count_over_time() counts the results.

What each store must be told to keep late samples, and each replay's samples once:

- Prometheus (2.39 and later; 2.42 here): `storage: tsdb: out_of_order_time_window:` in the
  config file, with `--web.enable-remote-write-receiver`. Without it, a sample older than the
  head's newest minus an hour is refused as "out of bounds", and an older sample of a series
  that has a newer one as "out of order" (400: counted and logged, never retried); with it, a
  sample older than the window is refused as "too old sample" (a 500 in 2.42, prometheus#13334:
  the writer reads it as a refusal, not as a failure to retry). The window
  must cover the oldest result a collector can still receive: the probe's spool.max_age (48 h
  by default; older results are dropped by the probe) plus how long a batch may wait in the
  collector's queue while the store is down: 50 h with the defaults; the test uses 3 d.
  `--storage.tsdb.retention.time` must be longer still. Identical samples (same series,
  timestamp and value) are stored once; the same timestamp with another value is refused.
- VictoriaMetrics single-node: late samples are accepted anywhere inside -retentionPeriod (and
  up to 2 days ahead), no window to set. It keeps every copy of a sample unless
  `-dedup.minScrapeInterval` is set: 1ms keeps one sample per series and millisecond, which is
  what makes a replay or a second collector idempotent. Its response cache is reset when a
  sample older than -search.cacheTimestampOffset (5m) arrives, so a replay shows at once.
- VictoriaMetrics cluster: the same `-dedup.minScrapeInterval=1ms` on every vmstorage and
  vmselect (and vminsert's -replicationFactor needs it anyway); vmselect does not see inserts,
  so after a backfill its cache needs /internal/resetRollupResultCache, or
  `-search.cacheTimestampOffset` at least the spool's max age. Write to vminsert's
  /insert/<tenant>/prometheus/api/v1/write.
- Grafana Mimir: `-ingester.out-of-order-time-window` (per tenant: out_of_order_time_window),
  0 by default, set it to the same 50 h; the tenant in X-Scope-OrgID (RemoteWriter headers).
  Identical samples are deduplicated; a refused sample is a 400
  err-mimir-sample-out-of-order / -sample-timestamp-too-old / -sample-duplicate-timestamp.
- Thanos Receive: `--tsdb.out-of-order.time-window=50h` (0 by default, experimental), and
  `--compact.enable-vertical-compaction` on the compactor for the overlapping blocks it makes;
  the tenant in THANOS-TENANT.
"""

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import yaml
from promserver import _daemon, require
from test_remotewrite import decode, result

from courierwatch.collector.remote.encode import Encoder
from courierwatch.collector.remote.send import Rejection, RemoteWriter
from courierwatch.v1 import courierwatch_pb2 as pb

pytestmark = [pytest.mark.integration]

OUT_OF_ORDER_WINDOW = "3d"  # the spool's 48 h, and then some: see above
OUTAGE = (60 * 60, 5 * 60)  # from an hour ago to five minutes ago
EVERY = 30  # seconds between two runs of a check
PROBES = (("ams", "pi1"), ("ams", "pi2"), ("lhr", "pi1"))


@dataclass(frozen=True)
class Store:
    write: str  # the remote-write URL
    api: str  # the base URL of its Prometheus query API
    flush: str | None = None  # what to GET before a query so that it sees every write
    # Relative error of a value read back. VictoriaMetrics stores values as decimals, about
    # 15 significant digits (1796170416.633313 reads back 1796170416.6333125): exact enough
    # for seconds and timestamps; Prometheus keeps the float64 itself.
    precision: float = 0.0


@contextlib.asynccontextmanager
async def prometheus_store(tmp: Path, window: str = OUT_OF_ORDER_WINDOW):
    """Prometheus as a remote-write receiver (its head is searchable as soon as written)."""
    binary = require("prometheus")
    config = tmp / "prometheus.yml"
    config.write_text(yaml.safe_dump({"storage": {"tsdb": {"out_of_order_time_window": window}}}))

    def argv(port: int) -> list[str]:
        return [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}", "--web.enable-remote-write-receiver",
                "--storage.tsdb.retention.time=10d"]  # fmt: skip

    async with _daemon("prometheus", argv, tmp) as url:
        yield Store(url + "/api/v1/write", url)


@contextlib.asynccontextmanager
async def victoria_metrics_store(tmp: Path):
    binary = require("victoria-metrics")

    def argv(port: int) -> list[str]:
        return [binary, f"-httpListenAddr=127.0.0.1:{port}",
                f"-storageDataPath={tmp / 'vm-data'}", "-retentionPeriod=1y",
                "-dedup.minScrapeInterval=1ms"]  # fmt: skip

    async with _daemon("victoria-metrics", argv, tmp) as url:
        yield Store(url + "/api/v1/write", url, flush=url + "/internal/force_flush",
                    precision=1e-14)  # fmt: skip


STORES = {"prometheus": prometheus_store, "victoria-metrics": victoria_metrics_store}


def outage(now: float) -> dict[tuple[str, str], list[pb.Result]]:
    """Per probe, in sequence order, the results of four checks every EVERY seconds over
    OUTAGE: a courier (working, with its POP), a TLS check (phases, expiry, issuer), an NTP
    check (offset), an HTTP check that fails."""
    runs: dict[tuple[str, str], list[pb.Result]] = {}
    for n, probe in enumerate(PROBES):
        results = runs[probe] = []
        start, end = now - OUTAGE[0], now - OUTAGE[1]
        at = start + n * 0.001 + 0.123456
        while at <= end:
            seq = len(results)
            courier = result(seq + 1, at=at, pop="eur-benelux", via="direct")
            courier.phases.connect, courier.phases.total = 0.02 + n / 1000, 0.05
            tls = result(seq + 2, "gateway.push.apple.com", 443, "tls", "push", at=at + 1.5)
            tls.phases.dns, tls.phases.connect, tls.phases.tls = 0.001 * seq, 0.0, 0.04
            tls.tls.not_after.FromSeconds(1_900_000_000)
            tls.tls.issuer, tls.tls.verified_by = "CN=Apple Public Server RSA CA 12", "expected"
            ntp = result(seq + 3, "time.apple.com", 123, "ntp", "ntp", at=at + 2.25)
            ntp.ntp.offset_seconds = -0.000123 * (seq % 7)
            http = result(seq + 4, "gdmf.apple.com", 443, "http", "device_management",
                          pb.OUTCOME_TIMEOUT, at=at + 3.999999)  # fmt: skip
            http.phases.dns = 0.002
            results += [courier, tls, ntp, http]
            at += EVERY
    return runs


async def replay(url: str, runs: dict[tuple[str, str], list[pb.Result]], batch: int,
                 concurrency: int) -> None:  # fmt: skip
    """Writes every probe's results in batches of `batch`, as many streams would, and waits
    until the store has them all (a fresh writer: a collector of its own)."""
    async with RemoteWriter(url, concurrency=concurrency, max_request_samples=2000) as writer:

        async def stream(site: str, probe_id: str, results: list[pb.Result]) -> list:
            deliveries = [await writer.write(site, probe_id, results[i : i + batch])
                          for i in range(0, len(results), batch)]  # fmt: skip
            return [await delivery for delivery in deliveries]

        outcomes = await asyncio.gather(*(stream(*probe, results)
                                          for probe, results in runs.items()))  # fmt: skip
    assert {outcome for outcomes_ in outcomes for outcome in outcomes_} == {None}
    assert writer.telemetry.failures == {}


async def query(store: Store, expr: str, at: float) -> dict:
    """The result of an instant query at `at`, after the store made every write searchable."""
    async with aiohttp.ClientSession() as session:
        if store.flush is not None:
            async with session.get(store.flush) as response:
                assert response.status == 200
        params = {"query": expr, "time": str(at), "nocache": "1"}  # nocache: VictoriaMetrics'
        async with session.get(store.api + "/api/v1/query", params=params) as response:
            answer = await response.json()
    assert answer["status"] == "success", answer
    return answer["data"]


async def stored_samples(store: Store, at: float) -> Counter:
    """(labels, timestamp ms, value) of every courierwatch sample the store holds in the two
    hours before `at`, counted."""
    answer = {"data": await query(store, '{__name__=~"courierwatch_.+"}[2h]', at)}
    assert answer["data"]["resultType"] == "matrix"
    found: Counter = Counter()
    for series in answer["data"]["result"]:
        labels = frozenset(series["metric"].items())
        for timestamp, value in series["values"]:
            found[(labels, round(float(timestamp) * 1000), float(value))] += 1
    return found


async def counts(store: Store, at: float) -> dict[tuple[str, str, str], float]:
    """Results per site, probe and check kind, counted from the outcome samples."""
    data = await query(
        store, "sum by (site, probe, check) (count_over_time(courierwatch_check_outcome[2h]))", at
    )
    return {(s["metric"]["site"], s["metric"]["probe"], s["metric"]["check"]): float(s["value"][1])
            for s in data["result"]}  # fmt: skip


@pytest.mark.parametrize("store", sorted(STORES))
async def test_an_outage_replayed_twice_is_stored_once_at_its_own_time(store, tmp_path):
    now = time.time()
    runs = outage(now)
    expected: Counter = Counter()
    for (site, probe_id), results in runs.items():
        for labels, value, timestamp in decode(Encoder().encode(site, probe_id, results)[0]):
            expected[(frozenset(labels.items()), timestamp, value)] += 1
    assert set(expected.values()) == {1}  # no two samples of a series at one time
    async with STORES[store](tmp_path) as running:
        await replay(running.write, runs, batch=100, concurrency=1)  # the probes' spools, late
        # A replay cut into other batches, out of order across two requests in flight: a
        # second collector, or the first one after a restart.
        await replay(running.write, runs, batch=37, concurrency=2)
        stored = await stored_samples(running, now)
        per_check = await counts(running, now)
    # Every sample of every result once, at its result's time...
    assert Counter(key[:2] for key in stored.elements()) == Counter(key[:2] for key in expected)
    # ... with its value (to the store's precision).
    values = {(labels, timestamp): value for labels, timestamp, value in stored}
    assert values == pytest.approx(
        {(labels, timestamp): value for labels, timestamp, value in expected},
        rel=running.precision,
        abs=0.0,
    )
    results_per_check = Counter(
        (site, probe_id, r.check) for (site, probe_id), results in runs.items() for r in results
    )
    assert per_check == {key: float(n) for key, n in results_per_check.items()}


async def test_prometheus_refusal_of_too_old_samples_is_counted_and_not_retried(tmp_path):
    """Beyond its out-of-order window Prometheus refuses a sample; 2.42 says so with a 500
    "too old sample" (later ones with a 400, prometheus#13334): the writer gives the batch up
    as rejected rather than retrying it for ever, counts it, and the next batch is stored."""
    now = time.time()
    async with (
        prometheus_store(tmp_path, window="10m") as running,
        RemoteWriter(running.write) as writer,
    ):
        first, late = result(1, at=now - 60), result(3, at=now - 30)
        assert await (await writer.write("ams", "pi1", [first])) is None
        old = await writer.write("ams", "pi1", [result(2, at=now - 3 * 3600)])
        assert await old == Rejection(500, "too_old")
        assert await (await writer.write("ams", "pi1", [late])) is None
        stored = await stored_samples(running, now)
    assert writer.telemetry.retries == {}
    assert writer.telemetry.failures == {(500, "too_old"): 1}
    assert {timestamp for _, timestamp, _ in stored} == {
        first.started_at.ToMilliseconds(),
        late.started_at.ToMilliseconds(),
    }
