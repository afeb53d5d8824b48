"""Remote-write mode end to end, with real processes: a probe streams to a collector that writes
every result to a real store (VictoriaMetrics, then Prometheus); the store is stopped for a
while and started again. Meanwhile the probe keeps measuring and spooling, and nothing is
acknowledged (its spool only grows); afterwards every result the probe made is in the store
once, at its own time, and the probe's spool is empty.

The helpers here (mTLS material, a store on a port of our choosing, a collector and probe
config) serve test_ha.py too."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import trustme
import yaml
from polling import until
from promserver import _ready, dashboard_queries, free_port, require, stop, store_only

from courierwatch.collector.exposition import COLLECTOR, FAMILIES
from fakeapple import COURIER_ALPN, COURIER_SNI
from fakeapple.probing import config_document
from processes import courierwatch, line_starting, scrape

pytestmark = [pytest.mark.integration]

SITE = "rw-site"
WINDOW = "10m"  # every query looks this far back: the whole test, not more


# --- mTLS material ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Fleet:
    ca: str
    collector_cert: str
    collector_key: str
    probes: dict[str, tuple[str, str]]  # probe id -> (certificate, key)


def make_fleet(tmp: Path, probe_ids: list[str], site: str = SITE) -> Fleet:
    """A fleet CA, the collectors' certificate (for 127.0.0.1, what the probes dial: a
    collector, or the balancer in front of several) and one certificate per probe."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(tmp / "fleet-ca.pem")

    def leaf(name: str, cert: trustme.LeafCert) -> tuple[str, str]:
        cert.cert_chain_pems[0].write_to_path(tmp / f"{name}.pem")
        cert.private_key_pem.write_to_path(tmp / f"{name}.key")
        return str(tmp / f"{name}.pem"), str(tmp / f"{name}.key")

    collector = leaf("collector", ca.issue_cert("127.0.0.1"))
    probes = {pid: leaf(pid, ca.issue_cert(f"{pid}.probe", common_name=pid,
                                           organization_unit_name=site))
              for pid in probe_ids}  # fmt: skip
    return Fleet(str(tmp / "fleet-ca.pem"), *collector, probes)


def write_yaml(path: Path, document: dict) -> str:
    path.write_text(yaml.safe_dump(document))
    return str(path)


# --- A store on a fixed port, stopped and started again ------------------------------------


class StoreProcess:
    """VictoriaMetrics or Prometheus as a remote-write receiver on one port for the whole
    test, so that it can be stopped and started again (with its data) behind the same URL.
    Flags as tests/test_remotewrite_stores.py explains them."""

    def __init__(self, kind: str, tmp: Path) -> None:
        self.kind, self._tmp = kind, tmp
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: asyncio.subprocess.Process | None = None

    @property
    def write_url(self) -> str:
        return self.url + "/api/v1/write"

    def _argv(self) -> list[str]:
        listen = f"127.0.0.1:{self.port}"
        if self.kind == "victoria-metrics":
            return [require("victoria-metrics"), f"-httpListenAddr={listen}",
                    f"-storageDataPath={self._tmp / 'vm-data'}", "-retentionPeriod=1y",
                    "-dedup.minScrapeInterval=1ms"]  # fmt: skip
        config = self._tmp / "prometheus.yml"
        config.write_text(yaml.safe_dump({"storage": {"tsdb": {"out_of_order_time_window": "3d"}}}))
        return [require("prometheus"), f"--config.file={config}",
                f"--storage.tsdb.path={self._tmp / 'prom-data'}", f"--web.listen-address={listen}",
                "--web.enable-remote-write-receiver"]  # fmt: skip

    async def start(self) -> None:
        with (self._tmp / f"{self.kind}.log").open("ab") as sink:
            self._process = await asyncio.create_subprocess_exec(
                *self._argv(), stdout=sink, stderr=sink, stdin=asyncio.subprocess.DEVNULL
            )
        if not await _ready(self.url + "/-/ready", self._process):
            log = (self._tmp / f"{self.kind}.log").read_text()[-3000:]
            raise AssertionError(f"{self.kind} did not start on {self.port}:\n{log}")

    async def stop(self) -> None:
        if self._process is not None:
            await stop(self._process)
            self._process = None

    async def query(self, expr: str, kind: str = "query") -> list[dict]:
        """An instant query now, after the store made every write searchable."""
        async with aiohttp.ClientSession() as session:
            if self.kind == "victoria-metrics":
                async with session.get(self.url + "/internal/force_flush") as response:
                    assert response.status == 200
            params = {"query": expr, "time": str(time.time()), "nocache": "1"}
            async with session.get(f"{self.url}/api/v1/{kind}", params=params) as response:
                answer = await response.json()
        assert answer["status"] == "success", answer
        return answer["data"]["result"]


@contextlib.asynccontextmanager
async def running_store(kind: str, tmp: Path) -> AsyncIterator[StoreProcess]:
    store = StoreProcess(kind, tmp)
    await store.start()
    try:
        yield store
    finally:
        await store.stop()


# --- Collector and probe -------------------------------------------------------------------


