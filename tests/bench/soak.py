"""Soak: a probe with the full built-in catalog against a hostile fake Apple, streaming to a
real collector that 1,000 simulated probes connect to, stream small batches to and drop, for
--minutes; every --every seconds the RSS, open files and loop lag of the probe and the
collector, and the results applied per second. Prints one table row per sample, then per
process whether its RSS and open files stayed flat.

    python tests/bench/soak.py                 # 30 minutes
    python tests/bench/soak.py --quick         # 2 minutes
    python tests/bench/soak.py --minutes 10 --probes 1000

Needs root: it runs in network and PID namespaces of its own (`unshare --net --pid`), where
only its fakes exist, so the catalog's names can never reach this machine's resolver or the
Internet, and every process it started ends with it, even when it is killed. In there:

    fake Apple (a child: `soak.py fake`), addresses in 198.19.0.0/16 on the namespace's lo:
      198.19.53.1   ChainDNS (tests/fakeapple/hostile.py), the probe's only nameserver; every
                    catalog name answers, some with a CNAME loop, a 60-deep chain, 4,000 A
                    records, or TC set over UDP and silence over TCP
      198.19.1.N    one behaviour each, on every port the catalog dials (iptables DNAT in the
                    namespace sends them to the server's own port): healthy couriers, provider
                    API and web servers, and accept-and-hang, a handshake stalled midway,
                    random bytes (couriers' 5223 too), an HTTP banner instead of TLS,
                    slowloris, an endless chunked body, endless headers, a header line that
                    never ends, a refused port; three NTP servers (good, silent, garbage)
    collector       harness.Collector: insecure, 127.0.0.1, pinned to CPU 0
    probe           `python -m courierwatch probe`, every catalog group, its own spool
    load            loadgen.py processes, one per slice of --probes / --slices simulated
                    probes, each with --checks checks in one small batch every --pace
                    seconds. Every --lifetime / --slices seconds the next slice is dropped
                    (alternately "stop": streams cancelled, and SIGKILL: connections cut) and
                    started again with the other of two identity pools, so 2 x --probes
                    identities reconnect in turn and none is reused while its old stream may
                    still be open.

Sampled: VmRSS and /proc/PID/fd of probe and collector; CPU % over the sample; the probe's
loop lag as its Health reports it (`courierwatch_probe_loop_lag_seconds`: how late its latest
check started, waiting for a concurrency slot included); the collector's loop lag as the
slowest GET /healthz answered in the sample (one a second: a blocked loop answers late);
results applied per second (all, and the probe's) and streams up, from /metrics.

Verdict per process, on the samples after --warmup: the means of the first, middle and last
10 %. "flat": the last grew over the first by at most the tolerance, max(FLAT_MB, FLAT_SHARE of
the first) for RSS and max(FLAT_FDS, FLAT_SHARE) for open files; "grew, then levelled off": more
than that, but at most the tolerance since the middle; "GROWING" otherwise: growth that does not
flatten, to be explained (tracemalloc, py-spy) before it is called anything but a leak. For the
collector the files counted are those not held by a stream that is up (each stream is one
socket), so the churn's phase does not count.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import dns.exception
import dns.message
import dns.name
import harness
import probelab
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/: fakeapple, lab
from fakeapple import (
    COURIER_ALPN,
    COURIER_SNI,
    FakeNTP,
    HTTPServer,
    NtpMode,
    SilentServer,
    TestPKI,
    TLSServer,
    hostile,
)
from fakeapple.hostile import ChainDNS
from lab.apple import Names, catalog_names
from lab.children import stop_process

SELF = Path(__file__).resolve()
INSIDE = "COURIERWATCH_SOAK_NAMESPACE"  # set once re-run inside the namespaces
START_SECONDS = 90.0  # for any child to say it is ready
STOP_SECONDS = 20.0
SETUP_SECONDS = 300.0  # the whole run's deadline is this beyond --minutes
PR_SET_PDEATHSIG = 1
SITE, PROBE_ID, FLEET_SITE = "soak", "soak-probe", "soak-fleet"
DNS_ADDRESS = "198.19.53.1"
LAB_RANGE = "198.18.0.0/15"  # RFC 2544: the probe's apple.ranges, never routed
FLAT_MB, FLAT_FDS, FLAT_SHARE = 5.0, 5, 0.05
HEALTHZ_EVERY = 1.0  # seconds between two /healthz timings
SLICE_PROBES = 100  # simulated probes per loadgen process


# --- the fake Apple (the child process) --------------------------------------------------------

# What the web and provider names get, in turn (sorted names, cycled): 40 % healthy.
WEB_CYCLE = (
    "ok", "hang", "ok", "stall", "ok", "garbage", "deep", "slowloris", "ok", "endless-body",
    "loop", "banner", "ok", "endless-headers", "huge", "huge-header", "ok", "refused", "tc", "ok",
)  # fmt: skip
COURIER_CYCLE = ("ok-courier", "ok-courier", "garbage", "ok-courier", "stall", "hang", "refused")
NTP_CYCLE = ("ntp-ok", "ntp-silent", "ntp-garbage")
NTP_MODES = {"ntp-ok": NtpMode.ANSWER, "ntp-silent": NtpMode.SILENT, "ntp-garbage": NtpMode.GARBAGE}
# Every behaviour with an address of its own (loop, deep, huge and tc live in the DNS only).
TCP_BEHAVIOURS = (
    "ok-courier", "ok-provider", "ok-web", "hang", "stall", "garbage", "banner", "slowloris",
    "endless-body", "endless-headers", "huge-header", "refused", *NTP_CYCLE,
)  # fmt: skip
HUGE_ANSWER = 4_000  # A records: about 64 KB, over TCP only


def behaviour_address(key: str) -> str:
    return f"198.19.1.{TCP_BEHAVIOURS.index(key) + 1}"


def huge_addresses() -> Iterable[str]:
    """Addresses nobody holds in the namespace: dialling them is unreachable at once."""
    return (f"198.19.{200 + i // 256}.{i % 256}" for i in range(HUGE_ANSWER))


def run_root(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


def dnat(address: str, proto: str, to_port: int, port: int | None = None) -> None:
    """Connections to address (:port, or any port) reach address:to_port. OUTPUT, not
    PREROUTING: the clients are local."""
    match = ["--dport", str(port)] if port else []
    run_root("iptables", "-w", "5", "-t", "nat", "-A", "OUTPUT", "-d", address, "-p", proto,
             *match, "-j", "DNAT", "--to-destination", f"{address}:{to_port}")  # fmt: skip


def assign(names: Sequence[str], cycle: Sequence[str]) -> dict[str, str]:
    return {name: cycle[i % len(cycle)] for i, name in enumerate(sorted(names))}


async def serve_fake(directory: Path, max_seconds: float) -> None:
    """Start every server, load the zone, say where the DNS is (one JSON line), serve until
    stdin closes or max_seconds."""
    names = catalog_names()
    for key in TCP_BEHAVIOURS:
        run_root("ip", "addr", "add", f"{behaviour_address(key)}/32", "dev", "lo")
    run_root("ip", "addr", "add", f"{DNS_ADDRESS}/32", "dev", "lo")
    async with contextlib.AsyncExitStack() as stack:
        pki = stack.enter_context(TestPKI(directory))
        courier_cert = pki.issue(COURIER_SNI)
        every_cert = pki.issue(*names.provider, *names.web)

        def plain_and_tls(script: hostile.Script, pace: float = 0.0) -> dict[int | None, Any]:
            return {80: hostile.ScriptedHTTP(script, pace=pace),
                    None: hostile.ScriptedHTTP(script, pace=pace, cert=every_cert)}  # fmt: skip

        servers: dict[str, dict[int | None, Any]] = {
            "ok-courier": {None: TLSServer(courier_cert, [COURIER_ALPN])},
            "ok-provider": {None: TLSServer(every_cert, ["h2"])},
            "ok-web": {80: HTTPServer(None), None: HTTPServer(every_cert)},
            "hang": {None: SilentServer()},
            "stall": {None: hostile.StallingTLS()},
            "garbage": {None: hostile.Garbage.random_bytes()},
            "banner": {None: hostile.Garbage.http_banner()},
            "slowloris": plain_and_tls(hostile.slowloris(), hostile.SLOWLORIS_PACE),
            "endless-body": plain_and_tls(hostile.endless_body(hostile.Body.CHUNKED)),
            "endless-headers": plain_and_tls(hostile.endless_headers()),
            "huge-header": plain_and_tls(hostile.huge_header_line()),
        }
        for key, by_port in servers.items():
            address = behaviour_address(key)
            # Port-specific rules first: the first DNAT rule that matches wins.
            for port, server in sorted(by_port.items(), key=lambda kv: kv[0] is None):
                server.host = address
                await stack.enter_async_context(server)
                dnat(address, "tcp", server.port, port)
        for key in NTP_CYCLE:
            clock = FakeNTP(mode=NTP_MODES[key])
            clock.host = behaviour_address(key)
            await stack.enter_async_context(clock)
            dnat(clock.host, "udp", clock.port, 123)
        zone = await stack.enter_async_context(SoakDNS(DNS_ADDRESS))
        plan = fill_zone(zone, names)
        print(json.dumps({"dns_port": zone.port, "ca": str(pki.ca_pem_path), "plan": plan}),
              flush=True)  # fmt: skip
        loop = asyncio.get_running_loop()
        stdin = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stdin.read(), max_seconds)


class SoakDNS(ChainDNS):
    """ChainDNS, plus names answered with TC set over UDP and never over TCP."""

    def __init__(self, host: str) -> None:
        super().__init__(host)
        self._tc_only: set[dns.name.Name] = set()

    def tc_without_tcp(self, name: str) -> None:
        self.truncate(name)
        self._tc_only.add(dns.name.from_text(name))

    def answer(self, wire: bytes, transport: str = "udp") -> bytes | None:
        if transport == "tcp":
            with contextlib.suppress(dns.exception.DNSException, IndexError):
                if dns.message.from_wire(wire).question[0].name in self._tc_only:
                    return None  # the connection stays open, silent
        return super().answer(wire, transport)


def fill_zone(zone: SoakDNS, names: Names) -> dict[str, int]:
    """Every catalog name answered by its behaviour; how many names each behaviour got."""
    plan: Counter[str] = Counter()
    web = assign([*names.web, *names.provider], WEB_CYCLE)
    ok_of = dict.fromkeys(names.provider, "ok-provider")
    for name, key in web.items():
        if key == "ok":
            key = ok_of.get(name, "ok-web")
        plan[key] += 1
        if key == "deep":
            zone.add_deep_chain(name, behaviour_address(ok_of.get(name, "ok-web")))
        elif key == "loop":
            zone.add_loop(name, f"loop-a.{name}", f"loop-b.{name}")
        elif key == "huge":
            zone.add_a(name, *huge_addresses())
        elif key == "tc":
            zone.tc_without_tcp(name)
        else:
            zone.add_a(name, behaviour_address(key))
    for name, key in assign(names.ntp, NTP_CYCLE).items():
        zone.add_a(name, behaviour_address(key))
        plan[key] += 1
    for name in names.couriers:
        number = int(name.split("-", 1)[0])
        key = COURIER_CYCLE[number % len(COURIER_CYCLE)]
        # Apple's shape, one edge name per number so each can lead somewhere else.
        edge = f"eu-central-courier-{number}.push-apple.com.akadns.net"
        zone.courier_chain(number, "eu-central", behaviour_address(key), edge=edge)
        plan[f"courier {key}"] += 1
    for name in names.courier_hosts:
        zone.add_a(name, behaviour_address("ok-courier"))
    return dict(plan)


# --- children ----------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In a child before exec: SIGTERM when the driver dies (the PID namespace ends the rest)."""
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


