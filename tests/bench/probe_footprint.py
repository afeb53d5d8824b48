"""Probe footprint, side by side with blackbox_exporter: the same N hosts (dns, tcp, tls and
https checks each, every 30 s) against a local fake Apple, both tools in the same run. Prints
CPU seconds per 1,000 checks and peak RSS of each.

    python tests/bench/probe_footprint.py                 # 300 hosts, 40 s warm-up, 180 s
    python tests/bench/probe_footprint.py --quick         # 300 hosts, 60 s
    python tests/bench/probe_footprint.py --profile /tmp/prof   # py-spy on the probe meanwhile
    python tests/bench/probe_footprint.py --quick --loop uvloop  # the probe on uvloop
    python tests/bench/probe_footprint.py --quick --probe-python /tmp/ossl/python  # on OpenSSL 3.5

Needs root for blackbox_exporter's side (a network namespace and a private resolv.conf: see
probelab.py) and Debian's prometheus-blackbox-exporter and iptables (`--install` fetches
them with apt-get). Without root, or with --no-blackbox, only the probe is measured.
`--probe-python` runs the probe with another interpreter: newer_openssl.py makes one that is
this one on Debian 13's OpenSSL (Raspberry Pi OS's, where this machine has Debian 12's 3.0).

courierwatch: a real `python -m courierwatch probe` process whose collector is a real
collector process (not counted); its checks are the runs the collector shows, counted from
/metrics. blackbox_exporter: Debian's binary, asked by a scraper in this script for every probe
once per interval, start times spread over the interval. CPU is utime + stime from
/proc/PID/stat over the measurement window (after the warm-up); peak RSS is VmHWM at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import harness
import probelab


@dataclass(frozen=True, slots=True)
class Figures:
    tool: str
    checks: int
    ok: int
    cpu: float
    hwm: int
    by_kind: dict[str, int]

    @property
    def per_thousand(self) -> float:
        return 1000 * self.cpu / self.checks if self.checks else float("nan")

    def cells(self) -> list[str]:
        kinds = " ".join(f"{k}={self.by_kind.get(k, 0)}" for k in probelab.KINDS)
        return [
            self.tool,
            f"{self.checks:,}",
            f"{100 * self.ok / max(1, self.checks):.1f}",
            f"{self.cpu:.2f}",
            f"{self.per_thousand:.3f}",
            f"{self.hwm / 2**20:.1f}",
            kinds,
        ]


def figures(tool: str, runs: Sequence[probelab.Run], cpu: float, hwm: int) -> Figures:
    by_kind: dict[str, int] = {}
    for run in runs:
        by_kind[run.kind] = by_kind.get(run.kind, 0) + 1
    return Figures(tool, len(runs), sum(r.ok for r in runs), cpu, hwm, by_kind)


async def spy(pid: int, seconds: float, folder: Path, name: str) -> None:
    """py-spy (not a dependency: `pip install py-spy`) samples `pid` for `seconds` and writes
    collapsed stacks to FOLDER/NAME.txt."""
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    process = await asyncio.create_subprocess_exec(
        shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy")),  # or the venv's
        "record",
        "--pid",
        str(pid),
        "--rate",
        "100",
        "--duration",
        str(int(seconds)),
        "--format",
        "raw",
        "--output",
        str(folder / f"{name}.txt"),
        "--nonblocking",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await asyncio.wait_for(process.wait(), seconds + 60)


async def measure(args: argparse.Namespace, ns: probelab.Namespace | None, work: Path) -> str:
    started = time.time()
    total = args.warmup + args.duration + 60  # the fake Apple's own deadline
    load = probelab.Load(args.hosts, args.interval, args.tick)
    async with (
        probelab.fleet(load, work / "fleet", ns, total) as fleet,
        contextlib.AsyncExitStack() as stack,
    ):
        cw = await stack.enter_async_context(probelab.courierwatch(fleet, load, work, args.loop,
                                                                  args.probe_python))
        bb = None
        if args.blackbox:
            bb = await stack.enter_async_context(probelab.blackbox(fleet, load, work))
        t0 = time.time() + args.warmup
        t1 = t0 + args.duration
        cw_runs: dict[tuple[str, str, float], probelab.Run] = {}
        bb_runs: list[probelab.Run] = []
        # Runs that began before t1 show on /metrics a little later.
        tasks = [probelab.watch_courierwatch(cw.collector.url, cw_runs, t1 + load.timeout + 3)]
        if bb:
            tasks.append(probelab.scrape_blackbox(bb[1], fleet, load, bb_runs, t1))

        async def window() -> dict[str, tuple[probelab.Usage, probelab.Usage]]:
            pids = {
                "courierwatch": cw.probe.pid,
                "collector": cw.collector.process.pid,
                "fake Apple": fleet.pid,
            }
            if bb:
                pids["blackbox_exporter"] = bb[0]
            await asyncio.sleep(max(0.0, t0 - time.time()))
            before = {name: probelab.usage(pid) for name, pid in pids.items()}
            if args.profile:
                await spy(cw.probe.pid, args.duration, args.profile, "probe")
            await asyncio.sleep(max(0.0, t1 - time.time()))
            return {name: (before[name], probelab.usage(pid)) for name, pid in pids.items()}

        usages, *_ = await asyncio.gather(window(), *tasks)

    def within(runs: Sequence[probelab.Run]) -> list[probelab.Run]:
        return [r for r in runs if t0 <= r.started < t1]

    def cpu(name: str) -> float:
        return usages[name][1].cpu - usages[name][0].cpu

    rows = [
        figures(
            "courierwatch probe",
            within(list(cw_runs.values())),
            cpu("courierwatch"),
            usages["courierwatch"][1].hwm,
        )
    ]
    if bb:
        rows.append(
            figures(
                "blackbox_exporter",
                within(bb_runs),
                cpu("blackbox_exporter"),
                usages["blackbox_exporter"][1].hwm,
            )
        )
    table = harness.table(
        [
            "tool",
            "checks",
            "ok %",
            "CPU s",
            "CPU s / 1,000 checks",
            "peak RSS MB",
            "checks by kind",
        ],
        [row.cells() for row in rows],
    )
    where = "in a network namespace" if ns else "on loopback"
    where += f", TLS by {fleet.tls_by}, DNS by {fleet.dns_by}"
    lines = [
        f"probe footprint: {load.describe()}; window {args.duration:g} s after "
        f"{args.warmup:g} s warm-up; fake Apple {where}; probe on {args.loop}, "
        f"{harness.openssl(args.probe_python)}",
        harness.machine().split(";")[0],
        "",
        table,
        "",
    ]
    if len(rows) == 2 and rows[1].per_thousand:
        ratio = rows[0].per_thousand / rows[1].per_thousand
        lines.append(
            f"CPU per check, courierwatch / blackbox_exporter: {ratio:.2f} (target <= 0.50)"
        )
    lines.append(f"courierwatch probe peak RSS: {rows[0].hwm / 2**20:.1f} MB (target <= 60)")
    others = ", ".join(f"{name} {cpu(name):.1f} s" for name in ("collector", "fake Apple"))
    lines.append(f"not counted: CPU of the {others}; took {time.time() - started:.0f} s")
    totals = [r.phases.get("total", 0.0) for r in within(list(cw_runs.values()))]
    if totals:
        lines.append(f"courierwatch median check time {1000 * statistics.median(totals):.2f} ms")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=300)
    parser.add_argument("--duration", type=float, default=180.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=40.0, help="seconds before measuring")
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between runs")
    parser.add_argument("--tick", default="auto", help="the probe's schedule.tick (0: none)")
    parser.add_argument("--quick", action="store_true", help="--duration 60")
    parser.add_argument("--no-blackbox", dest="blackbox", action="store_false")
    parser.add_argument("--profile", type=Path, help="py-spy the probe into this folder")
    parser.add_argument("--install", action="store_true", help="apt-get what is missing")
    parser.add_argument("--probe-python", default=sys.executable,
                        help="the interpreter that runs the probe (newer_openssl.py makes one)")
    parser.add_argument(
        "--loop",
        choices=probelab.LOOPS,
        default="asyncio",
        help="the probe's event loop (uvloop: the fast extra)",
    )
    args = parser.parse_args()
    if args.quick:
        args.duration = 60.0
    root = os.geteuid() == 0
    if args.blackbox and not root:
        print("not root: blackbox_exporter left out (see probelab.py)", file=sys.stderr)
        args.blackbox = False
    if root:
        tools = {"iptables": "iptables", **probelab.FAKE_SERVERS}
        if args.blackbox:
            tools[probelab.BLACKBOX] = "prometheus-blackbox-exporter"
        probelab.require(tools, install=args.install)
    probelab.stop_on_signals()
    with (
        tempfile.TemporaryDirectory(prefix="cw-footprint-") as tmp,
        probelab.namespace() if root else contextlib.nullcontext() as ns,
    ):
        print(asyncio.run(measure(args, ns, Path(tmp))))


if __name__ == "__main__":
    main()