def collector_config(tmp: Path, name: str, fleet: Fleet, store: StoreProcess,
                     host: str = "127.0.0.1", grpc: int = 0, http: int = 0) -> str:  # fmt: skip
    return write_yaml(tmp / f"{name}.yaml", {
        "listen": {"grpc": f"{host}:{grpc}", "http": f"{host}:{http}"},
        "state_dir": str(tmp / f"{name}-state"),
        "transport": {"ca": fleet.ca, "cert": fleet.collector_cert, "key": fleet.collector_key},
        "remote_write": {"url": store.write_url, "max_request_samples": 2000},
    })  # fmt: skip


@contextlib.asynccontextmanager
async def collector_process(config: str) -> AsyncIterator[tuple[asyncio.subprocess.Process, str,
                                                                str]]:  # fmt: skip
    """The collector, its gRPC address and its base HTTP URL once it is ready."""
    async with courierwatch("collector", "--config", config) as process:
        ready = await line_starting(process, "collector ready:", 15)
        grpc_address = ready.split("grpc=")[1].split()[0]
        yield process, grpc_address, ready.split("metrics=")[1].removesuffix("/metrics")


def probe_config(tmp: Path, apple, fleet: Fleet, probe_id: str, collector: str | list[str],
                 **extra: object) -> str:  # fmt: skip
    """Four checks a second: a courier (with its POP), TLS, HTTP, and one that fails.
    `collector`: one, or the failover list; `extra`: more top-level keys."""
    fast = {"interval": "1s", "timeout": "0.8s"}
    targets = [
        {"host": COURIER_SNI, "port": apple.courier_port, "check": "courier", "group": "push",
         "numbers": [1, 2], "alpn": [COURIER_ALPN]},
        {"host": "gdmf.apple.com", "port": apple.https_port, "check": "tls",
         "group": "device_management"},
        {"host": "gdmf.apple.com", "port": apple.https_port, "check": "http",
         "group": "device_management"},
        {"host": "gdmf.apple.com", "port": apple.closed_port, "check": "tcp"},
    ]  # fmt: skip
    cert, key = fleet.probes[probe_id]
    return write_yaml(tmp / f"{probe_id}.yaml", config_document(
        apple, [{**fast, **t} for t in targets], site=SITE, probe_id=probe_id,
        collectors=[collector] if isinstance(collector, str) else collector,
        transport={"ca": fleet.ca, "cert": cert, "key": key},
        spool={"path": str(tmp / f"{probe_id}-spool.sqlite")}, **extra,
    ))  # fmt: skip


def spool(tmp: Path, probe_id: str) -> tuple[int, int, int]:
    """What the probe's spool holds: (lowest seq, rows, the last seq it ever made)."""
    uri = f"file:{tmp / f'{probe_id}-spool.sqlite'}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
        low, rows, high = db.execute("SELECT MIN(seq), COUNT(*), MAX(seq) FROM results").fetchone()
        made = dict(db.execute("SELECT name, value FROM meta").fetchall()).get("last_seq", 0)
    return low or 0, rows, max(made, high or 0)


async def drain_and_stop(tmp: Path, probe_id: str,
                         probe: asyncio.subprocess.Process) -> tuple[int, int]:  # fmt: skip
    """Once the probe's spool drained, stops it (it waits for its last acks): what its spool
    holds then, and how many results it made."""

    async def drained() -> bool:
        return spool(tmp, probe_id)[1] < 4  # what was just measured, no more

    await until("the spool drained into the store", 30, drained)
    probe.send_signal(signal.SIGTERM)  # stop measuring, wait for the last acks
    assert await asyncio.wait_for(probe.wait(), 15) == 0
    _, left, made = spool(tmp, probe_id)
    return left, made


# --- What the store holds ------------------------------------------------------------------

CHECK_LABELS = ("site", "probe", "target", "port", "check")
# What the collector writes (the checks', results' and probes' families), not scraped.
WRITTEN = frozenset(family.name for family in FAMILIES if family.source is not COLLECTOR)


async def stored_results(store: StoreProcess) -> dict[tuple[str, ...], list[int]]:
    """Per check (CHECK_LABELS), the timestamps (ms) of its outcome samples, sorted: one per
    result. Checked on the way: every result's success and last-run samples are there at the
    same times, and its last-run value is its own timestamp."""
    found: dict[str, dict[tuple[str, ...], list[tuple[int, float]]]] = {}
    for name in ("courierwatch_check_outcome", "courierwatch_check_success",
                 "courierwatch_check_last_run_timestamp_seconds"):  # fmt: skip
        per_check: dict[tuple[str, ...], list[tuple[int, float]]] = {}
        for series in await store.query(f"{name}[{WINDOW}]"):
            key = tuple(series["metric"][label] for label in CHECK_LABELS)
            per_check.setdefault(key, []).extend(
                (round(float(t) * 1000), float(v)) for t, v in series["values"]
            )
        found[name] = {key: sorted(samples) for key, samples in per_check.items()}
    outcomes = {key: [t for t, _ in samples]
                for key, samples in found["courierwatch_check_outcome"].items()}  # fmt: skip
    for key, times in outcomes.items():
        assert len(set(times)) == len(times), f"{key}: two outcomes of one result"
        assert [t for t, _ in found["courierwatch_check_success"][key]] == times, key
        last_run = found["courierwatch_check_last_run_timestamp_seconds"][key]
        assert [t for t, _ in last_run] == times, key
        # Its own time: the sample's millisecond is its start's, rounded down (the value
        # is stored to ~15 digits: a start at .9999995 s may read back as the next ms).
        late = [(t, value) for t, value in last_run if not -0.01 < value * 1000 - t < 1.01]
        assert late == [], key
    return outcomes


