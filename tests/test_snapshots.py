"""The status snapshot kept for its readers (collector/snapshots.py): a request gets a recent
one at once, a change shows within `fresh` while someone reads, and making one of many probes
lets the event loop run in between."""

from __future__ import annotations

import asyncio
import json

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