async def spawn(argv: Sequence[str], log: Path, **options: Any) -> asyncio.subprocess.Process:
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            *argv, stdout=options.pop("stdout", out), stderr=out, preexec_fn=_die_with_parent,
            env={**os.environ, "PYTHONPATH": str(SELF.parent.parent)}, **options,
        )  # fmt: skip


async def stop(process: asyncio.subprocess.Process, *, kill: bool = False) -> None:
    await stop_process(process, STOP_SECONDS, kill=kill)


async def ready_line(process: asyncio.subprocess.Process, what: str, log: Path) -> str:
    assert process.stdout is not None
    async with asyncio.timeout(START_SECONDS):
        line = await process.stdout.readline()
    if not line:
        tail = (await asyncio.to_thread(log.read_text, errors="replace"))[-2000:]
        raise RuntimeError(f"the {what} exited before it was ready:\n{tail}")
    return line.decode().strip()


@dataclass(frozen=True, slots=True)
class Fake:
    process: asyncio.subprocess.Process
    dns_port: int
    ca: str
    plan: dict[str, int]


@contextlib.asynccontextmanager
async def fake_apple(work: Path, max_seconds: float) -> AsyncIterator[Fake]:
    log = work / "fake.log"
    argv = [
        sys.executable,
        str(SELF),
        "fake",
        f"--dir={work / 'pki'}",
        f"--max-seconds={max_seconds}",
    ]
    pipe = asyncio.subprocess.PIPE
    process = await spawn(argv, log, stdin=pipe, stdout=pipe)
    try:
        facts = json.loads(await ready_line(process, "fake Apple", log))
        yield Fake(process, facts["dns_port"], facts["ca"], facts["plan"])
    finally:
        if process.stdin is not None:
            process.stdin.close()
        await stop(process)


