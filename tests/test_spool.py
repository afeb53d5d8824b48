"""The probe's durable spool: numbering, batching, acknowledgement, bounds, crash safety."""

import asyncio
import signal
import sqlite3
import sys
import textwrap

import pytest

from courierwatch.probe.spool import Spool
from courierwatch.v1 import courierwatch_pb2 as pb


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def spool(tmp_path):
    spool = Spool(tmp_path / "spool.sqlite")
    await spool.open()
    yield spool
    await spool.close()


def results(n, target="a.apple.com"):
    return [pb.Result(target=target, port=443, check="tls") for _ in range(n)]


async def test_only_flushed_results_are_offered(spool):
    for r in results(3):
        spool.put(r)
    assert await spool.after(0, 10) == []
    await spool.flush()
    assert [r.seq for r in await spool.after(0, 10)] == [1, 2, 3]
    assert spool.stats().depth == 3


async def test_ack_removes_and_numbers_are_never_reused(tmp_path):
    path = tmp_path / "spool.sqlite"
    first = Spool(path)
    await first.open()
    for r in results(5):
        first.put(r)
    await first.flush()
    await first.ack(5)
    assert first.stats().depth == 0
    await first.close()
    again = Spool(path)
    await again.open()
    fresh = pb.Result()
    again.put(fresh)
    assert fresh.seq == 6
    await again.close()


async def test_unacknowledged_results_survive_a_reopen(tmp_path):
    path = tmp_path / "spool.sqlite"
    first = Spool(path)
    await first.open()
    for r in results(4):
        first.put(r)
    await first.flush()
    await first.ack(2)
    await first.close()
    again = Spool(path)
    await again.open()
    assert [r.seq for r in await again.after(0, 10)] == [3, 4]
    await again.close()


async def test_one_transaction_per_flush_not_per_result(spool, tmp_path):
    for r in results(200):
        spool.put(r)
    observer = sqlite3.connect(tmp_path / "spool.sqlite")
    assert observer.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 0
    await spool.flush()
    assert observer.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 200
    observer.close()


async def test_the_age_bound_drops_the_oldest_and_counts_them(tmp_path):
    clock = Clock()
    spool = Spool(tmp_path / "s.sqlite", max_age=100, clock=clock)
    await spool.open()
    for r in results(3):
        spool.put(r)
    await spool.flush()
    clock.now += 150
    for r in results(2):
        spool.put(r)
    await spool.flush()
    assert [r.seq for r in await spool.after(0, 10)] == [4, 5]
    assert spool.stats().dropped == 3
    await spool.close()
    again = Spool(tmp_path / "s.sqlite", clock=clock)
    await again.open()
    assert again.stats().dropped == 3  # persisted, so the probe's health survives a restart
    await again.close()


async def test_the_size_bound_keeps_the_newest(tmp_path):
    one = len(results(1)[0].SerializeToString()) + 2  # seq adds a couple of bytes
    spool = Spool(tmp_path / "s.sqlite", max_bytes=one * 10)
    await spool.open()
    for r in results(25):
        spool.put(r)
    await spool.flush()
    kept = [r.seq for r in await spool.after(0, 100)]
    assert kept[-1] == 25
    assert spool.stats().bytes <= one * 10
    assert spool.stats().dropped == 25 - len(kept)
    await spool.close()


async def test_a_full_batch_flushes_before_the_interval(tmp_path):
    spool = Spool(tmp_path / "s.sqlite", flush_interval=60, flush_size=10)
    await spool.open()
    flusher = asyncio.create_task(spool.run_flusher())
    for r in results(10):
        spool.put(r)
    await asyncio.wait_for(spool.wait_after(9), 5)
    flusher.cancel()
    await spool.close()


async def test_the_flusher_stops_when_cancelled_as_a_batch_fills(tmp_path):
    """A shutdown that cancels the flusher in the turn in which a batch fills must stop it:
    asyncio.wait_for on 3.11 returns the finished wait instead, and the flusher ran on."""
    spool = Spool(tmp_path / "s.sqlite", flush_interval=60, flush_size=1)
    await spool.open()
    flusher = asyncio.create_task(spool.run_flusher())
    await asyncio.sleep(0)  # the flusher is waiting for a full batch
    spool.put(results(1)[0])  # the batch is full, in the same turn as
    flusher.cancel()  # the shutdown
    done, _ = await asyncio.wait({flusher}, timeout=5)
    try:
        assert flusher in done and flusher.cancelled()
    finally:
        flusher.cancel()
        await spool.close()


CHILD = textwrap.dedent("""
    import asyncio, os, signal, sys
    from courierwatch.probe.spool import Spool
    from courierwatch.v1 import courierwatch_pb2 as pb

    async def main():
        spool = Spool(sys.argv[1])
        await spool.open()
        for _ in range(50):
            spool.put(pb.Result(target="a"))
        await spool.flush()
        await spool.ack(20)
        print("flushed", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
""")


async def test_a_killed_process_loses_nothing_it_flushed(tmp_path):
    path = tmp_path / "spool.sqlite"
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, str(path), stdout=asyncio.subprocess.PIPE)
    try:
        line = await asyncio.wait_for(child.stdout.readline(), 30)
        assert line.strip() == b"flushed"
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
    spool = Spool(path)
    await spool.open()
    assert [r.seq for r in await spool.after(0, 100)] == list(range(21, 51))
    await spool.close()


async def test_rebase_renumbers_above_what_the_collector_has_seen(tmp_path):
    spool = Spool(tmp_path / "s.sqlite")
    await spool.open()
    for r in results(3):
        spool.put(r)
    await spool.flush()
    spool.put(pb.Result(target="waiting"))  # not yet flushed: renumbered too
    await spool.rebase(100)
    await spool.flush()
    seqs = [r.seq for r in await spool.after(100, 10)]
    assert len(seqs) == 4 and seqs == sorted(seqs) and seqs[0] > 100
    assert spool.durable_through == seqs[-1]
    await spool.close()
    again = Spool(tmp_path / "s.sqlite")
    await again.open()
    fresh = pb.Result()
    again.put(fresh)
    assert fresh.seq == seqs[-1] + 1  # the new numbering is what survives a restart
    await again.close()
