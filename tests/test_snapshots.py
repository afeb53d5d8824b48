"""The status snapshot kept for its readers (collector/snapshots.py): a request gets a recent
one at once, a change shows within `fresh` while someone reads, and making one of many probes
lets the event loop run in between."""

from __future__ import annotations

import asyncio
import contextlib
import json

import aiohttp
from aiohttp import web
from test_status_page import Fleet

from courierwatch.collector import status
from courierwatch.collector.snapshots import Snapshots
from courierwatch.v1 import courierwatch_pb2 as pb


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def probes(made) -> dict[str, dict]:
    return {p["probe"]: p for site in made.snapshot["sites"] for p in site["probes"]}


async def test_a_request_gets_the_latest_while_fresh_and_a_new_one_after():
    fleet, clock = Fleet(), Clock()
    snapshots = Snapshots(fleet.state, fresh=1.0, clock=clock)
    first = await snapshots.latest()
    assert json.loads(first.body) == first.snapshot
    assert first.snapshot["sites"] == status.snapshot(fleet.state)["sites"]
    fleet.report(fleet.ams, couriers=(pb.OUTCOME_REFUSED, pb.OUTCOME_REFUSED))
    clock.now += 0.5
    assert await snapshots.latest() is first  # within `fresh`: as it was
    clock.now += 0.6
    second = await snapshots.latest()
    assert second is not first
    assert probes(second)["pi-ams-1"]["state"] != probes(first)["pi-ams-1"]["state"]


async def test_while_read_the_background_keeps_it_current():
    fleet = Fleet()
    snapshots = Snapshots(fleet.state, fresh=0.01)
    runner = asyncio.create_task(snapshots.run())
    try:
        before = await snapshots.latest()
        assert probes(before)["pi-ams-1"]["failing"] == 0
        fleet.report(fleet.ams, couriers=(pb.OUTCOME_REFUSED, pb.OUTCOME_REFUSED))
        for _ in range(200):  # bounded: 2 s at most
            made = await snapshots.latest()
            if probes(made)["pi-ams-1"]["failing"]:
                break
            await asyncio.sleep(0.01)
        assert probes(made)["pi-ams-1"]["failing"] == 2
        assert made.at > before.at
    finally:
        runner.cancel()


async def test_making_one_of_many_probes_lets_the_loop_run():
    fleet = Fleet()
    for n in range(250):
        fleet.report(fleet.probe(f"site-{n:03}", f"pi-{n:03}"), couriers=(pb.OUTCOME_OK,) * 2)
    steps = list(status.snapshot_steps(fleet.state, {}, chunk=100))
    assert steps[:-1] == [None, None] and steps[-1]["sites"]  # 256 probes, by 100
    turns = 0

    async def other() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    beside = asyncio.create_task(other())
    await asyncio.sleep(0)
    started = turns
    made = await Snapshots(fleet.state).latest()
    beside.cancel()
    assert len(probes(made)) == 256
    assert turns - started >= 2  # it ran between the chunks


def many(count: int) -> Fleet:
    fleet = Fleet()
    for n in range(count):
        fleet.report(fleet.probe(f"site-{n:03}", f"pi-{n:03}"), couriers=(pb.OUTCOME_OK,) * 2)
    return fleet


async def test_no_request_waits_longer_than_the_patience_for_a_snapshot():
    fleet, clock = many(60), Clock()  # 66 probes: three turns of the loop to make
    snapshots = Snapshots(fleet.state, patience=0.0, clock=clock)
    assert await snapshots.latest() is None  # none yet: the first is still being made
    snapshots.patience = 10.0
    first = await snapshots.latest()  # the same making, finished
    assert first is not None and len(probes(first)) == 66
    clock.now += 120  # too old to serve at once
    snapshots.patience = 0.0
    assert await snapshots.latest() is first  # the one there is, while a new one is made
    snapshots.patience = 10.0
    newer = await snapshots.latest()
    assert newer is not None and newer.at > first.at


@contextlib.asynccontextmanager
async def serving(snapshots: Snapshots):
    app = web.Application()
    app.add_routes(status.routes(snapshots))
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        async with aiohttp.ClientSession() as session:
            yield session, f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_the_api_says_503_while_the_first_snapshot_is_made():
    async with serving(Snapshots(many(60).state, patience=0.0)) as (session, url):
        response = await session.get(url + "/api/status")
        body = await response.json()
    assert response.status == 503 and response.headers["Retry-After"] == "1"
    assert body["making"]


async def test_the_page_comes_without_data_while_the_first_snapshot_is_made():
    async with serving(Snapshots(many(60).state, patience=0.0)) as (session, url):
        response = await session.get(url + "/")
        page = await response.text()
    assert response.status == 200
    assert '<script id="initial" type="application/json">null</script>' in page
    assert "if (initial) render(initial); else making();" in page
