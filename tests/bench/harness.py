"""What both benchmarks share: a real collector process and its /proc figures, the load
generator processes, timed scrapes of /metrics, and the table they print.

The collector runs pinned to CPU 0 when the machine has two or more; the driver and the load
generators share the others, so the collector's figures are those of one core.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import workload
import yaml

HERE = Path(__file__).parent
TICK = os.sysconf("SC_CLK_TCK")
ALL_CPUS = sorted(os.sched_getaffinity(0))
COLLECTOR_CPUS = set(ALL_CPUS[:1]) if len(ALL_CPUS) > 1 else set(ALL_CPUS)
DRIVER_CPUS = set(ALL_CPUS[1:]) or set(ALL_CPUS)
PROBES_PER_GENERATOR = 2500
LAST_RUN = b"courierwatch_check_last_run_timestamp_seconds"
APPLIED = b"courierwatch_probe_results_applied_total"


def pin_driver() -> None:
    os.sched_setaffinity(0, DRIVER_CPUS)


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    where = f"collector on CPU {sorted(COLLECTOR_CPUS)}, load on CPU {sorted(DRIVER_CPUS)}"
    return f"{os.cpu_count()} cores ({model}), Python {sys.version.split()[0]}; {where}"


def openssl(python: str = sys.executable) -> str:
    """The OpenSSL that `python`'s ssl module runs on (another interpreter may run another)."""
    command = [python, "-c", "import ssl; print(ssl.OPENSSL_VERSION)"]
    return subprocess.run(command, check=True, capture_output=True, text=True,
                          timeout=60).stdout.strip()


def _raise_fd_limit() -> None:
    """In the collector's child before exec: one socket per probe, and its own CPU."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.sched_setaffinity(0, COLLECTOR_CPUS)


class Collector:
    """`python -m courierwatch collector` in insecure mode on ephemeral loopback ports."""

    def __init__(self, process: asyncio.subprocess.Process, grpc: str, url: str) -> None:
        self.process = process
        self.grpc = grpc
        self.url = url
        self.idle_rss = 0  # before any probe connected

    @classmethod
    async def start(cls, directory: Path, limits: dict[str, object] | None = None,
                    remote_write: dict[str, object] | None = None) -> Collector:  # fmt: skip
        """`remote_write`: the config's section of that name (remote-write mode); None, scrape
        mode."""
        config = directory / "collector.yaml"
        document: dict[str, object] = {
            "listen": {"grpc": "127.0.0.1:0", "http": "127.0.0.1:0"},
            "transport": {"insecure": True},
            "state_dir": str(directory / "state"),
            "limits": limits or {},
        }
        if remote_write is not None:
            document["remote_write"] = remote_write
        config.write_text(yaml.safe_dump(document))
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "courierwatch", "collector", "--config", str(config),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
            preexec_fn=_raise_fd_limit,
        )  # fmt: skip
        assert process.stdout is not None
        async with asyncio.timeout(30):
            for _ in range(100):
                line = (await process.stdout.readline()).decode()
                if not line:
                    raise RuntimeError("the collector exited before it was ready")
                if match := re.match(r"collector ready: grpc=(\S+) metrics=(\S+)", line):
                    return cls(process, match[1], match[2])
        raise RuntimeError("the collector never said it was ready")

    def cpu_seconds(self) -> float:
        """User + system time of every thread so far, from /proc/PID/stat."""
        stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / TICK

    def memory(self) -> tuple[int, int]:
        """(VmRSS, VmHWM) in bytes."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        found = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, re.M))
        return int(found["VmRSS"]) * 1024, int(found["VmHWM"]) * 1024

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 20)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


@contextlib.asynccontextmanager
async def profiling(collector: Collector, folder: Path | None, name: str) -> AsyncIterator[None]:
    """py-spy (installed apart: it is not a dependency) samples the collector meanwhile and
    writes collapsed stacks to FOLDER/NAME.txt, and a flame graph beside them."""
    if folder is None:
        yield
        return
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    spies = []
    for form, suffix in (("raw", "txt"), ("flamegraph", "svg")):
        spies.append(await asyncio.create_subprocess_exec(
            "py-spy", "record", "--pid", str(collector.process.pid), "--rate", "250",
            "--format", form, "--output", str(folder / f"{name}.{suffix}"), "--nonblocking",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        ))  # fmt: skip
    try:
        yield
    finally:
        for spy in spies:
            spy.send_signal(signal.SIGINT)  # py-spy writes its output when interrupted
        for spy in spies:
            await asyncio.wait_for(spy.wait(), 30)


@contextlib.asynccontextmanager
async def running_collector() -> AsyncIterator[Collector]:
    """A collector with its state in a temporary folder, settled; stopped on the way out."""
    with tempfile.TemporaryDirectory(prefix="courierwatch-bench-") as directory:
        collector = await Collector.start(Path(directory))
        try:
            await asyncio.sleep(0.5)
            collector.idle_rss = collector.memory()[0]
            yield collector
        finally:
            await collector.stop()