def probe_config(fake: Fake, collector: str, work: Path) -> dict[str, Any]:
    return {
        "site": SITE,
        "probe_id": PROBE_ID,
        "collectors": [collector],
        "transport": {"insecure": True},
        "resolver": {"nameservers": [DNS_ADDRESS], "port": fake.dns_port},
        "trust": {"anchors": [fake.ca], "system": False},
        "apple": {"ranges": [LAB_RANGE]},
        "families": ["ipv4"],
        "spool": {"path": str(work / "spool.sqlite")},
    }  # fmt: skip  (no catalog key: every group of the built-in catalog)


@contextlib.asynccontextmanager
async def probe(
    fake: Fake, collector: str, work: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    config = work / "probe.yaml"
    config.write_text(yaml.safe_dump(probe_config(fake, collector, work)))
    process = await spawn([sys.executable, "-m", "courierwatch", "probe", "--config",
                           str(config)], work / "probe.log")  # fmt: skip
    try:
        yield process
    finally:
        await stop(process)


# --- the simulated fleet -----------------------------------------------------------------------


@dataclass(slots=True)
class Slice:
    """One loadgen.py process's probes: `count` identities from `first` in pool 0 or 1."""

    index: int
    count: int
    process: asyncio.subprocess.Process | None = None
    generation: int = 0

    def first(self, probes: int) -> int:
        return (self.generation % 2) * probes + self.index * SLICE_PROBES


@dataclass(slots=True)
class Fleet:
    args: argparse.Namespace
    target: str
    work: Path
    slices: list[Slice] = field(default_factory=list)
    reconnects: int = 0  # streams dropped and opened again
    failed_starts: int = 0  # a slice that did not connect in time, retried at its next turn
    died: int = 0  # slices found dead when their turn came (the collector ended a stream)

    def __post_init__(self) -> None:
        probes = self.args.probes
        self.slices = [Slice(i, min(SLICE_PROBES, probes - i * SLICE_PROBES))
                       for i in range(math.ceil(probes / SLICE_PROBES))]  # fmt: skip

    async def start(self, piece: Slice) -> None:
        args = self.args
        log = self.work / f"loadgen-{piece.index}.log"
        piece.process = await spawn([
            sys.executable, str(SELF.parent / "loadgen.py"), f"--target={self.target}",
            f"--site={FLEET_SITE}", f"--first={piece.first(args.probes)}",
            f"--count={piece.count}", f"--checks={args.checks}", f"--batch={args.checks}",
            "--window=1", f"--interval={args.pace}", f"--max-seconds={args.deadline}",
            f"--cpus={','.join(map(str, sorted(harness.DRIVER_CPUS)))}",
        ], log, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)  # fmt: skip
        try:
            line = await ready_line(piece.process, f"load generator {piece.index}", log)
            if not line.startswith("connected"):
                raise RuntimeError(f"load generator {piece.index} said {line!r}")
        except (RuntimeError, TimeoutError) as error:
            self.failed_starts += 1
            lines = str(error).strip().splitlines() or [repr(error)]
            print(
                f"# {lines[0]} {lines[-1] if len(lines) > 1 else ''}", file=sys.stderr, flush=True
            )
            await stop(piece.process, kill=True)
            return
        assert piece.process.stdin is not None
        piece.process.stdin.write(b"go\n")

    async def drop(self, piece: Slice, *, kill: bool) -> None:
        process, piece.process = piece.process, None
        if process is None:
            return
        if process.returncode is not None:
            self.died += 1
        elif kill:
            await stop(process, kill=True)
        else:
            assert process.stdin is not None
            with contextlib.suppress(ConnectionError):
                process.stdin.write(b"stop\n")
            await stop_gently(process)

    async def run(self) -> None:
        """Start every slice, then recycle one every lifetime / slices seconds until cancelled
        (or the run's deadline); drop every slice on the way out."""
        try:
            await asyncio.gather(*(self.start(piece) for piece in self.slices))
            gap = self.args.lifetime / len(self.slices)
            for step in range(int(self.args.deadline / gap) + 1):
                await asyncio.sleep(gap)  # the churn's own pace, not a wait for anything
                piece = self.slices[step % len(self.slices)]
                await self.drop(piece, kill=step % 2 == 1)
                self.reconnects += piece.count
                piece.generation += 1
                await self.start(piece)
        finally:
            await asyncio.gather(*(self.drop(piece, kill=True) for piece in self.slices))


async def stop_gently(process: asyncio.subprocess.Process) -> None:
    """A load generator told "stop" closes its streams and exits; SIGKILL if it does not."""
    try:
        async with asyncio.timeout(STOP_SECONDS):
            await process.wait()
    except TimeoutError:
        await stop(process, kill=True)


# --- sampling ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Proc:
    rss: int
    fds: int
    cpu: float  # seconds so far


def proc(pid: int) -> Proc:
    used = probelab.usage(pid)
    return Proc(used.rss, sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir()), used.cpu)