async def status_probes(url: str) -> dict[str, dict]:
    """The probes on a collector's /api/status, by probe id (remote-write mode has no probe or
    check family on /metrics: what applied results a collector counts is said there)."""
    async with aiohttp.ClientSession() as session, session.get(url + "/api/status") as response:
        assert response.status == 200
        status = await response.json()
    return {probe["probe"]: probe for site in status["sites"] for probe in site["probes"]}


# The written families this test's probe makes (no DNS or NTP check), which dashboard
# queries read from the store alone (no recording rule, no collector state).
PANEL_FAMILIES = {"courierwatch_check_success", "courierwatch_check_duration_seconds",
                  "courierwatch_check_outcome", "courierwatch_tls_issuer_info"}  # fmt: skip


def written_panels(probe_id: str) -> list[str]:
    """The shipped dashboards' queries that read only PANEL_FAMILIES, for this probe."""
    values = {"site": SITE, "probe": probe_id, "pop": ".*", "group": ".*", "target": ".*",
              "check": ".*"}  # fmt: skip
    # This store evaluates no rules: each query as it reads the written series themselves.
    queries = {store_only(q) for _, q in dashboard_queries(**values)}
    return sorted(q for q in queries
                  if set(re.findall(r"[\w:]*courierwatch_[\w:]*", q)) <= PANEL_FAMILIES
                  and "courierwatch_" in q
                  and not re.search(r"\bALERTS\b|check=\"dns\"", q))  # fmt: skip


async def metric(url: str, name: str) -> float:
    """The sum of a family's samples on a collector's /metrics."""
    return sum(v for (n, _), v in (await scrape(url + "/metrics")).items() if n == name)


# --- The test ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["victoria-metrics", "prometheus"])
async def test_an_outage_of_the_store_is_replayed_into_it_exactly_once(kind, tmp_path, apple):
    probe_id = "pi-rw"
    fleet = make_fleet(tmp_path, [probe_id])
    async with (
        running_store(kind, tmp_path) as store,
        collector_process(collector_config(tmp_path, "collector", fleet, store)) as (
            _, grpc_address, url),
        courierwatch("probe", "--config",
                     probe_config(tmp_path, apple, fleet, probe_id, grpc_address)) as probe,
    ):  # fmt: skip

        async def stored_some() -> bool:
            return bool(await store.query("courierwatch_check_outcome"))

        await until("the store has results", 20, stored_some)

        # The store goes away; the probe keeps measuring, the collector holds and retries.
        await store.stop()
        outage_from = time.time() * 1000

        async def retrying() -> bool:
            return await metric(url, "courierwatch_remote_write_retries_total") > 0

        await until("the collector retries", 10, retrying)
        low, rows, _ = spool(tmp_path, probe_id)  # any ack under way has landed by now

        async def held() -> bool:
            now_low, now_rows, _ = spool(tmp_path, probe_id)
            assert (now_low, now_rows) >= (low, rows) and (now_low == low or not rows), (
                "the probe deleted results: something was acknowledged"
            )
            return now_rows >= rows + 12

        await until("results spooled and held through the outage", 20, held)
        assert await metric(url, "courierwatch_remote_write_queue_samples") > 0
        outage_to = time.time() * 1000
        _, unacked, _ = spool(tmp_path, probe_id)
        await store.start()
        left, made = await drain_and_stop(tmp_path, probe_id, probe)
        assert left == 0
        applied = (await status_probes(url))[probe_id]["applied"]
        scraped = await scrape(url + "/metrics")
        stored = await stored_results(store)
        assert await metric(url, "courierwatch_remote_write_failures_total") == 0
        # The dashboards' panels on the written series have data, straight from the store.
        panels = written_panels(probe_id)
        assert len(panels) >= 3
        assert [q for q in panels if not await store.query(q)] == []

    # Every result the probe made, once: as many as the probe numbered, as many as the
    # collector applied (each check's outcome samples at distinct times: stored_results).
    assert sum(len(times) for times in stored.values()) == made
    assert applied == made
    # The collector's /metrics has its own families only: the written ones are stored once.
    assert {name.removesuffix("_total") for name, _ in scraped} & WRITTEN == set()
    assert unacked >= 12
    # Those of the outage are there at their own time, every check's.
    for key, times in stored.items():
        assert sum(outage_from <= t <= outage_to for t in times) >= 2, key
