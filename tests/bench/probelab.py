"""The laboratory both probe benchmarks run in: a fake Apple of N hosts, optionally behind a
network namespace, a courierwatch probe and its collector, and blackbox_exporter with a
scraper that asks it what Prometheus would.

    fake Apple  (a child process: `python probelab.py fleet ...`)
        h000..hNNN.bench.apple.com, A -> ADDRESS (TTL 60 s), plus a wildcard certificate:
        DNS by dnsmasq where installed (else FakeDNS), SilentServer (tcp checks), tls and
        https by HAProxy (Debian's, 2 threads) where installed (else TLSServer, HTTPServer)
    courierwatch probe (the process measured) -> collector (insecure, 127.0.0.1)
    blackbox_exporter (the process measured) <- Scraper (in the driver, as Prometheus would)

With `--netns` (root) the fake Apple lives in a network namespace of its own, 198.18.0.2 over a
veth pair from 198.18.0.1, with port 53 redirected to FakeDNS (which binds an ephemeral
port): probe and blackbox_exporter then both resolve through port 53 of 198.18.0.2 and cross
the same veth. blackbox_exporter's tcp and http probers resolve with the system resolver,
which cannot take a port, so it runs in a mount namespace of its own (`unshare --mount`) where
a private resolv.conf naming 198.18.0.2 is bound over /etc/resolv.conf, which is what
`ip netns exec` does for /etc/netns/NAME/resolv.conf. Its dns prober is given the server
address directly. Without root the fake Apple is on 127.0.0.1 and blackbox_exporter is left
out (it could not resolve the names).

Everything started here is stopped on exit, also on error or SIGTERM; the namespace (and with
it the veth pair and every iptables rule inside it) is deleted, and stale ones of dead runs
are removed first.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import harness
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/, for the lab
from courierwatch.probe import eventloop
from lab import netns
from lab.children import START_SECONDS, stop_process

HERE = Path(__file__).parent
SELF = Path(__file__).resolve()  # run again as the fake Apple's process
DOMAIN = "bench.apple.com"
TTL = 60  # seconds: the A records' TTL, which the probe's resolver cache honours
KINDS = ("dns", "tcp", "tls", "http")
LOOPBACK = "127.0.0.1"
ROOT_SIDE, APPLE_SIDE = "198.18.0.1", "198.18.0.2"  # RFC 2544 benchmarking range
NETNS_PREFIX = "cwprobe"
BLACKBOX = "/usr/bin/prometheus-blackbox-exporter"
# The fake Apple's C servers (command -> Debian package); without them it falls back to Python.
FAKE_SERVERS = {"haproxy": "haproxy", "dnsmasq": "dnsmasq-base"}
TICK = os.sysconf("SC_CLK_TCK")


def host_names(count: int) -> list[str]:
    return [f"h{i:03d}.{DOMAIN}" for i in range(count)]


@dataclass(frozen=True, slots=True)
class Load:
    """What both tools are asked to do: every host's dns, tcp, tls and https check (or probe)
    once per interval."""

    hosts: int = 300
    interval: float = 30.0
    tick: str = "auto"  # the probe's schedule.tick (blackbox_exporter is asked as Prometheus asks)

    @property
    def timeout(self) -> float:
        return min(5.0, self.interval / 2)  # a check's timeout must be shorter than its interval

    @property
    def checks(self) -> int:
        return self.hosts * len(KINDS)

    def describe(self) -> str:
        return (
            f"{self.hosts} hosts x {len(KINDS)} checks every {self.interval:g} s"
            f" (probe tick {self.tick})"
        )


# --- tools -----------------------------------------------------------------------------------


def require(tools: dict[str, str], *, install: bool) -> None:
    """Every tool (command -> Debian package) present; with `install` (root) apt-get installs
    what is missing, else exit saying what to install."""
    missing = {cmd: pkg for cmd, pkg in tools.items() if not shutil.which(cmd)}
    if not missing:
        return
    packages = sorted(set(missing.values()))
    if not (install and os.geteuid() == 0):
        sys.exit(
            f"missing {', '.join(missing)}: apt-get install {' '.join(packages)}"
            " (or pass --install as root)"
        )
    print(f"installing {' '.join(packages)} with apt-get", file=sys.stderr)
    apt = ["apt-get", "-o", "DPkg::Lock::Timeout=300"]  # wait for another apt, don't fail
    subprocess.run([*apt, "update", "-qq"], check=True)
    subprocess.run(
        [*apt, "install", "-y", "-qq", "--no-install-recommends", *packages],
        check=True,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )


def free_port(address: str = LOOPBACK) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        port: int = sock.getsockname()[1]
        return port


# --- /proc figures ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Usage:
    cpu: float  # user + system seconds of all threads so far
    hwm: int  # peak resident set (VmHWM), bytes
    rss: int


def usage(pid: int) -> Usage:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    status = Path(f"/proc/{pid}/status").read_text()
    kb = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, re.M))
    cpu = (int(fields[11]) + int(fields[12])) / TICK
    return Usage(cpu, int(kb["VmHWM"]) * 1024, int(kb["VmRSS"]) * 1024)


# --- termination -----------------------------------------------------------------------------


class Stopped(Exception):
    """SIGTERM or SIGHUP arrived: unwind, so every context manager cleans up."""


def stop_on_signals() -> None:
    def handler(signum: int, _frame: object) -> None:
        raise Stopped(signal.Signals(signum).name)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, handler)


# --- network namespace -----------------------------------------------------------------------


class Namespace(netns.Namespace):
    """A network namespace joined to this one by a veth pair (ROOT_SIDE <-> APPLE_SIDE)."""

    def __init__(self) -> None:
        super().__init__(f"{NETNS_PREFIX}{os.getpid()}")

    @property
    def veth(self) -> tuple[str, str]:
        return f"{self.name[:11]}r", f"{self.name[:11]}a"  # interface names: 15 chars at most

    def create(self) -> None:
        netns.remove_stale(NETNS_PREFIX)
        super().create()
        root, inner = self.veth
        try:
            netns.link(None, root, self, inner)
            netns.ip("addr", "add", f"{ROOT_SIDE}/30", "dev", root)
            self.ip("addr", "add", f"{APPLE_SIDE}/30", "dev", inner)
        except BaseException:
            self.delete()
            raise

    def delete(self) -> None:
        # Deleting the namespace destroys its end of the pair, and then ours; the explicit
        # link delete makes that immediate.
        super().delete()
        netns.ip("link", "delete", self.veth[0], check=False)

    def redirect_dns(self, port: int) -> None:
        """Port 53 of APPLE_SIDE answers from `port`, where FakeDNS listens."""
        for proto in ("udp", "tcp"):
            self.iptables("-t", "nat", "-A", "PREROUTING", "-p", proto, "-d", APPLE_SIDE,
                          "--dport", "53", "-j", "REDIRECT", "--to-ports", str(port))  # fmt: skip


@contextlib.contextmanager
def namespace() -> Iterator[Namespace]:
    ns = Namespace()
    ns.create()
    try:
        yield ns
    finally:
        ns.delete()


# --- the fake Apple --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fleet:
    """Where the fake Apple answers, as its process reported it."""

    address: str
    dns_port: int  # FakeDNS's own port
    tcp_port: int
    tls_port: int
    https_port: int
    ca: str  # PEM of the CA that signed the wildcard certificate
    pid: int
    tls_by: str  # what answers the tls and https checks: "haproxy" or "python"
    dns_by: str  # what answers DNS: "dnsmasq" or "python"
    resolver_port: int = 53  # what clients ask: 53, redirected, in a namespace

    @property
    def ports(self) -> dict[str, int]:
        return {
            "dns": self.resolver_port,
            "tcp": self.tcp_port,
            "tls": self.tls_port,
            "http": self.https_port,
        }


@contextlib.asynccontextmanager
async def fleet(
    load: Load, directory: Path, ns: Namespace | None, max_seconds: float
) -> AsyncIterator[Fleet]:
    """The fake Apple as a child process (inside `ns` when given); it stops when we close its
    stdin, or by itself after max_seconds."""
    address = APPLE_SIDE if ns else LOOPBACK
    argv = [
        sys.executable,
        str(SELF),
        "fleet",
        f"--hosts={load.hosts}",
        f"--address={address}",
        f"--dir={directory}",
        f"--max-seconds={max_seconds}",
    ]
    process = await asyncio.create_subprocess_exec(
        *(ns.command(*argv) if ns else argv),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), START_SECONDS)
        if not line:
            raise RuntimeError("the fake Apple exited before it was ready")
        facts = json.loads(line)
        if ns:
            ns.redirect_dns(facts["dns_port"])
        yield Fleet(address=address, resolver_port=53 if ns else facts["dns_port"], **facts)
    finally:
        if process.stdin is not None:
            process.stdin.close()
        await stop_process(process)


async def serve_fleet(hosts: int, address: str, directory: Path, max_seconds: float) -> None:
    """The child: start the servers, say where they are (one JSON line), wait for EOF."""
    from fakeapple import SilentServer, TestPKI

    with TestPKI(directory) as pki:
        cert = pki.issue(f"*.{DOMAIN}")
        async with (
            dns_server(hosts, address) as (dns_by, dns_port),
            SilentServer(address) as tcp,
            tls_servers(cert, address, directory) as (tls_by, tls_port, https_port),
        ):
            gc.freeze()  # long full collections would stall answers to both tools alike
            facts = {
                "dns_port": dns_port,
                "dns_by": dns_by,
                "tcp_port": tcp.port,
                "tls_port": tls_port,
                "https_port": https_port,
                "tls_by": tls_by,
                "ca": str(pki.ca_pem_path),
                "pid": os.getpid(),
            }
            print(json.dumps(facts), flush=True)
            loop = asyncio.get_running_loop()
            stdin = asyncio.StreamReader()
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stdin.read(), max_seconds)


@contextlib.asynccontextmanager
async def dns_server(hosts: int, address: str) -> AsyncIterator[tuple[str, int]]:
    """(which, port) of the fleet's DNS: dnsmasq where installed (C: the queries of a batch
    are not answered one after another by a Python process), else FakeDNS. Either answers A
    for every host with TTL seconds."""
    if not shutil.which("dnsmasq"):
        from fakeapple import FakeDNS

        async with FakeDNS(address) as dns:
            for name in host_names(hosts):
                dns.add_a(name, address, ttl=TTL)
            yield "python", dns.port
        return
    port = free_port(address)
    process = await asyncio.create_subprocess_exec(
        "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
        "--no-poll", "--bind-interfaces", f"--listen-address={address}", f"--port={port}",
        f"--address=/{DOMAIN}/{address}", f"--local=/{DOMAIN}/", f"--local-ttl={TTL}",
        "--pid-file=", "--user=root",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await wait_listening(address, port, process)
        yield "dnsmasq", port
    finally:
        await stop_process(process)


# HAProxy answers the tls and https checks: TLS in C on two threads, as a real front end does.
# One Python process answering everything would serve handshakes that arrive together one
# after the other, and so add its own queue to what both tools measure.
HAPROXY_CONFIG = """\
global
    nbthread 2
    maxconn 4096
defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 1s
    timeout http-request 10s
frontend apple
    bind {address}:{tls_port} ssl crt {pem} alpn http/1.1
    bind {address}:{https_port} ssl crt {pem} alpn http/1.1
    http-request return status 200 content-type text/plain string ok
"""


@contextlib.asynccontextmanager
async def tls_servers(
    cert: Any, address: str, directory: Path
) -> AsyncIterator[tuple[str, int, int]]:
    """(which, tls port, https port): HAProxy where it is installed, else the Python fakes."""
    if not shutil.which("haproxy"):
        from fakeapple import HTTPServer, TLSServer

        async with TLSServer(cert, host=address) as tls, HTTPServer(cert, host=address) as https:
            yield "python", tls.port, https.port
        return
    pem = directory / "haproxy.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(pem))
    ports = free_port(address), free_port(address)
    config = directory / "haproxy.cfg"
    config.write_text(HAPROXY_CONFIG.format(
        address=address, tls_port=ports[0], https_port=ports[1], pem=pem
    ))  # fmt: skip
    with (directory / "haproxy.log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            "haproxy", "-db", "-f", str(config), stdout=log, stderr=log
        )
    try:
        for port in ports:
            await wait_listening(address, port, process)
        yield "haproxy", *ports
    finally:
        await stop_process(process)


async def wait_listening(address: str, port: int, process: asyncio.subprocess.Process) -> None:
    """Until a TCP connect to address:port succeeds (bounded: START_SECONDS)."""
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline and process.returncode is None:
        try:
            _, writer = await asyncio.open_connection(address, port)
        except OSError:
            await asyncio.sleep(0.05)  # nothing to await: HAProxy says nothing when it listens
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise RuntimeError(f"nothing listens on {address}:{port} (haproxy.log, or dnsmasq's exit)")


def probe_config(fleet: Fleet, load: Load, collector: str, directory: Path) -> dict[str, Any]:
    targets = [
        {
            "host": name,
            "port": fleet.ports[kind],
            "check": kind,
            "group": "bench",
            "interval": f"{load.interval:g}s",
            "timeout": f"{load.timeout:g}s",
        }
        for name in host_names(load.hosts)
        for kind in KINDS
    ]
    return {
        "site": "bench",
        "probe_id": "bench",
        "collectors": [collector],
        "transport": {"insecure": True},
        "resolver": {"nameservers": [fleet.address], "port": fleet.resolver_port},
        "trust": {"anchors": [fleet.ca], "system": False},
        "apple": {"ranges": ["198.18.0.0/15", "127.0.0.0/8"]},
        "families": ["ipv4"],
        "schedule": {"tick": yaml.safe_load(load.tick)},  # "0" as 0, "250ms" as written
        "catalog": {"groups": []},
        "spool": {"path": str(directory / "spool.sqlite")},
        "targets": targets,
    }


@dataclass(slots=True)
class Courierwatch:
    probe: asyncio.subprocess.Process
    collector: harness.Collector


# The probe's event loops (courierwatch.probe.eventloop): its command line runs the one the
# environment names (uvloop only where the `fast` extra installed it).
LOOPS = ("asyncio", "uvloop")


@contextlib.asynccontextmanager
async def courierwatch(
    fleet: Fleet, load: Load, directory: Path, loop: str = "asyncio", python: str = sys.executable
) -> AsyncIterator[Courierwatch]:
    """A collector (insecure, loopback) and `python -m courierwatch probe` reporting to it, on
    the event loop named (a key of LOOPS); `python` runs the probe (newer_openssl.py makes one
    on another OpenSSL)."""
    (directory / "collector").mkdir(exist_ok=True)
    collector = await harness.Collector.start(directory / "collector")
    try:
        config = directory / "probe.yaml"
        config.write_text(yaml.safe_dump(probe_config(fleet, load, collector.grpc, directory)))
        with (directory / "probe.log").open("wb") as log:
            probe = await asyncio.create_subprocess_exec(
                python,
                "-m",
                "courierwatch",
                "probe",
                "--config",
                str(config),
                stdout=log,
                stderr=log,
                env={**os.environ, eventloop.ENV: loop},
            )
        try:
            yield Courierwatch(probe, collector)
        finally:
            await stop_process(probe)
    finally:
        await collector.stop()


@dataclass(frozen=True, slots=True)
class Run:
    """One check's measurement, whichever tool made it."""

    kind: str  # dns, tcp, tls, http
    host: str
    started: float  # wall clock
    ok: bool
    phases: dict[str, float]  # seconds: dns, connect, tls, first_byte, total