@dataclass(frozen=True, slots=True)
class Sample:
    t: float  # seconds since the run began
    probe: Proc
    collector: Proc
    probe_cpu: float  # share of one core over the sample
    collector_cpu: float
    probe_lag: float
    healthz: float  # slowest /healthz in the sample, seconds
    scrape: float  # seconds our GET /metrics took (it shares the collector's loop)
    series: int  # on /metrics
    streams: int  # simulated probes up on /metrics
    applied_rate: float  # results/s applied, everyone
    probe_rate: float  # results/s applied, the probe's
    reconnects: int

    def cells(self) -> list[str]:
        mb = 2**20
        return [
            f"{self.t:.0f}", f"{self.probe.rss / mb:.1f}", f"{self.probe.fds}",
            f"{100 * self.probe_cpu:.0f}", f"{self.probe_lag:.3f}",
            f"{self.collector.rss / mb:.1f}", f"{self.collector.fds}",
            f"{100 * self.collector_cpu:.0f}", f"{1000 * self.healthz:.1f}",
            f"{self.scrape:.2f}", f"{self.series:,}",
            f"{self.streams:,}", f"{self.applied_rate:,.0f}", f"{self.probe_rate:.1f}",
            f"{self.reconnects:,}",
        ]  # fmt: skip


HEADERS = [
    "t s", "probe RSS MB", "probe fds", "probe CPU %", "probe lag s", "collector RSS MB",
    "collector fds", "collector CPU %", "healthz max ms", "scrape s", "series", "streams up",
    "results/s", "probe results/s", "reconnects",
]  # fmt: skip

