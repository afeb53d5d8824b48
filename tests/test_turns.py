"""Batches take turns on the event loop (collector/turns.py): one per turn, in order; and a
batch that waits says so to its probe (collector/ingest.py's Busy)."""

import asyncio
import itertools
import math

import grpc
import pytest

from courierwatch.collector.config import Limits
from courierwatch.collector.ingest import Ingest, busy_every
from courierwatch.collector.state import State
from courierwatch.collector.store import Store
from courierwatch.collector.turns import Turns
from courierwatch.v1 import courierwatch_pb2 as pb
from courierwatch.v1 import courierwatch_pb2_grpc as pb_grpc


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


async def test_the_batches_waiting_and_their_wait_are_counted():
    """/metrics shows both (courierwatch_collector_batches_waiting, _batch_wait_seconds_total):
    a queue that stays long is the collector's core at its limit."""
    turns = Turns()
    seen: list[int] = []  # turns.waiting as each batch ran

    async def batch() -> None:
        async with turns.turn():
            seen.append(turns.waiting)

    async with turns.turn():  # a batch in its turn, four more come meanwhile
        batches = [asyncio.create_task(batch()) for _ in range(4)]
        for _ in range(10):  # bounded: they queue in their first step
            if turns.waiting == 4:
                break
            await asyncio.sleep(0)
        assert turns.waiting == 4
    await asyncio.gather(*batches)
    assert seen == [3, 2, 1, 0]
    assert turns.waiting == 0
    assert turns.waited > 0


@pytest.mark.parametrize(
    ("ack_timeout", "every"),
    [(30.0, 10.0), (0.0, 10.0), (1.0, 1 / 3), (1e-9, 0.25), (-5.0, 10.0), (3600.0, 20.0),
     (math.nan, 10.0), (math.inf, 10.0)],
)  # fmt: skip
def test_busy_comes_at_a_third_of_the_probes_ack_timeout_within_bounds(ack_timeout, every):
    # A Hello's ack timeout is the probe's word: a hostile one must not make Busy cost anything.
    assert busy_every(ack_timeout) == pytest.approx(every)


async def test_a_wait_that_times_out_keeps_its_place_and_one_given_up_is_passed_over():
    """A stream waiting for its turn wakes up to say Busy to its probe, and must not lose its
    place for it; one whose stream ended while it waited is skipped, and not counted."""
    turns = Turns()
    first = turns.ask()
    assert first.granted
    patient, gone, last = turns.ask(), turns.ask(), turns.ask()
    assert turns.waiting == 3
    assert not await turns.wait(patient, 0.01)  # timed out: still in the queue, before `last`
    turns.end(gone)
    assert turns.waiting == 2
    turns.end(first)
    assert await turns.wait(patient, 5)
    assert not last.granted
    turns.end(patient)
    assert await turns.wait(last, 5)
    assert turns.waiting == 0
    turns.end(last)


async def test_a_batch_waiting_for_its_turn_gets_busy_then_its_ack(tmp_path):
    """Scrape mode over a real gRPC channel: while the loop's turn is held (here by the test,
    as by a queue of other batches on a saturated collector), the probe's batch waits, and the
    collector says Busy at a third of the probe's ack timeout; the Ack follows the turn."""
    state = State()
    store = Store(tmp_path / "collector.sqlite")
    await store.open()
    ingest = Ingest(state, store, authorization={}, limits=Limits(), require_identity=False)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((ingest.handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    held = state.turns.ask()  # the turn, taken before the probe's batch comes
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = pb_grpc.CollectorStub(channel).Report()
            hello = pb.Hello(site="busy", probe_id="pi-busy", ack_timeout_seconds=0.75)
            await call.write(pb.ProbeMessage(hello=hello))
            assert (await call.read()).HasField("welcome")
            result = pb.Result(seq=1, target="courier.push.apple.com", port=5223,
                               check="courier", group="push", outcome=pb.OUTCOME_OK)  # fmt: skip
            await call.write(pb.ProbeMessage(batch=pb.ResultBatch(results=[result])))
            async with asyncio.timeout(5):
                busy = await call.read()
                assert busy.HasField("busy"), busy
                assert busy.busy.held_seconds >= 0.25  # a third of 0.75 s
                assert state.busy_notices >= 1
                state.turns.end(held)
                while (answer := await call.read()).HasField("busy"):  # one may be under way
                    pass
            assert answer.ack.through_seq == 1
            await call.done_writing()
    finally:
        await server.stop(1)
        await store.close()


async def test_a_ticket_away_is_passed_over_keeps_its_place_and_takes_an_idle_turn_back():
    """A stream writing a Busy to a probe that does not read is away: the turn must not wait
    for it (it would stall the collector), nor may it lose its place."""
    turns = Turns()
    first = turns.ask()
    away, present, later = turns.ask(), turns.ask(), turns.ask()
    turns.away(away)
    turns.end(first)
    assert await turns.wait(present, 5)  # the turn skipped the ticket away
    assert not away.granted and turns.waiting == 2
    turns.back(away)  # back while the turn is taken: it waits, at the head
    turns.away(away)
    turns.end(present)
    assert await turns.wait(later, 5)
    turns.end(later)
    for _ in range(10):  # bounded: the pass runs in the loop's next turn
        await asyncio.sleep(0)
    assert not away.granted and turns.waiting == 1  # only it left, away: the turn is idle
    turns.back(away)
    assert away.granted and turns.waiting == 0
    turns.end(away)
    assert await turns.wait(turns.ask(), 5)  # nobody holds the turn after it