_SAMPLE = re.compile(rb"^(courierwatch_check_\w+)\{([^}]*)\} (\S+)$", re.M)
_LABEL = re.compile(rb'(\w+)="([^"]*)"')


def runs_on_metrics(body: bytes) -> dict[tuple[str, str, float], Run]:
    """The latest run of every check served on the collector's /metrics, by (host, kind,
    started)."""
    series: dict[tuple[str, str], dict[str, Any]] = {}
    for name, labels, value in _SAMPLE.findall(body):
        tags = {k.decode(): v.decode() for k, v in _LABEL.findall(labels)}
        entry = series.setdefault((tags.get("target", ""), tags.get("check", "")), {"phases": {}})
        if name == b"courierwatch_check_last_run_timestamp_seconds":
            entry["started"] = float(value)
        elif name == b"courierwatch_check_success":
            entry["ok"] = value.startswith(b"1")
        elif name == b"courierwatch_check_duration_seconds":
            entry["phases"][tags["phase"]] = float(value)
    return {
        (host, kind, e["started"]): Run(kind, host, e["started"], e.get("ok", False), e["phases"])
        for (host, kind), e in series.items()
        if "started" in e
    }


async def watch_courierwatch(
    url: str, runs: dict[tuple[str, str, float], Run], until: float, every: float = 5.0
) -> None:
    """Scrape the collector every few seconds (each check runs every 30 s, so none is missed)
    and keep every run seen."""
    async with harness.session() as session:
        while time.time() < until:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                runs.update(runs_on_metrics((await harness.scrape(session, url)).body))
            await asyncio.sleep(min(every, max(0.0, until - time.time())))


