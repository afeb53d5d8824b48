"""The CPU floor under a probe check on this machine, measured: what one verified TLS 1.3
handshake and one idle wake-up of the process cost the client, and what that leaves of the
"half of blackbox_exporter's CPU per check" target (RESULTS-probe.md, Issue 14).

    python tests/bench/probe_floor.py            # 2,000 handshakes per way, 400 wake-ups
    python tests/bench/probe_floor.py --quick    # 300 and 100
    flock /tmp/bench.lock .venv/bin/python tests/bench/probe_floor.py   # as benchmarks run here

The fake Apple (probelab's fleet: HAProxy where installed, else TLSServer, with a certificate
for *.bench.apple.com from a TestPKI root; SilentServer) runs in child processes on 127.0.0.1,
so none of the server's CPU is counted. Everything is measured in this process only: user and
system CPU from getrusage(RUSAGE_SELF), and the voluntary context switches (each one a sleep,
so a wake-up), over N operations done one after the other, after a few not counted.

Handshakes are full ones (a new connection each, no session given, so no resumption), verified
by the probe's own context (courierwatch.probe.trust.TrustStore, trusting only the test root,
hostname checked), and asserted to be TLS 1.3. Ways measured:
  memory     client and server SSLObjects over memory BIOs in this process, no socket: only
             the client's calls are timed (thread CPU clock), i.e. OpenSSL's C and the ssl
             module, nothing of the kernel or of waking up
  blocking   socket.connect + SSLContext.wrap_socket (handshake on connect) + close
  asyncio / uvloop   asyncio.open_connection(ssl=ctx) + close + wait_closed, one at a time
  probe conn / asyncio, uvloop   the probe's own net.connection.Connection: open, start_tls,
             close (close_notify both ways, as its checks close)
and the same without TLS (TCP connect + close) so the TLS share can be subtracted.

Wake-ups: K timer sleeps spread out (the process really goes idle between them) against K
back to back (a timer already due: same work, no sleep), on asyncio's loop and uvloop, and
time.sleep as the blocking baseline; the difference per sleep is the CPU of one wake-up.

Then `openssl s_time -new` against the same TLS server: OpenSSL's own client, for its
connections per user-CPU second and (from RUSAGE_CHILDREN) its user + system CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import re
import resource
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import harness
import probelab

# probelab put tests/ on sys.path: the fake Apple's PKI and the probe's own code from here.
from courierwatch.probe import eventloop
from courierwatch.probe.net.connection import Connection
from courierwatch.probe.trust import TrustStore
from fakeapple import TestPKI

NAME = probelab.host_names(1)[0]  # h000.bench.apple.com, in the fleet's wildcard certificate
WARMUP = 30  # operations not counted before each measurement: caches, lazy imports
# Idle gaps between wake-ups: 25 ms, the footprint's 40 checks a second; down to 0.5 ms, the
# gap between one check's own wake-ups on loopback (its peer answers within a millisecond).
GAPS = (0.025, 0.008, 0.002, 0.0005)
FLEET_SECONDS = 3600.0  # the fake Apple stops by itself after this, whatever happens here


@dataclass(frozen=True, slots=True)
class Cost:
    """What `count` operations cost this process."""

    what: str
    count: int
    user: float  # seconds
    system: float
    wall: float
    sleeps: int  # voluntary context switches: each a wait, so a wake-up after it
    preempted: int  # involuntary ones

    @property
    def cpu_ms(self) -> float:
        return 1000 * (self.user + self.system) / self.count

    def cells(self) -> list[str]:
        n = self.count
        return [
            self.what,
            f"{n:,}",
            f"{1000 * self.user / n:.3f}",
            f"{1000 * self.system / n:.3f}",
            f"**{self.cpu_ms:.3f}**",
            f"{self.sleeps / n:.2f}",
            f"{self.preempted / n:.2f}",
            f"{1000 * self.wall / n:.2f}",
        ]


COST_HEADERS = [
    "what (per operation)", "N", "user ms", "sys ms", "CPU ms", "sleeps", "preempted", "wall ms",
]  # fmt: skip


class Meter:
    """getrusage and the clock around a block: `with Meter() as m: ...; m.cost(what, n)`."""

    def __enter__(self) -> Meter:
        gc.collect()  # no collection of earlier garbage inside the window
        self._start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        return self

    def __exit__(self, *_: object) -> None:
        self._end = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()

    def cost(self, what: str, count: int) -> Cost:
        (a, t0), (b, t1) = self._start, self._end
        return Cost(
            what,
            count,
            b.ru_utime - a.ru_utime,
            b.ru_stime - a.ru_stime,
            t1 - t0,
            b.ru_nvcsw - a.ru_nvcsw,
            b.ru_nivcsw - a.ru_nivcsw,
        )


def measured(what: str, count: int, one: Callable[[], object]) -> Cost:
    for _ in range(WARMUP):
        one()
    with Meter() as meter:
        for _ in range(count):
            one()
    return meter.cost(what, count)


async def measured_async(what: str, count: int, one: Callable[[], Awaitable[object]]) -> Cost:
    for _ in range(WARMUP):
        await one()
    with Meter() as meter:
        for _ in range(count):
            await one()
    return meter.cost(what, count)


# --- the fake Apple ----------------------------------------------------------------------------


@contextlib.contextmanager
def fake_apple(directory: Path) -> Iterator[probelab.Fleet]:
    """probelab's fleet (one host) in its child process, entered on a loop of its own that is
    idle while we measure: the child needs nothing from us until we close its stdin."""
    loop = asyncio.new_event_loop()
    fleet = probelab.fleet(probelab.Load(hosts=1), directory, None, FLEET_SECONDS)
    try:
        yield loop.run_until_complete(fleet.__aenter__())
    except BaseException as error:
        if not loop.run_until_complete(fleet.__aexit__(type(error), error, error.__traceback__)):
            raise
    else:
        loop.run_until_complete(fleet.__aexit__(None, None, None))
    finally:
        loop.close()


# --- handshakes --------------------------------------------------------------------------------


def check_handshake(context: ssl.SSLContext, address: tuple[str, int]) -> str:
    """One handshake as measured below must be a full, verified TLS 1.3 one."""
    with (
        socket.create_connection(address) as raw,
        context.wrap_socket(raw, server_hostname=NAME) as tls,
    ):
        assert tls.version() == "TLSv1.3", tls.version()
        assert not tls.session_reused
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
        return f"{tls.version()} {tls.cipher()[0]}, verified against the test root as {NAME}"


def memory_handshakes(count: int, directory: Path) -> Cost:
    """Client CPU of `count` handshakes with no socket and no waiting: a server SSLObject in
    this process (a certificate like the fleet's, from a TestPKI of our own), only the
    client's calls on the thread CPU clock. What OpenSSL's C (and the ssl module) costs."""
    with TestPKI(directory) as pki:
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        pki.issue(f"*.{probelab.DOMAIN}").configure_cert(server_context)
        client_context = TrustStore([str(pki.ca_pem_path)], system=False).verifying()
        client_cpu = 0.0

        def one() -> None:
            nonlocal client_cpu
            to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
            s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO()
            t = time.thread_time()
            client = client_context.wrap_bio(to_client, to_server, server_hostname=NAME)
            client_cpu += time.thread_time() - t
            server = server_context.wrap_bio(s_in, s_out, server_side=True)
            for _ in range(4):  # TLS 1.3: ClientHello; the server's flight; Finished
                t = time.thread_time()
                try:
                    client.do_handshake()
                    done = True
                except ssl.SSLWantReadError:
                    done = False
                client_cpu += time.thread_time() - t
                s_in.write(to_server.read())
                with contextlib.suppress(ssl.SSLWantReadError):
                    server.do_handshake()
                to_client.write(s_out.read())
                if done:
                    assert client.version() == "TLSv1.3"
                    return
            raise RuntimeError("the in-memory handshake did not complete")

        for _ in range(WARMUP):
            one()
        client_cpu = 0.0
        with Meter() as meter:
            for _ in range(count):
                one()
        whole = meter.cost("", count)
        # The thread clock does not split user from system; memory BIOs make no system calls.
        return Cost("TLS handshake, in memory (client calls only)", count, client_cpu, 0.0,
                    whole.wall, 0, 0)  # fmt: skip


def blocking(count: int, context: ssl.SSLContext, fleet: probelab.Fleet) -> list[Cost]:
    tcp, tls = (fleet.address, fleet.tcp_port), (fleet.address, fleet.tls_port)

    def connect() -> None:
        with socket.socket() as sock:
            sock.connect(tcp)

    def handshake() -> None:
        with socket.socket() as raw:
            raw.connect(tls)
            with context.wrap_socket(raw, server_hostname=NAME):
                pass

    return [
        measured("TCP connect + close, blocking", count, connect),
        measured("TLS connect + handshake + close, blocking", count, handshake),
    ]


async def on_loop(count: int, context: ssl.SSLContext, fleet: probelab.Fleet) -> list[Cost]:
    """On whichever loop runs this: asyncio's streams, then the probe's own Connection."""
    loop = eventloop.running()
    address = fleet.address

    async def stream_connect() -> None:
        _, writer = await asyncio.open_connection(address, fleet.tcp_port)
        writer.close()
        await writer.wait_closed()

    async def stream_handshake() -> None:
        _, writer = await asyncio.open_connection(
            address, fleet.tls_port, ssl=context, server_hostname=NAME
        )
        writer.close()
        # HAProxy (the fleet's TLS since the tick grid) sends session tickets after the
        # handshake; asyncio may read them after its close_notify and raise. The probe's
        # Connection ignores it the same way.
        with contextlib.suppress(ssl.SSLError):
            await writer.wait_closed()

    async def probe_connect() -> None:
        connection = await Connection.open(address, fleet.tcp_port)
        await connection.close()

    async def probe_handshake() -> None:
        connection = await Connection.open(address, fleet.tls_port)
        await connection.start_tls(context, NAME)
        await connection.close()

    return [
        await measured_async(f"TCP connect + close, {loop} open_connection", count, stream_connect),
        await measured_async(f"TLS handshake + close, {loop} open_connection", count,
                             stream_handshake),
        await measured_async(f"TCP connect + close, {loop} probe Connection", count, probe_connect),
        await measured_async(f"TLS handshake + close, {loop} probe Connection", count,
                             probe_handshake),
    ]  # fmt: skip


# --- wake-ups ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Wakeup:
    loop: str
    gap: float
    idle: Cost  # K sleeps of `gap`
    busy: Cost  # K sleeps already due

    @property
    def per_wakeup_us(self) -> float:
        return 1000 * (self.idle.cpu_ms - self.busy.cpu_ms)

    @property
    def slept(self) -> bool:
        """uvloop's timers count whole milliseconds: a shorter sleep there is no sleep."""
        return self.idle.sleeps >= 0.9 * self.idle.count

    def cells(self) -> list[str]:
        return [
            self.loop,
            f"{1000 * self.gap:g}",
            f"{self.idle.count:,}",
            f"{1000 * self.idle.cpu_ms:.1f}",
            f"{1000 * self.busy.cpu_ms:.1f}",
            f"**{self.per_wakeup_us:.1f}**" if self.slept else "(did not sleep)",
            f"{self.idle.sleeps / self.idle.count:.2f} / {self.busy.sleeps / self.busy.count:.2f}",
            f"{1000 * (self.idle.wall / self.idle.count - self.gap):.0f}",
        ]


WAKEUP_HEADERS = [
    "loop", "gap ms", "K", "CPU µs per idle sleep", "per due sleep", "**µs per wake-up**",
    "sleeps per op (idle / due)", "overshoot µs",
]  # fmt: skip


async def loop_wakeups(count: int, gap: float) -> Wakeup:
    loop = eventloop.running()
    # A timer already due (asyncio's clock resolution takes it at once): the same handle,
    # future and epoll_wait(timeout 0) as an idle sleep, without going to sleep.
    due = 1e-9
    idle = await measured_async("", count, lambda: asyncio.sleep(gap))
    busy = await measured_async("", count, lambda: asyncio.sleep(due))
    return Wakeup(loop, gap, idle, busy)


def blocking_wakeups(count: int, gap: float) -> Wakeup:
    idle = measured("", count, lambda: time.sleep(gap))
    busy = measured("", count, lambda: time.sleep(0))  # a clock_nanosleep that returns at once
    return Wakeup("blocking time.sleep", gap, idle, busy)


# --- openssl s_time ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class STime:
    command: str
    connections: int
    per_user_second: float  # as s_time prints it
    real_seconds: float
    user: float  # RUSAGE_CHILDREN: the whole s_time process
    system: float

    def cells(self) -> list[str]:
        n = self.connections
        return [
            f"{n:,}",
            f"{n / self.real_seconds:.0f}",
            f"{self.per_user_second:.1f}",
            f"**{1000 / self.per_user_second:.3f}**",
            f"{1000 * self.user / n:.3f}",
            f"{1000 * self.system / n:.3f}",
            f"{1000 * (self.user + self.system) / n:.3f}",
        ]


STIME_HEADERS = [
    "connections", "per s (real)", "per user-CPU s (s_time)", "**user ms / handshake**",
    "user ms (rusage)", "sys ms (rusage)", "CPU ms (rusage)",
]  # fmt: skip


def s_time(fleet: probelab.Fleet, seconds: int) -> STime:
    argv = ["openssl", "s_time", "-new", "-tls1_3", "-connect", f"{fleet.address}:{fleet.tls_port}",
            "-CAfile", fleet.ca, "-verify", "2", "-time", str(seconds)]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=seconds + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # "N connections in X.XXs; Y connections/user sec, bytes read 0"; "N ... in T real seconds"
    user = re.search(r"(\d+) connections in [\d.]+s; ([\d.]+) connections/user sec", done.stdout)
    real = re.search(r"(\d+) connections in (\d+) real seconds", done.stdout)
    if not (user and real):
        raise RuntimeError(f"s_time said:\n{done.stdout}\n{done.stderr}")
    if "verify error" in done.stdout + done.stderr:
        raise RuntimeError("s_time could not verify the fleet's chain")
    command = " ".join(a if a != fleet.ca else "CA.pem" for a in argv)
    return STime(command, int(user[1]), float(user[2]), float(real[2]),
                 after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime)  # fmt: skip


# --- the floor ---------------------------------------------------------------------------------

HANDSHAKES_PER_CHECK = 2 / 4  # the footprint's mix: dns, tcp, tls, https per host
WAKEUPS_PER_CHECK = 3.0  # assumed, as RESULTS-probe.md counts them: timer, SYN-ACK, reply


FLOOR_HEADERS = [
    "model", "loop", "TLS ms / check", "wake-ups ms / check", "connections ms / check",
    "**floor ms / check**",
]  # fmt: skip
DEEP = GAPS[0]  # a check's first wake-up comes from idle, the rest soon after it


def floor_lines(costs: dict[str, Cost], st: STime, wakeups: list[Wakeup]) -> list[str]:
    """Three readings of the floor per check of the footprint's mix, for each loop measured."""
    memory = costs["TLS handshake, in memory (client calls only)"].cpu_ms
    s_time_user = 1000 / st.per_user_second
    wake = {(w.loop, w.gap): w.per_wakeup_us / 1000 for w in wakeups if w.slept}
    rows = []

    def row(model: str, loop: str, tls: float | None, woken: float, other: float | None) -> None:
        def cell(ms: float | None) -> str:
            return "-" if ms is None else f"{ms:.3f}"

        total = (tls or 0.0) + woken + (other or 0.0)
        rows.append([model, loop, cell(tls), cell(woken), cell(other), f"**{total:.3f}**"])

    for loop in probelab.LOOPS:
        if (loop, DEEP) not in wake:
            continue
        deep = wake[loop, DEEP]
        shortest = min(gap for (name, gap) in wake if name == loop)  # that really slept
        shallow = wake[loop, shortest]
        # As RESULTS-probe.md argues it: every wake-up priced as one from idle.
        for source, handshake in (("in-memory", memory), ("s_time user", s_time_user)):
            row(f"{source} handshake x 0.5 + 3 wake-ups from idle ({1000 * DEEP:g} ms gap)",
                loop, HANDSHAKES_PER_CHECK * handshake, WAKEUPS_PER_CHECK * deep, None)  # fmt: skip
        # A check's later wake-ups come within a millisecond of its first (loopback, veth).
        row(f"in-memory handshake x 0.5 + 1 wake-up from idle + 2 after {1000 * shortest:g} ms",
            loop, HANDSHAKES_PER_CHECK * memory,
            deep + (WAKEUPS_PER_CHECK - 1) * shallow, None)  # fmt: skip
        # The probe's own Connection rows (their in-exchange wake-ups included) for the tcp,
        # tls and https checks' connections, plus each check's timer from idle; the DNS query
        # and the HTTP request and response are left out, so this one is a lower bound.
        tls_row = costs.get(f"TLS handshake + close, {loop} probe Connection")
        tcp_row = costs.get(f"TCP connect + close, {loop} probe Connection")
        if tls_row and tcp_row:
            row("probe Connection rows (2 TLS + 1 TCP per 4 checks) + 1 timer wake-up from idle",
                loop, None, deep, (2 * tls_row.cpu_ms + tcp_row.cpu_ms) / 4)  # fmt: skip
    return [
        harness.table(FLOOR_HEADERS, rows),
        "",
        "Compare with probe_footprint.py on the same host: the target is half of "
        "blackbox_exporter's CPU per check there (1.0-1.2 ms on the Xeon host of 2026-12-04, "
        "1.5-1.7 ms on the EPYC host of 2026-12-03: RESULTS-probe.md).",
    ]


# --- main --------------------------------------------------------------------------------------


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def steal() -> float:
    """Seconds the hypervisor ran something else on this VM's CPUs, all CPUs together: time
    that passes for a process without its running, sleeping or being preempted in here."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return int(fields[8]) / probelab.TICK


def run(args: argparse.Namespace, work: Path) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    load_start, steal_start = load(), steal()
    costs: list[Cost] = []
    wakeups: list[Wakeup] = []
    with fake_apple(work / "fleet") as fleet:
        server_before = probelab.usage(fleet.pid).cpu
        context = TrustStore([fleet.ca], system=False).verifying()  # as the probe's tls check
        what = check_handshake(context, (fleet.address, fleet.tls_port))
        costs.append(memory_handshakes(args.handshakes, work / "pki"))
        costs.extend(blocking(args.handshakes, context, fleet))
        for name in probelab.LOOPS:
            try:
                _, factory = eventloop.choose(name)
            except ValueError as error:
                print(f"{name} left out: {error}", file=sys.stderr)
                continue
            with asyncio.Runner(loop_factory=factory) as runner:
                costs.extend(runner.run(on_loop(args.handshakes, context, fleet)))
                wakeups.extend(runner.run(loop_wakeups(args.wakeups, gap)) for gap in GAPS)
        wakeups.extend(blocking_wakeups(args.wakeups, gap) for gap in GAPS)
        st = s_time(fleet, args.s_time)
        server_cpu = probelab.usage(fleet.pid).cpu - server_before
    by = {c.what: c for c in costs}

    def tls_share(tls: str, tcp: str) -> str:
        return f"{by[tls].cpu_ms - by[tcp].cpu_ms:.3f}" if tls in by and tcp in by else "-"

    shares = [
        ["blocking", tls_share("TLS connect + handshake + close, blocking",
                               "TCP connect + close, blocking")],
        *([f"{loop} {way}", tls_share(f"TLS handshake + close, {loop} {way}",
                                      f"TCP connect + close, {loop} {way}")]
          for loop in probelab.LOOPS for way in ("open_connection", "probe Connection")
          if f"TCP connect + close, {loop} {way}" in by),
    ]  # fmt: skip
    lines = [
        f"probe floor: {args.handshakes:,} handshakes per way, {args.wakeups:,} wake-ups per "
        f"row; started {started}",
        harness.machine().split(";")[0] + f"; {ssl.OPENSSL_VERSION}",
        f"handshake: {what}",
        f"load average (1, 5, 15 min): start {load_start}, end {load()}; "
        f"steal time, both CPUs: {steal() - steal_start:.2f} s",
        f"not counted: the fake Apple's CPU meanwhile, {server_cpu:.1f} s",
        "",
        "Client CPU per operation (this process only; sleeps = voluntary context switches):",
        "",
        harness.table(COST_HEADERS, [c.cells() for c in costs]),
        "",
        "TLS share (TLS row minus the TCP row of the same way), CPU ms per handshake:",
        "",
        harness.table(["way", "CPU ms"], shares),
        "",
        "CPU per wake-up (idle sleep minus due sleep):",
        "",
        harness.table(WAKEUP_HEADERS, [w.cells() for w in wakeups]),
        "",
        f"OpenSSL's own client: `{st.command}`",
        "",
        harness.table(STIME_HEADERS, [st.cells()]),
        "",
        "Floor per check, the probe_footprint mix (2 handshakes per 4 checks; 3 wake-ups per "
        "check assumed):",
        "",
        *floor_lines(by, st, wakeups),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--handshakes", type=int, default=2000, help="per way (and connects)")
    parser.add_argument("--wakeups", type=int, default=400, help="sleeps per row")
    parser.add_argument("--s-time", type=int, default=10, help="seconds of openssl s_time")
    parser.add_argument("--quick", action="store_true", help="300 handshakes, 100 wake-ups, 5 s")
    args = parser.parse_args()
    if args.quick:
        args.handshakes, args.wakeups, args.s_time = 300, 100, 5
    probelab.stop_on_signals()
    with tempfile.TemporaryDirectory(prefix="cw-floor-") as tmp:
        print(run(args, Path(tmp)))


if __name__ == "__main__":
    main()