class Generators:
    """loadgen.py processes sharing `probes` simulated probes between them."""

    def __init__(self, processes: list[asyncio.subprocess.Process]) -> None:
        self.processes = processes

    @classmethod
    async def start(cls, target: str, probes: int, *, max_seconds: float, **options: object
                    ) -> Generators:  # fmt: skip
        count = math.ceil(probes / PROBES_PER_GENERATOR)
        flags = [f"--{name.replace('_', '-')}={value}" for name, value in options.items()]
        processes = []
        for i in range(count):
            first, last = probes * i // count, probes * (i + 1) // count
            processes.append(await asyncio.create_subprocess_exec(
                sys.executable, str(HERE / "loadgen.py"), f"--target={target}",
                f"--first={first}", f"--count={last - first}", f"--max-seconds={max_seconds}",
                f"--cpus={','.join(map(str, sorted(DRIVER_CPUS)))}", *flags,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            ))  # fmt: skip
        generators = cls(processes)
        await generators._expect("connected", seconds=60 + probes / 50)
        return generators

    async def _expect(self, word: str, seconds: float) -> list[str]:
        async def one(process: asyncio.subprocess.Process) -> str:
            assert process.stdout is not None
            line = (await process.stdout.readline()).decode().strip()
            if not line.startswith(word):
                raise RuntimeError(f"load generator said {line!r}, not {word!r}")
            return line

        async with asyncio.timeout(seconds):
            return await asyncio.gather(*(one(p) for p in self.processes))

    def _say(self, word: str) -> None:
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.write(f"{word}\n".encode())

    def go(self) -> None:
        self._say("go")

    async def marker_acks(self) -> list[float]:
        """Seconds from sending each marker to its Ack, since the last call."""
        self._say("acks")
        lines = await self._expect("acks", 30)
        return [float(a) for line in lines for a in line[5:].split(",") if a]

    def pace(self, seconds: float) -> None:
        """Each probe sends one batch every `seconds` from now on (0: as fast as acked)."""
        self._say(f"pace {seconds}")

    async def acked(self) -> int:
        """Results acknowledged so far, over every generator."""
        self._say("mark")
        return sum(int(line.split()[1]) for line in await self._expect("mark", 30))

    async def stop(self) -> int:
        """Stop every generator; the results acknowledged in all."""
        self._say("stop")
        try:
            acked = sum(int(line.split()[1]) for line in await self._expect("stopped", 30))
        finally:
            for process in self.processes:
                try:
                    await asyncio.wait_for(process.wait(), 30)
                except TimeoutError:
                    process.kill()
                    await process.wait()
        return acked


@dataclass(slots=True)
class Scrape:
    sent: float  # time.time() when the request went out
    headers: float  # when the response headers came: the body was rendered by then
    done: float  # when the whole body was read
    chunks: list[bytes]
    _body: bytes | None = None

    @property
    def body(self) -> bytes:
        """Joined after the timing: the client's copy is not the collector's cost."""
        if self._body is None:
            self._body, self.chunks = b"".join(self.chunks), []
        return self._body

    @property
    def seconds(self) -> float:
        return self.done - self.sent

    @property
    def series(self) -> int:
        """Sample lines: every line but the # HELP and # TYPE ones."""
        body = self.body
        return body.count(b"\n") - body.count(b"\n#") - body.startswith(b"#")

    def family(self, name: bytes) -> bytes:
        start = self.body.find(b"# TYPE " + name + b" ")
        if start < 0:
            return b""
        end = self.body.find(b"\n# HELP", start)
        return self.body[start : end + 1 if end >= 0 else len(self.body)]

    def markers(self) -> list[float]:
        """The started_at of each probe's latest marker result, as served."""
        pattern = rb'target="' + re.escape(workload.MARKER_TARGET.encode()) + rb'"[^}]*\} (\S+)'
        return [float(value) for value in re.findall(pattern, self.family(LAST_RUN))]

    def applied(self) -> float:
        return sum(float(v) for v in re.findall(rb"\} (\S+)\n", self.family(APPLIED)))


async def scrape(session: aiohttp.ClientSession, url: str) -> Scrape:
    sent = time.time()
    # No compression asked for: the figure is the collector's, not zlib's.
    async with session.get(url, headers={"Accept-Encoding": "identity"}) as response:
        headers = time.time()
        response.raise_for_status()
        chunks = [chunk async for chunk in response.content.iter_chunked(1 << 20)]
    return Scrape(sent, headers, time.time(), chunks)


def session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120), auto_decompress=False)


def percentile(values: Sequence[float], p: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1)]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table, so RESULTS.md can take it as printed."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)) + " |"
    rule = "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])
