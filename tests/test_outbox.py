"""Outbox: numbering, acknowledgement, the bound, and waking the sender."""

import asyncio

from courierwatch.probe.outbox import Outbox
from courierwatch.v1 import courierwatch_pb2 as pb


def test_results_are_numbered_in_order_and_leave_only_when_acked():
    box = Outbox()
    for _ in range(5):
        box.put(pb.Result(target="a"))
    seqs = [r.seq for r in box.after(0, 100)]
    assert seqs == list(range(seqs[0], seqs[0] + 5))
    box.ack(seqs[2])
    assert [r.seq for r in box.after(0, 100)] == seqs[3:]
    assert [r.seq for r in box.after(seqs[3], 100)] == seqs[4:]


def test_a_new_outbox_numbers_above_an_earlier_one():
    first = Outbox()
    first.put(pb.Result())
    second = Outbox()
    second.put(pb.Result())
    assert second.after(0, 1)[0].seq > first.after(0, 1)[0].seq


def test_the_oldest_is_dropped_and_counted_when_full():
    box = Outbox(capacity=3)
    for _ in range(5):
        box.put(pb.Result())
    assert len(box) == 3
    assert box.dropped == 2


def test_batches_are_bounded():
    box = Outbox()
    for _ in range(10):
        box.put(pb.Result())
    assert len(box.after(0, 4)) == 4


async def test_wait_after_wakes_on_a_new_result():
    box = Outbox()
    box.put(pb.Result())
    last = box.after(0, 1)[-1].seq
    waiter = asyncio.create_task(box.wait_after(last))
    await asyncio.sleep(0)
    assert not waiter.done()
    box.put(pb.Result())
    await asyncio.wait_for(waiter, 1)
