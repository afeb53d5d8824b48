"""Scheduler: spread, cap, no overlap, timeouts that never stall the others."""

import asyncio
import itertools
import random

import pytest

from courierwatch.probe import catalog, checks
from courierwatch.probe.checks.base import CheckContext
from courierwatch.probe.net.resolver import Resolver
from courierwatch.probe.scheduler import Scheduler, auto_tick, run_once
from courierwatch.probe.targets import Target
from courierwatch.probe.trust import TrustStore
from courierwatch.v1 import courierwatch_pb2 as pb


class Probe:
    """A check kind of the test's own, registered like any other: records what runs when."""

    def __init__(self, seconds: float = 0.0, hang: frozenset[str] = frozenset()) -> None:
        self.seconds = seconds
        self.hang = hang
        self.running: dict[str, int] = {}
        self.peak = 0
        self.peak_per_target = 0
        self.starts: list[tuple[float, str]] = []

    async def __call__(self, target, ctx, result):
        loop = asyncio.get_running_loop()
        self.starts.append((loop.time(), target.host))
        self.running[target.host] = self.running.get(target.host, 0) + 1
        self.peak = max(self.peak, sum(self.running.values()))
        self.peak_per_target = max(self.peak_per_target, self.running[target.host])
        try:
            if target.host in self.hang:
                await asyncio.Event().wait()
            await asyncio.sleep(self.seconds)
        finally:
            self.running[target.host] -= 1


@pytest.fixture
def fake_kind(monkeypatch):
    def install(kind: Probe) -> Probe:
        monkeypatch.setitem(checks.CHECKS, "fake", kind)
        return kind
    return install


CTX = CheckContext(
    resolver=Resolver(["127.0.0.1"]),
    trust=TrustStore(),
    apple_ranges=catalog.apple().ranges,
    pop_pattern=catalog.apple().pop_pattern,
)


def targets(n: int, interval: float, timeout: float = 5.0):
    return [Target(host=f"192.0.2.{i}", port=1, check="fake", interval=interval, timeout=timeout)
            for i in range(n)]


class Sink(list):
    """Collects emitted results; `enough` is set once `count` arrived."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self.count = count
        self.enough = asyncio.Event()

    def __call__(self, result: pb.Result) -> None:
        self.append(result)
        if len(self) >= self.count:
            self.enough.set()


async def collect(scheduler: Scheduler, sink: Sink) -> None:
    task = asyncio.create_task(scheduler.run())
    try:
        await asyncio.wait_for(sink.enough.wait(), 10)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_concurrency_cap_holds(fake_kind):
    kind = fake_kind(Probe(seconds=0.05))
    sink = Sink(24)
    scheduler = Scheduler(targets(12, interval=0.1), CTX, sink, concurrency=3,
                          jitter=0.0, rng=random.Random(1))
    await collect(scheduler, sink)
    assert kind.peak == 3


async def test_a_slow_check_never_overlaps_itself(fake_kind):
    kind = fake_kind(Probe(seconds=0.12))
    sink = Sink(4)
    scheduler = Scheduler(targets(1, interval=0.05), CTX, sink, concurrency=8,
                          jitter=0.0, rng=random.Random(1))
    await collect(scheduler, sink)
    assert kind.peak_per_target == 1
    starts = [t for t, _ in kind.starts]
    # missed slots are skipped, not queued up to run back to back
    assert all(b - a >= 0.11 for a, b in itertools.pairwise(starts))


async def test_first_runs_are_spread_over_the_interval(fake_kind):
    kind = fake_kind(Probe())
    sink = Sink(20)
    begin = asyncio.get_running_loop().time()
    scheduler = Scheduler(targets(20, interval=0.5), CTX, sink, concurrency=32,
                          jitter=0.0, rng=random.Random(7))
    await collect(scheduler, sink)
    firsts = sorted({host: t - begin for t, host in reversed(kind.starts)}.values())
    assert firsts[-1] - firsts[0] > 0.25  # not a thundering herd
    assert firsts[-1] < 0.5 + 0.1


async def test_runs_start_together_on_the_tick_grid(fake_kind):
    # Spread at random, 24 starts would almost never all sit in the first half of a 0.1 s
    # tick (2**-24), nor fit on 7 instants.
    kind = fake_kind(Probe())
    sink = Sink(24)
    scheduler = Scheduler(targets(12, interval=0.3), CTX, sink, concurrency=32,
                          jitter=0.1, tick=0.1, rng=random.Random(3))
    await collect(scheduler, sink)
    starts = [t for t, _ in kind.starts[:24]]
    assert all(t % 0.1 < 0.05 for t in starts), [round(t % 0.1, 3) for t in starts]
    instants = {round(t / 0.1) for t in starts}
    assert len(instants) <= 8 < len(starts)


def test_the_automatic_tick_holds_about_two_runs():
    assert auto_tick(targets(1200, interval=30)) == pytest.approx(0.05)  # 40 runs/s
    assert auto_tick(targets(1, interval=300)) == 1.0  # at most a second
    assert auto_tick(targets(10_000, interval=1)) == 0.02  # at least 20 ms
    assert auto_tick([]) == 1.0


async def test_a_hanging_check_times_out_and_the_others_go_on(fake_kind):
    fake_kind(Probe(hang=frozenset({"192.0.2.0"})))
    results = await asyncio.wait_for(
        run_once(targets(3, interval=1, timeout=0.2), CTX, concurrency=3), timeout=5
    )
    assert [r.outcome for r in results] == [pb.OUTCOME_TIMEOUT, pb.OUTCOME_OK, pb.OUTCOME_OK]
    assert 0.2 <= results[0].phases.total < 1.0
    assert results[0].detail == "no answer in time"
