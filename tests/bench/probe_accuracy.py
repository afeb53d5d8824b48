"""Measurement accuracy under load: TCP connect and TLS handshake times as courierwatch and
blackbox_exporter report them, against a known delay added on the path to the fake Apple.

    python tests/bench/probe_accuracy.py                  # 300 hosts, 50 ms, 90 s per phase
    python tests/bench/probe_accuracy.py --quick          # 45 s per phase

What "known delay" means here: every packet leaving the fake Apple's network namespace (towards
both tools) is held DELAY by nfqueue_delay.py; nothing going the other way is. So every
request/response exchange takes exactly DELAY longer: a TCP connect (SYN -> SYN-ACK), a TLS 1.3
handshake (ClientHello -> the server's flight: one round trip), a DNS query, an HTTP request's
first byte, a ping. Both tools run their full load (N hosts x dns, tcp, tls, https every 30 s)
throughout, first without the delay (the baseline), then with it. The error of one measurement
is measured - (DELAY + the median of the same tool/check/phase in the baseline): what the tool
saw of the delay, minus the delay. `ping` across the same path measures the injector itself.

Needs root (namespace, iptables, NFQUEUE) and Debian's prometheus-blackbox-exporter, iptables
and iputils-ping (`--install` fetches them). blackbox_exporter's phases are its
probe_http_duration_seconds (connect, tls, processing) of the https probes and, for the tcp
probes, probe_duration_seconds minus the lookup.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import harness
import nfqueue_delay
import probelab

# (tool, check kind, phase as the table names it, phase key in Run.phases)
ROWS = (
    ("courierwatch", "tcp", "TCP connect", "connect"),
    ("courierwatch", "tls", "TCP connect", "connect"),
    ("courierwatch", "tls", "TLS handshake", "tls"),
    ("courierwatch", "http", "TCP connect", "connect"),
    ("courierwatch", "http", "TLS handshake", "tls"),
    ("courierwatch", "dns", "DNS query", "dns"),
    ("blackbox_exporter", "tcp", "TCP connect (total - resolve)", "tcp"),
    ("blackbox_exporter", "http", "TCP connect", "connect"),
    ("blackbox_exporter", "http", "TLS handshake", "tls"),
    ("blackbox_exporter", "dns", "DNS query (total)", "total"),
)


def values(
    runs: Sequence[probelab.Run], kind: str, key: str, since: float, until: float
) -> list[float]:
    """The phase of every successful run of one kind that began within the window."""
    out = []
    for run in runs:
        if run.kind != kind or not run.ok or not since <= run.started < until:
            continue
        if key == "tcp":  # blackbox's tcp prober reports no phases: its total, less DNS
            out.append(run.phases["total"] - run.phases.get("dns", 0.0))
        elif key in run.phases:
            out.append(run.phases[key])
    return out


async def measure(args: argparse.Namespace, work: Path) -> str:
    delay, phase = args.delay, args.phase
    load = probelab.Load(args.hosts, args.interval, args.tick)
    settle = load.timeout + 1  # runs that began this near a switch may straddle it: left out
    total = args.warmup + 2 * phase + 4 * settle + 120
    async with (
        probelab.fleet(load, work / "fleet", args.ns, total) as fleet,
        probelab.courierwatch(fleet, load, work, args.loop) as cw,
        probelab.blackbox(fleet, load, work) as (_, blackbox_url),
    ):
        started = time.time()
        baseline = (started + args.warmup, started + args.warmup + phase)
        delayed = (baseline[1] + 2 * settle, baseline[1] + 2 * settle + phase)
        end = delayed[1] + settle
        cw_runs: dict[tuple[str, str, float], probelab.Run] = {}
        bb_runs: list[probelab.Run] = []
        pings = max(10, int((phase - 2) / args.ping_interval))

        async def injected() -> tuple[list[float], list[float], str]:
            await asyncio.sleep(max(0.0, baseline[0] - time.time()))
            before = await nfqueue_delay.ping(probelab.APPLE_SIDE, pings, args.ping_interval)
            await asyncio.sleep(max(0.0, baseline[1] + settle - time.time()))
            async with nfqueue_delay.delaying(args.ns, delay, end - time.time() + 30) as holder:
                await asyncio.sleep(max(0.0, delayed[0] - time.time()))
                during = await nfqueue_delay.ping(probelab.APPLE_SIDE, pings, args.ping_interval)
                await asyncio.sleep(max(0.0, end - time.time()))
            return before, during, holder.report

        before, during, report = (
            await asyncio.gather(
                injected(),
                probelab.watch_courierwatch(cw.collector.url, cw_runs, end + 8),
                probelab.scrape_blackbox(blackbox_url, fleet, load, bb_runs, end),
            )
        )[0]

    runs = {"courierwatch": list(cw_runs.values()), "blackbox_exporter": bb_runs}
    injected_delay = harness.median(during) - harness.median(before)
    rows = [nfqueue_delay.error_row("injector: ping RTT", before, during, delay)]
    for tool, kind, name, key in ROWS:
        rows.append(
            nfqueue_delay.error_row(
                f"{tool}: {kind} {name}",
                values(runs[tool], kind, key, *baseline),
                values(runs[tool], kind, key, *delayed),
                delay,
            )
        )
    ok = {tool: sum(r.ok for r in rs) / max(1, len(rs)) for tool, rs in runs.items()}
    return "\n".join(
        [
            f"measurement accuracy: {load.describe()} for both tools; {phase:g} s without, "
            f"then {phase:g} s with {1000 * delay:g} ms held on every packet from the fake "
            f"Apple's namespace (TLS by {fleet.tls_by}, DNS by {fleet.dns_by})",
            harness.machine().split(";")[0],
            "",
            harness.table(nfqueue_delay.ERROR_HEADERS, rows),
            "",
            "error = measured - (delay + baseline median); targets: |error| median <= 1 ms, "
            "p99 <= 5 ms",
            f"the delay as ping saw it: {1000 * injected_delay:.3f} ms; holder: {report}",
            "successful runs: " + ", ".join(f"{t} {100 * v:.1f} %" for t, v in ok.items()),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=300)
    parser.add_argument("--delay", default="50ms", help="e.g. 50ms (default) or 0.05")
    parser.add_argument("--phase", type=float, default=90.0, help="seconds per phase")
    parser.add_argument("--warmup", type=float, default=40.0)
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between runs")
    parser.add_argument("--tick", default="auto", help="the probe's schedule.tick (0: none)")
    parser.add_argument("--ping-interval", type=float, default=0.05)
    parser.add_argument("--quick", action="store_true", help="--phase 45")
    parser.add_argument("--install", action="store_true", help="apt-get what is missing")
    parser.add_argument(
        "--loop",
        choices=probelab.LOOPS,
        default="asyncio",
        help="the probe's event loop (uvloop: the fast extra)",
    )
    args = parser.parse_args()
    args.delay = nfqueue_delay.parse_seconds(args.delay)
    if args.quick:
        args.phase = 45.0
    if os.geteuid() != 0:
        sys.exit("needs root: network namespaces, iptables and NFQUEUE")
    probelab.require(
        {
            probelab.BLACKBOX: "prometheus-blackbox-exporter",
            "iptables": "iptables",
            "ping": "iputils-ping",
            **probelab.FAKE_SERVERS,
        },
        install=args.install,
    )
    probelab.stop_on_signals()
    with tempfile.TemporaryDirectory(prefix="cw-accuracy-") as tmp, probelab.namespace() as ns:
        args.ns = ns
        print(asyncio.run(measure(args, Path(tmp))))


if __name__ == "__main__":
    main()