# --- blackbox_exporter -----------------------------------------------------------------------


def blackbox_config(fleet: Fleet, load: Load) -> dict[str, Any]:
    """One module per kind; the dns prober takes its query name from the module, so one per
    host. Every module prefers IPv4 (the probe's families: [ipv4]) and trusts the test CA."""
    tls = {"ca_file": fleet.ca}
    timeout = f"{load.timeout:g}s"
    modules: dict[str, Any] = {
        "tcp": {"prober": "tcp", "timeout": timeout, "tcp": {"preferred_ip_protocol": "ip4"}},
        "tls": {
            "prober": "tcp",
            "timeout": timeout,
            "tcp": {"preferred_ip_protocol": "ip4", "tls": True, "tls_config": tls},
        },
        "http": {
            "prober": "http",
            "timeout": timeout,
            "http": {"preferred_ip_protocol": "ip4", "tls_config": tls, "fail_if_not_ssl": True},
        },
    }
    for name in host_names(load.hosts):
        modules[f"dns_{name}"] = {
            "prober": "dns",
            "timeout": timeout,
            "dns": {"query_name": name, "query_type": "A", "preferred_ip_protocol": "ip4"},
        }
    return {"modules": modules}


def blackbox_probes(fleet: Fleet, load: Load) -> list[tuple[str, str, str, str]]:
    """(kind, host, module, target) of every probe in one round, as a Prometheus job lists them."""
    probes = []
    for name in host_names(load.hosts):
        probes.append(("dns", name, f"dns_{name}", f"{fleet.address}:{fleet.resolver_port}"))
        probes.append(("tcp", name, "tcp", f"{name}:{fleet.tcp_port}"))
        probes.append(("tls", name, "tls", f"{name}:{fleet.tls_port}"))
        probes.append(("http", name, "http", f"https://{name}:{fleet.https_port}/"))
    return probes