_SERIES = re.compile(rb"^(\w+)\{([^}]*)\} (\S+)$", re.M)


@dataclass(frozen=True, slots=True)
class Metrics:
    applied: float = 0.0
    probe_applied: float = 0.0
    probe_lag: float = math.nan
    streams: int = 0


def read_metrics(body: bytes) -> Metrics:
    applied = probe_applied = 0.0
    lag, streams = math.nan, 0
    mine = f'probe="{PROBE_ID}"'.encode()
    fleet = f'site="{FLEET_SITE}"'.encode()
    for name, labels, value in _SERIES.findall(body):
        if name == b"courierwatch_probe_results_applied_total":
            applied += float(value)
            probe_applied += float(value) if mine in labels else 0.0
        elif name == b"courierwatch_probe_loop_lag_seconds" and mine in labels:
            lag = float(value)
        elif name == b"courierwatch_probe_up" and fleet in labels:
            streams += int(float(value))
    return Metrics(applied, probe_applied, lag, streams)


class HealthzTimer:
    """GET /healthz once a second; `take()` gives the slowest since the last take."""

    def __init__(self, url: str) -> None:
        self.url = url.rsplit("/", 1)[0] + "/healthz"
        self.slowest = 0.0

    async def run(self, session: aiohttp.ClientSession, until: float) -> None:
        while time.monotonic() < until:
            sent = time.monotonic()
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(self.url) as response:
                    await response.read()
            self.slowest = max(self.slowest, time.monotonic() - sent)
            await asyncio.sleep(max(0.0, sent + HEALTHZ_EVERY - time.monotonic()))

    def take(self) -> float:
        slowest, self.slowest = self.slowest, 0.0
        return slowest


