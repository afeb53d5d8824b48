"""Benchmark of `courierwatch discover`: Pi-hole FTL rows per second, capture packets per second,
and peak memory, which must follow the number of distinct names, not of queries.

    python tests/bench/discover.py                 # 1 M FTL rows (v5 and v6), 200k+ packets
    python tests/bench/discover.py --rows 20000 --packets 4000 --names 200   # a quick look

The inputs are generated in a temporary folder (FTL databases with Pi-hole's own CREATE
statements, pcap and pcapng captures written with dpkt: queries, responses with CNAME chains,
blocked answers, TCP SYNs, other traffic). Each measurement runs in a fresh process
(`--child KIND PATH`) so its peak RSS (VmHWM) is its own: the reading alone, not the building.
Targets (issue 13): at least 200,000 FTL rows/s and 50,000 packets/s on the machine it runs on.
Wall-clock rates depend on what else the machine runs; records per CPU-second do not.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import random
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/, for data.make_sample

import dpkt  # noqa: E402
from data.make_sample import FTL_V5_SCHEMA, FTL_V6_SCHEMA, frame, message, tcp, udp  # noqa: E402

T0 = 1_764_576_000
RESOLVER = "192.168.10.2"
_APPLE = (
    "{n}-courier.push.apple.com", "gspe{n}-ssl.ls.apple.com", "p{n}-caldav.icloud.com",
    "is{n}-ssl.mzstatic.com", "cdn{n}.apple-livephotoskit.com", "e{n}.mesu.apple.com",
)  # fmt: skip


def names(count: int) -> list[str]:
    """count distinct names, a tenth of them Apple's (every tenth, so Apple's are among the
    popular names and the rare ones alike)."""
    return [
        _APPLE[i % len(_APPLE)].format(n=i) if i % 10 == 0 else f"host{i}.site{i % 97}.example.net"
        for i in range(count)
    ]


def popularity(count: int, uniform: bool) -> list[float]:
    """Cumulative weights for picking names: Zipf-like (s = 1.1), as DNS traffic is, where a
    few names take most queries; or uniform, the worst case (every query its own group)."""
    weights = [1.0 if uniform else 1.0 / (rank + 1) ** 1.1 for rank in range(count)]
    return list(itertools.accumulate(weights))


def build_ftl(path: Path, rows: int, distinct: int, schema: str, uniform: bool = False) -> None:
    rng = random.Random(1)
    pool = names(distinct)
    picks = rng.choices(range(distinct), cum_weights=popularity(distinct, uniform), k=rows)
    clients = [f"192.168.10.{n}" for n in range(10, 250)]
    statuses = [2] * 60 + [3] * 30 + [1] * 5 + [4, 5, 9, 16, 7]
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode = OFF")
    db.execute("PRAGMA synchronous = OFF")
    db.executescript(schema)
    v6 = "query_storage" in schema
    if v6:
        db.executemany("INSERT INTO domain_by_id (id, domain) VALUES (?, ?)", enumerate(pool, 1))
        db.executemany("INSERT INTO client_by_id (id, ip) VALUES (?, ?)", enumerate(clients, 1))
    batch = []
    for i, domain in enumerate(picks):
        client = rng.randrange(len(clients))
        row = (
            T0 + i // 20, rng.choice((1, 1, 1, 2, 16)), rng.choice(statuses),
            domain + 1 if v6 else pool[domain], client + 1 if v6 else clients[client],
        )  # fmt: skip
        batch.append(row)
        if len(batch) == 50_000:
            _insert(db, batch, v6)
            batch = []
    _insert(db, batch, v6)
    db.commit()
    db.close()


def _insert(db: sqlite3.Connection, batch: list[tuple], v6: bool) -> None:
    table = "query_storage" if v6 else "queries"
    db.executemany(
        f"INSERT INTO {table} (timestamp, type, status, domain, client) VALUES (?, ?, ?, ?, ?)",
        batch,
    )


def build_capture(path: Path, packets: int, distinct: int, pcapng: bool) -> int:
    """About packets frames: per lookup a query, its response (a CNAME chain for Apple names,
    0.0.0.0 for some) and, for one in four, the client's SYN; one in ten frames is other
    traffic. Payloads are made once per name and reused, so building stays quick."""
    rng = random.Random(2)
    pool = names(distinct)
    weights = popularity(distinct, uniform=False)
    replies = {}
    for index, name in enumerate(pool):
        apple = index < distinct // 10
        chain = (f"{name}.edgekey.net", f"e{index}.dsce9.akamaiedge.net") if apple else ()
        address = "0.0.0.0" if index % 50 == 0 else f"17.253.{index % 250}.{index % 199}"
        replies[name] = (message(name, ident=7),
                         message(name, ident=7, response=True, chain=chain, addresses=(address,)),
                         address)  # fmt: skip
    clients = [f"192.168.10.{n}" for n in range(10, 250)]
    other = frame("192.168.10.9", "93.184.215.14", udp(40000, 443, b"\x00" * 60))
    written = 0
    with path.open("wb") as file:
        writer = (dpkt.pcapng.Writer if pcapng else dpkt.pcap.Writer)(file)
        picks = iter(rng.choices(pool, cum_weights=weights, k=packets))
        while written < packets:
            name = next(picks)
            client = clients[rng.randrange(len(clients))]
            query, reply, address = replies[name]
            port = 1024 + written % 60000
            ts = T0 + written / 1000
            writer.writepkt(frame(client, RESOLVER, udp(port, 53, query)), ts=ts)
            writer.writepkt(frame(RESOLVER, client, udp(53, port, reply)), ts=ts + 0.0005)
            written += 2
            if written % 8 == 0:
                syn = tcp(port, 443, 1, dpkt.tcp.TH_SYN)
                writer.writepkt(frame(client, address, syn), ts=ts + 0.001)
                written += 1
            if written % 10 == 0:
                writer.writepkt(other, ts=ts + 0.002)
                written += 1
    return written


def child(kind: str, path: str) -> None:
    """Read one source into a tally and assess it, as the command does; print the figures."""
    from courierwatch.discover import ftl, pcap
    from courierwatch.discover.classify import assess
    from courierwatch.discover.tally import Tally
    from courierwatch.probe import catalog

    tally = Tally(pop_pattern=catalog.apple().pop_pattern)
    start, cpu = time.perf_counter(), time.process_time()
    stats = (ftl.read if kind == "ftl" else pcap.read)(path, tally, path)
    read, read_cpu = time.perf_counter() - start, time.process_time() - cpu
    found = assess(tally)
    total = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"records": stats.records, "used": stats.used, "skipped": stats.skipped,
                      "error": stats.error, "read_s": read, "cpu_s": read_cpu, "total_s": total,
                      "names": len(tally.names), "apple": len(found.entries),
                      "peak_rss_mb": peak_kb / 1024}))  # fmt: skip


def measure(kind: str, path: Path) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", kind, str(path)],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="FTL rows (default 1 M)")
    parser.add_argument("--packets", type=int, default=220_000, help="capture frames")
    parser.add_argument("--names", type=int, default=5_000, help="distinct names")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}\n")  # fmt: skip
    print("| input | records | distinct names | read s | records/s | CPU s | records/CPU-s "
          "| peak RSS MB |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="discover-bench-") as folder:
        base = Path(folder)
        runs = []
        for label, schema in (("FTL v6 (query_storage)", FTL_V6_SCHEMA),
                              ("FTL v5 (queries table)", FTL_V5_SCHEMA)):  # fmt: skip
            for rows, distinct, uniform in (
                (args.rows, args.names, False),
                (args.rows // 4, args.names, False),
                (args.rows, args.names * 4, False),
                (args.rows, args.names, True),
            ):
                path = base / f"ftl-{label[5]}-{rows}-{distinct}-{uniform}.db"
                build_ftl(path, rows, distinct, schema, uniform)
                runs.append((label + (", uniform" if uniform else ""), "ftl", path, distinct))
        for label, ng in (("pcap", False), ("pcapng", True)):
            for packets, distinct in ((args.packets, args.names),
                                      (args.packets // 4, args.names)):  # fmt: skip
                path = base / f"capture-{packets}-{distinct}.{label}"
                build_capture(path, packets, distinct, ng)
                runs.append((label, "pcap", path, distinct))
        for label, kind, path, distinct in runs:
            got = measure(kind, path)
            assert not got["error"], got["error"]
            rate, per_cpu = got["records"] / got["read_s"], got["records"] / got["cpu_s"]
            print(f"| {label} | {got['records']:,} | {distinct:,} ({got['apple']:,} Apple) | "
                  f"{got['read_s']:.2f} | {rate:,.0f} | {got['cpu_s']:.2f} | {per_cpu:,.0f} | "
                  f"{got['peak_rss_mb']:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
