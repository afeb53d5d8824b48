"""Batches take turns on the event loop (collector/turns.py): one per turn, in order."""

import asyncio
import itertools

from courierwatch.collector.turns import Turns


async def test_one_batch_per_turn_of_the_loop_in_the_order_they_came():
    turns = Turns()
    done: list[int] = []  # batch numbers, as each ran
    ticks: list[int] = []  # len(done) at each turn of a bystander (a request's next step)

    async def batch(number: int) -> None:
        async with turns.turn():
            done.append(number)

    async def bystander() -> None:
        for _ in range(100):  # bounded: 20 batches need about 40 turns
            ticks.append(len(done))
            if len(done) == 20:
                return
            await asyncio.sleep(0)

    watching = asyncio.create_task(bystander())
    await asyncio.gather(*(batch(n) for n in range(20)))
    await watching
    assert done == list(range(20))
    # Between two of its turns, the bystander saw at most one batch run.
    assert max(b - a for a, b in itertools.pairwise(ticks)) <= 1
    assert ticks[-1] == 20