async def sample(args: argparse.Namespace, pids: tuple[int, int], url: str, fleet: Fleet,
                 seconds: float) -> list[Sample]:  # fmt: skip
    """One Sample every args.every seconds for `seconds`, each also shown on stderr."""
    samples: list[Sample] = []
    timer = HealthzTimer(url)
    began = time.monotonic()
    async with harness.session() as session:
        healthz = asyncio.create_task(timer.run(session, began + seconds))
        before = [proc(pid) for pid in pids]
        metrics_before, then = read_metrics((await harness.scrape(session, url)).body), began
        try:
            for step in range(1, int(seconds / args.every) + 1):
                await asyncio.sleep(max(0.0, began + step * args.every - time.monotonic()))
                now = time.monotonic()
                procs = [proc(pid) for pid in pids]
                scraped = await harness.scrape(session, url)
                metrics = read_metrics(scraped.body)
                dt = now - then
                samples.append(Sample(
                    t=now - began, probe=procs[0], collector=procs[1],
                    probe_cpu=(procs[0].cpu - before[0].cpu) / dt,
                    collector_cpu=(procs[1].cpu - before[1].cpu) / dt,
                    probe_lag=metrics.probe_lag, healthz=timer.take(), scrape=scraped.seconds,
                    series=scraped.series, streams=metrics.streams,
                    applied_rate=(metrics.applied - metrics_before.applied) / dt,
                    probe_rate=(metrics.probe_applied - metrics_before.probe_applied) / dt,
                    reconnects=fleet.reconnects,
                ))  # fmt: skip
                print(" | ".join(samples[-1].cells()), file=sys.stderr, flush=True)
                before, metrics_before, then = procs, metrics, now
        finally:
            healthz.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await healthz
    return samples


# --- the verdict -------------------------------------------------------------------------------