@contextlib.asynccontextmanager
async def blackbox(fleet: Fleet, load: Load, directory: Path) -> AsyncIterator[tuple[int, str]]:
    """blackbox_exporter on loopback resolving through the fake DNS; yields (pid, base URL)."""
    config, resolv = directory / "blackbox.yml", directory / "resolv.conf"
    config.write_text(yaml.safe_dump(blackbox_config(fleet, load)))
    resolv.write_text(f"nameserver {fleet.address}\n")
    address = f"{LOOPBACK}:{free_port()}"
    # sh binds the private resolv.conf in the new mount namespace, then becomes the exporter.
    with (directory / "blackbox.log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            "unshare",
            "--mount",
            "--",
            "sh",
            "-c",
            'mount --bind "$0" /etc/resolv.conf && exec "$@"',
            str(resolv),
            BLACKBOX,
            f"--config.file={config}",
            f"--web.listen-address={address}",
            "--log.level=warn",
            stdout=log,
            stderr=log,
        )
    try:
        url = f"http://{address}"
        async with harness.session() as session, asyncio.timeout(START_SECONDS):
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{url}/-/healthy") as response:
                        if response.status == 200:
                            break
                if process.returncode is not None:
                    raise RuntimeError(f"blackbox_exporter exited: see {directory}/blackbox.log")
                await asyncio.sleep(0.1)
        yield process.pid, url
    finally:
        await stop_process(process)


