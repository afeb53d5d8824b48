"""High availability with real processes: two collectors in remote-write mode behind a real
HAProxy (deploy/haproxy/haproxy.cfg as shipped, addresses from its environment variables),
three probes streaming through it with mTLS passed through, a real VictoriaMetrics. One
collector is SIGKILLed while batches flow; its probes reconnect through HAProxy to the other.
Afterwards the store holds every result each probe made, once (the probe's own numbering
counts them: as many outcome samples as results, each result's samples complete and at its
own time), the probes' spools are empty, and the survivor's status page shows every probe.

The collectors share nothing: each has its own state directory (deploy/README.md says why none
is needed)."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from promserver import ROOT, _ready, require, stop
from test_remote_e2e import (
    collector_config,
    collector_process,
    make_fleet,
    probe_config,
    running_store,
    spool,
    status_probes,
    stored_results,
    until,
)

from processes import courierwatch, scrape

pytestmark = [pytest.mark.integration]

HAPROXY = ROOT / "deploy" / "haproxy" / "haproxy.cfg"
HOSTS = ("127.0.0.2", "127.0.0.3")  # one per collector: the config gives both one health port
PROBES = ("pi-ha-1", "pi-ha-2", "pi-ha-3")


def free_ports(hosts: tuple[str, ...], count: int) -> list[int]:
    """`count` ports free on every one of `hosts` (when chosen)."""
    ports: list[int] = []
    for _ in range(50):
        with socket.socket() as first:
            first.bind((hosts[0], 0))
            port = first.getsockname()[1]
            try:
                for host in hosts[1:]:
                    with socket.socket() as other:
                        other.bind((host, port))
            except OSError:
                continue
        if port not in ports:
            ports.append(port)
        if len(ports) == count:
            return ports
    raise AssertionError(f"no {count} ports free on all of {hosts}")


@contextlib.asynccontextmanager
async def haproxy(tmp: Path, listen: int, grpc: int, http: int,
                  stats: int) -> AsyncIterator[str]:  # fmt: skip
    """HAProxy in the foreground with the shipped config; yields its stats URL once up."""
    env = {
        "COURIERWATCH_LISTEN": f"127.0.0.1:{listen}",
        "COURIERWATCH_COLLECTOR1": f"{HOSTS[0]}:{grpc}",
        "COURIERWATCH_COLLECTOR2": f"{HOSTS[1]}:{grpc}",
        "COURIERWATCH_HEALTH_PORT": str(http),
        "COURIERWATCH_HAPROXY_STATS": f"127.0.0.1:{stats}",
        "COURIERWATCH_MAXCONN": "100",  # within this process's file descriptor limit
    }
    with (tmp / "haproxy.log").open("ab") as sink:
        process = await asyncio.create_subprocess_exec(
            require("haproxy"), "-db", "-f", str(HAPROXY), env=env,
            stdout=sink, stderr=sink, stdin=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{stats}/stats"
        assert await _ready(url, process), (tmp / "haproxy.log").read_text()[-3000:]
        yield url
    finally:
        await stop(process)


async def servers_up(stats: str) -> dict[str, bool]:
    """Per collector, whether HAProxy has it up (its health checks pass)."""
    async with aiohttp.ClientSession() as session, session.get(stats + ";csv") as response:
        text = (await response.text()).removeprefix("# ")
    rows = csv.DictReader(io.StringIO(text))
    return {row["svname"]: row["status"] == "UP" for row in rows if row["pxname"] == "collectors"}


async def probes_up(url: str) -> set[str]:
    return {probe for probe, view in (await status_probes(url)).items() if view["up"]}


async def test_a_collector_killed_mid_batch_loses_nothing_and_stores_nothing_twice(tmp_path, apple):
    fleet = make_fleet(tmp_path, list(PROBES))
    grpc, http, listen, stats = free_ports(HOSTS, 4)
    async with (
        running_store("victoria-metrics", tmp_path) as store,
        collector_process(collector_config(tmp_path, "collector1", fleet, store, HOSTS[0],
                                           grpc, http)) as (one, _, url_one),
        collector_process(collector_config(tmp_path, "collector2", fleet, store, HOSTS[1],
                                           grpc, http)) as (two, _, url_two),
        haproxy(tmp_path, listen, grpc, http, stats) as balancer,
        contextlib.AsyncExitStack() as probes,
    ):  # fmt: skip

        async def both_up() -> bool:
            return all((await servers_up(balancer)).values())

        await until("HAProxy has both collectors up", 15, both_up)
        processes = {
            probe_id: await probes.enter_async_context(courierwatch(
                "probe", "--config",
                probe_config(tmp_path, apple, fleet, probe_id, f"127.0.0.1:{listen}")))
            for probe_id in PROBES
        }  # fmt: skip

        async def spread() -> tuple[set[str], set[str]] | None:
            on_one, on_two = await probes_up(url_one), await probes_up(url_two)
            return (on_one, on_two) if len(on_one | on_two) == len(PROBES) else None

        on_one, on_two = await until("every probe streams to a collector", 20, spread)
        assert on_one and on_two, "leastconn spreads the probes over both"
        assert not on_one & on_two  # one identity, one stream
        # The collector with more probes dies, while their batches flow.
        victim, victim_url, survivor_url, moved = (
            (one, url_one, url_two, on_one) if len(on_one) >= len(on_two)
            else (two, url_two, url_one, on_two)
        )  # fmt: skip

        async def victim_storing() -> bool:
            probes = await status_probes(victim_url)
            sent = (await scrape(victim_url + "/metrics")).get(
                ("courierwatch_remote_write_samples_sent_total", ()), 0
            )
            return min(probes[probe]["applied"] for probe in moved) >= 8 and sent > 0

        await until("the victim applies and stores its probes' results", 20, victim_storing)
        victim.kill()
        await victim.wait()

        async def all_on_survivor() -> bool:
            return await probes_up(survivor_url) == set(PROBES)

        await until("every probe streams to the survivor", 30, all_on_survivor)
        async with aiohttp.ClientSession() as session:
            async with session.get(survivor_url + "/") as response:
                page = await response.text()
            async with session.get(survivor_url + "/api/status") as response:
                status = await response.json()
        shown = {p["probe"] for site in status["sites"] for p in site["probes"]}
        assert shown == set(PROBES)
        assert all(probe in page for probe in PROBES)

        # A few more results through the survivor, then the probes stop (after their acks).
        before = {probe: spool(tmp_path, probe)[2] for probe in PROBES}

        async def more_made() -> bool:
            return all(spool(tmp_path, p)[2] >= before[p] + 8 for p in PROBES)

        await until("the probes go on measuring", 15, more_made)
        for process in processes.values():
            process.send_signal(signal.SIGTERM)
        for probe_id, process in processes.items():
            assert await asyncio.wait_for(process.wait(), 15) == 0, probe_id
        applied = {probe: view["applied"] for probe, view in
                   (await status_probes(survivor_url)).items()}  # fmt: skip
        stored = await stored_results(store)

    made = {}
    for probe in PROBES:
        _, left, made[probe] = spool(tmp_path, probe)
        assert left == 0, f"{probe}: {left} results never acknowledged"
    per_probe = {probe: sum(len(times) for check, times in stored.items() if check[1] == probe)
                 for probe in PROBES}  # fmt: skip
    assert per_probe == made  # none lost, none twice
    # The survivor applied part of it (what reached it), never more than the store holds;
    # of the moved probes, less (the victim stored the rest).
    assert all(applied[probe] <= per_probe[probe] for probe in PROBES), (applied, per_probe)
    assert any(applied[probe] < per_probe[probe] for probe in moved), (applied, per_probe)