def judge(first: float, middle: float, last: float, tolerance: float) -> str:
    """flat: last within tolerance of first; levelled off: it grew, but no more than the
    tolerance since the middle of the run; GROWING otherwise (a leak until shown otherwise)."""
    if last - first <= tolerance:
        return "flat"
    return "grew, then levelled off" if last - middle <= tolerance else "GROWING"


def verdict(name: str, samples: Sequence[Sample], warmup: float, streams_hold_fds: bool) -> str:
    """First, middle and last 10 % of the samples after the warm-up (see the docstring)."""
    kept = [s for s in samples if s.t > warmup] or list(samples)
    if not kept:
        return f"{name}: no samples"
    tenth = max(1, len(kept) // 10)
    centre = max(0, len(kept) // 2 - tenth // 2)
    first, middle, last = kept[:tenth], kept[centre : centre + tenth], kept[-tenth:]

    def of(s: Sample) -> Proc:
        return s.probe if name == "probe" else s.collector

    def files(s: Sample) -> int:
        return of(s).fds - (s.streams if streams_hold_fds else 0)

    def mb(window: Sequence[Sample]) -> float:
        return statistics.mean(of(s).rss for s in window) / 2**20

    def fds(window: Sequence[Sample]) -> float:
        return statistics.mean(files(s) for s in window)

    rss0, rss1 = mb(first), mb(last)
    fds0, fds1 = fds(first), fds(last)
    hours = (statistics.mean(s.t for s in last) - statistics.mean(s.t for s in first)) / 3600
    slope = (rss1 - rss0) / hours if hours else 0.0
    rss = judge(rss0, mb(middle), rss1, max(FLAT_MB, FLAT_SHARE * rss0))
    opened = judge(fds0, fds(middle), fds1, max(FLAT_FDS, FLAT_SHARE * fds0))
    what = "fds not held by a stream" if streams_hold_fds else "fds"
    return (
        f"{name}: RSS {rss0:.1f} -> {rss1:.1f} MB ({slope:+.1f} MB/hour) {rss}; "
        f"{what} {fds0:.0f} -> {fds1:.0f} ({fds1 - fds0:+.0f}) {opened} "
        f"(first {len(first)} vs last {len(last)} of {len(kept)} samples after {warmup:g} s)"
    )


def report(args: argparse.Namespace, fake: Fake, fleet: Fleet, samples: Sequence[Sample],
           took: float) -> str:  # fmt: skip
    lags = [s.probe_lag for s in samples if not math.isnan(s.probe_lag)]
    plan = ", ".join(f"{key} {n}" for key, n in sorted(fake.plan.items()))
    return "\n".join([
        f"# soak: {args.minutes:g} min, a sample every {args.every:g} s; "
        f"{harness.machine()}",
        f"# probe: full built-in catalog; catalog names by behaviour: {plan}",
        f"# fleet: {args.probes:,} simulated probes in {len(fleet.slices)} slices, "
        f"{args.checks} results every {args.pace:g} s each, a slice dropped and reconnected "
        f"every {args.lifetime / len(fleet.slices):g} s (stop / SIGKILL in turn); "
        f"{fleet.reconnects:,} reconnects, {fleet.failed_starts} failed starts, "
        f"{fleet.died} slices died",
        "",
        harness.table(HEADERS, [s.cells() for s in samples]),
        "",
        verdict("probe", samples, args.warmup, streams_hold_fds=False),
        verdict("collector", samples, args.warmup, streams_hold_fds=True),
        f"probe lag max {max(lags, default=math.nan):.3f} s; collector /healthz max "
        f"{1000 * max((s.healthz for s in samples), default=math.nan):.1f} ms; "
        f"tolerance: max({FLAT_MB:g} MB or {FLAT_FDS} fds, {100 * FLAT_SHARE:g} % of the "
        f"first 10 %), over the first 10 % (flat) or the middle 10 % (levelled off); "
        f"took {took:.0f} s",
    ])  # fmt: skip


# --- main --------------------------------------------------------------------------------------


async def soak(args: argparse.Namespace, work: Path) -> str:
    run_root("ip", "link", "set", "lo", "up")
    began = time.monotonic()
    seconds = args.minutes * 60
    async with (
        fake_apple(work, args.deadline) as fake,
        harness.running_collector() as collector,
        probe(fake, collector.grpc, work) as prober,
    ):
        fleet = Fleet(args, collector.grpc, work)
        churn = asyncio.create_task(fleet.run())
        try:
            pids = (prober.pid, collector.process.pid)
            samples = await sample(args, pids, collector.url, fleet, seconds)
        finally:
            churn.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await churn
        for process, what in ((prober, "probe"), (collector.process, "collector")):
            if process.returncode is not None:
                raise RuntimeError(f"the {what} exited ({process.returncode}): see {work}")
    return report(args, fake, fleet, samples, time.monotonic() - began)


async def inside(args: argparse.Namespace) -> None:
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    with tempfile.TemporaryDirectory(prefix="courierwatch-soak-") as tmp:
        work = Path(tmp)
        try:
            async with asyncio.timeout(args.deadline):
                print(await soak(args, work))
        except BaseException:
            await asyncio.to_thread(show_logs, work)
            raise


def show_logs(work: Path) -> None:
    """The tail of every child's log, on stderr: what a failed run needs to be understood."""
    for log in sorted(work.glob("*.log")):
        tail = log.read_text(errors="replace")[-1500:]
        if tail.strip():
            print(f"--- {log.name}\n{tail}", file=sys.stderr)


def reenter() -> None:
    """Become `unshare` running this script again in new network, PID and mount namespaces:
    only loopback and our fakes there, and every process ends when the driver (PID 1) does."""
    if os.geteuid() != 0:
        sys.exit("soak.py needs root: it runs in network and PID namespaces of its own")
    os.environ[INSIDE] = "1"
    unshare = ["unshare", "--net", "--pid", "--mount-proc", "--fork", "--kill-child=SIGTERM"]
    os.execvp("unshare", [*unshare, "--", sys.executable, str(SELF), *sys.argv[1:]])


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command")
    fake = sub.add_parser("fake", help="(internal) the fake Apple's process")
    fake.add_argument("--dir", type=Path, required=True)
    fake.add_argument("--max-seconds", type=float, required=True)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--quick", action="store_true", help="--minutes 2")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="--minutes 0.3 --every 3 --probes 200 (for the test suite)",
    )
    parser.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    parser.add_argument(
        "--warmup",
        type=float,
        help="seconds left out of the verdict [min(60, a quarter of the run)]",
    )
    parser.add_argument("--probes", type=int, default=1000, help="simulated probes")
    parser.add_argument("--checks", type=int, default=5, help="results per simulated batch")
    parser.add_argument(
        "--pace", type=float, default=5.0, help="seconds between a simulated probe's batches"
    )
    parser.add_argument(
        "--lifetime",
        type=float,
        default=60.0,
        help="seconds a slice of simulated probes stays connected",
    )
    args = parser.parse_args()
    if args.quick:
        args.minutes = 2.0
    if args.smoke:
        args.minutes, args.every, args.probes = 0.3, 3.0, 200
        args.lifetime = 6.0
    if args.command is None and not (0 < args.minutes <= 24 * 60 and args.every > 0
                                     and 0 < args.probes <= 10_000):  # fmt: skip
        parser.error("--minutes from 0 to a day, --every above 0, --probes 1 to 10,000")
    if args.warmup is None:  # every identity of both pools has connected once by then
        args.warmup = min(args.lifetime + 30, args.minutes * 30)
    args.deadline = args.minutes * 60 + SETUP_SECONDS
    return args


def main() -> None:
    args = parse()
    if args.command == "fake":
        asyncio.run(serve_fake(args.dir, args.max_seconds))
    elif os.environ.get(INSIDE) != "1":
        reenter()
    else:
        asyncio.run(inside(args))


if __name__ == "__main__":
    main()