_BB_SAMPLE = re.compile(r'^(probe_\w+)(?:\{phase="(\w+)"\})? (\S+)$', re.M)
# blackbox's phase names, as the probe's
_BB_PHASES = {"resolve": "dns", "connect": "connect", "tls": "tls", "processing": "first_byte"}


def blackbox_run(kind: str, host: str, started: float, text: str) -> Run:
    values: dict[str, float] = {}
    phases: dict[str, float] = {}
    for name, phase, value in _BB_SAMPLE.findall(text):
        if name == "probe_http_duration_seconds" and phase in _BB_PHASES:
            phases[_BB_PHASES[phase]] = float(value)
        elif not phase:
            values[name] = float(value)
    phases["total"] = values.get("probe_duration_seconds", 0.0)
    if "probe_dns_lookup_time_seconds" in values and kind != "http":
        phases["dns"] = values["probe_dns_lookup_time_seconds"]
    return Run(kind, host, started, values.get("probe_success") == 1.0, phases)


async def scrape_blackbox(
    url: str, fleet: Fleet, load: Load, runs: list[Run], until: float
) -> None:
    """Every probe once per interval, their start times spread evenly over it (as Prometheus
    spreads its scrape targets), until `until`; each result lands in `runs`."""
    probes = blackbox_probes(fleet, load)
    pending: set[asyncio.Task[None]] = set()

    async def one(session: aiohttp.ClientSession, probe: tuple[str, str, str, str]) -> None:
        kind, host, module, target = probe
        started = time.time()
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            params = {"module": module, "target": target}
            headers = {"Accept-Encoding": "identity"}  # the session leaves bodies compressed
            async with session.get(f"{url}/probe", params=params, headers=headers) as response:
                runs.append(blackbox_run(kind, host, started, await response.text()))

    gap = load.interval / len(probes)
    async with harness.session() as session:
        first = time.monotonic()
        for i in range(int((until - time.time()) / gap) + 1):
            await asyncio.sleep(max(0.0, first + i * gap - time.monotonic()))
            if time.time() >= until:
                break
            task = asyncio.create_task(one(session, probes[i % len(probes)]))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.wait(pending, timeout=load.timeout + 5)


# --- the fleet process -----------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description="the fake Apple for the probe benchmarks")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("fleet", help="serve N hosts until stdin closes")
    serve.add_argument("--hosts", type=int, required=True)
    serve.add_argument("--address", required=True)
    serve.add_argument("--dir", type=Path, required=True)
    serve.add_argument("--max-seconds", type=float, required=True)
    args = parser.parse_args()
    asyncio.run(serve_fleet(args.hosts, args.address, args.dir, args.max_seconds))


if __name__ == "__main__":
    main()
