"""A fixed delay on a path without sch_netem, measured: the lab's NFQUEUE holder
(tests/lab/nfqueue.py) lets each packet go once it has been held for exactly DELAY.

    python tests/bench/nfqueue_delay.py                  # its own error, measured with ping
    python tests/bench/nfqueue_delay.py --delay 20ms --count 1000

Run as a script it measures itself: a network namespace (probelab.Namespace) whose egress
towards us goes through the queue, then `ping` across the veth pair, first without the rule,
then with it; the table compares each RTT with the baseline plus DELAY. probe_accuracy.py
uses `delaying` (rule + holder on the namespace's egress towards us).

How the holder works (nfnetlink_queue spoken directly, FIFO release, SCHED_FIFO, a
--queue-bypass rule) is described in tests/lab/nfqueue.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import statistics
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import probelab

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/, for the lab
from lab import nfqueue
from lab.nfqueue import Holder, percentile

__all__ = ["ERROR_HEADERS", "Holder", "delaying", "error_row", "parse_seconds", "ping"]


@contextlib.asynccontextmanager
async def delaying(
    ns: probelab.Namespace, delay: float, max_seconds: float
) -> AsyncIterator[Holder]:
    """Every packet leaving `ns` towards us is held `delay` (the lab's holder, inside `ns`)."""
    async with nfqueue.delaying(ns, ["-o", ns.veth[1]], delay, max_seconds) as holder:
        yield holder


_RTT = re.compile(r"time=([\d.]+) ms")


async def ping(address: str, count: int, interval: float) -> list[float]:
    """RTTs in seconds of `count` echo requests (iputils ping prints 0.1 ms steps above
    10 ms, 0.01 ms below)."""
    process = await asyncio.create_subprocess_exec(
        "ping",
        "-n",
        "-i",
        str(interval),
        "-c",
        str(count),
        "-W",
        "2",
        address,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await asyncio.wait_for(process.communicate(), count * interval + 30)
    return [float(ms) / 1000 for ms in _RTT.findall(out.decode())]


def error_row(
    name: str, baseline: Sequence[float], measured: Sequence[float], delay: float
) -> list[str]:
    """n, medians, and the error of each measurement against baseline median + delay, in ms."""
    if not baseline or not measured:
        return [name, str(len(measured)), "-", "-", "-", "-", "-"]
    base = statistics.median(baseline)
    errors = [m - delay - base for m in measured]
    absolute = [abs(e) for e in errors]
    return [
        name,
        str(len(measured)),
        f"{1000 * base:.3f}",
        f"{1000 * statistics.median(measured):.3f}",
        f"{1000 * statistics.median(errors):+.3f}",
        f"{1000 * statistics.median(absolute):.3f}",
        f"{1000 * percentile(absolute, 99):.3f}",
    ]


ERROR_HEADERS = [
    "measurement",
    "n",
    "baseline median ms",
    "with delay median ms",
    "error median ms",
    "|error| median ms",
    "|error| p99 ms",
]


async def measure_self(delay: float, count: int, interval: float) -> str:
    with probelab.namespace() as ns:
        baseline = await ping(probelab.APPLE_SIDE, count, interval)
        async with delaying(ns, delay, count * interval + 60) as holder:
            delayed = await ping(probelab.APPLE_SIDE, count, interval)
    import harness

    return "\n".join(
        [
            f"NFQUEUE delay {1000 * delay:g} ms on the namespace's egress; ping -i {interval:g} "
            f"x {count} across the veth pair (idle machine but for this)",
            "",
            harness.table(ERROR_HEADERS, [error_row("ping RTT", baseline, delayed, delay)]),
            "",
            f"holder: {holder.report}",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--delay", default="50ms", help="e.g. 50ms (default) or 0.05")
    parser.add_argument("--count", type=int, default=500, help="pings per phase")
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between pings")
    parser.add_argument("--install", action="store_true", help="apt-get what is missing")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root: network namespaces, iptables and NFQUEUE")
    probelab.require({"iptables": "iptables", "ping": "iputils-ping"}, install=args.install)
    probelab.stop_on_signals()
    print(asyncio.run(measure_self(parse_seconds(args.delay), args.count, args.interval)))


def parse_seconds(text: str) -> float:
    return float(text[:-2]) / 1000 if text.endswith("ms") else float(text.rstrip("s"))


if __name__ == "__main__":
    main()
