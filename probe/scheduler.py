"""Owns time: runs each target on its own cadence, spread out, capped, never overlapping itself.

One loop per target. The first run of each lands at a random point of the first
`startup_spread` seconds (or of its interval, if shorter), so a probe's checks do not all
fire together yet every check has a result soon after start; each later run is due one
interval after the last due time (not after the run ended, so the cadence does not drift),
moved by a random jitter that keeps spreading the checks out.
A run that could not start on time (all slots busy) is late, never doubled up: missed slots
are skipped. A semaphore caps how many checks run at once across all targets.
`update` takes a new configuration while running: the loops of targets that went or changed
are cancelled, new ones start as at startup, and unchanged ones keep their phase.

Runs start on a grid (`tick` seconds on the loop's clock): a run due between two ticks waits
for the next one. Waking the process costs more than most of a check's own work (caches gone
cold after the idle gap), and checks started together also get their answers together, so
they share every wake-up after it. The automatic tick holds about BATCH runs, however many
targets there are; it is a small part of any interval, so the spread and cadence stand.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from courierwatch.probe.checks.base import CheckContext
from courierwatch.probe.runner import run_check
from courierwatch.probe.targets import Target
from courierwatch.v1 import courierwatch_pb2 as pb

Emit = Callable[[pb.Result], None]
Series = tuple[str, int, str, str, str]

BATCH = 2.0  # runs per tick, on average, with the automatic tick
TICKS = (0.02, 1.0)  # bounds of the automatic tick, seconds


def auto_tick(targets: Sequence[Target]) -> float:
    """The grid step that gives about BATCH runs per tick for these targets."""
    runs_per_second = sum(1.0 / target.interval for target in targets)
    if not runs_per_second:
        return TICKS[1]
    return min(max(BATCH / runs_per_second, TICKS[0]), TICKS[1])


@dataclass(frozen=True, slots=True)
class Changes:
    """What an update did to the running loops, by target series."""

    added: int
    removed: int
    changed: int  # same series, other settings: restarted


class Scheduler:
    def __init__(
        self,
        targets: Sequence[Target],
        ctx: CheckContext,
        emit: Emit,
        *,
        concurrency: int = 32,
        jitter: float = 0.1,
        startup_spread: float = 10.0,
        tick: float | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """`tick`: seconds between the instants runs start at (0: each run at its own
        time); None: auto_tick of the targets (update() takes the same)."""
        self._targets = tuple(targets)
        self._ctx = ctx
        self._emit = emit
        self._concurrency = concurrency
        self._slots = asyncio.Semaphore(concurrency)
        self._jitter = jitter
        self._startup_spread = startup_spread
        self._tick = auto_tick(targets) if tick is None else tick
        self._rng = rng or random.Random()
        self.lag_seconds = 0.0  # how late the latest run started against its tick
        self._group: asyncio.TaskGroup | None = None  # while run() runs
        self._loops: dict[Series, asyncio.Task[None]] = {}  # while run() runs: one per target

    async def run(self) -> None:
        """Run every target's loop until cancelled (targets may come and go by update())."""
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                for target in self._targets:
                    self._start(target)
                await asyncio.get_running_loop().create_future()  # only cancelling ends it
        finally:
            self._group = None
            self._loops.clear()

    def update(
        self,
        targets: Sequence[Target],
        ctx: CheckContext,
        *,
        concurrency: int,
        jitter: float,
        tick: float | None = None,
    ) -> Changes:
        """Check `targets` with `ctx` from now on. A run in flight of a target that went or
        changed is abandoned; runs in flight of the others finish with the context they began
        with. A new cap applies to runs that start from now on."""
        new = {target.series: target for target in targets}
        old = {target.series: target for target in self._targets}
        gone = [series for series in old if series not in new]
        changed = [series for series in new if series in old and old[series] != new[series]]
        added = [series for series in new if series not in old]
        self._targets = tuple(new.values())
        self._ctx = ctx
        self._jitter = jitter
        self._tick = auto_tick(self._targets) if tick is None else tick
        if concurrency != self._concurrency:
            self._concurrency = concurrency
            self._slots = asyncio.Semaphore(concurrency)
        if self._group is not None:
            for series in (*gone, *changed):
                self._loops.pop(series).cancel()
            for series in (*changed, *added):
                self._start(new[series])
        return Changes(added=len(added), removed=len(gone), changed=len(changed))

    def _start(self, target: Target) -> None:
        assert self._group is not None
        task = self._group.create_task(self._loop(target), name=f"check {target.series}")
        self._loops[target.series] = task

    async def _loop(self, target: Target) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + self._rng.uniform(0, min(target.interval, self._startup_spread))
        while True:
            spread = self._rng.uniform(-self._jitter, self._jitter) * target.interval
            start = self._on_grid(due + spread)
            await _sleep_until(loop, start)
            async with self._slots:  # read at each run: an update may replace cap and context
                self.lag_seconds = max(0.0, loop.time() - start)
                result = await run_check(target, self._ctx)
            self._emit(result)
            due += target.interval
            behind = loop.time() - due
            if behind > 0:  # skip the slots missed, keep the phase
                due += (behind // target.interval + 1) * target.interval

    def _on_grid(self, when: float) -> float:
        tick = self._tick
        return math.ceil(when / tick) * tick if tick > 0 else when


async def _sleep_until(loop: asyncio.AbstractEventLoop, when: float) -> None:
    """Sleep until `when` on the loop's clock. Unlike asyncio.sleep(when - now), runs due at
    the same instant get timers for exactly that instant, which the loop fires together."""
    waiter: asyncio.Future[None] = loop.create_future()
    timer = loop.call_at(when, _wake, waiter)
    try:
        await waiter
    finally:
        timer.cancel()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():  # cancelled meanwhile
        waiter.set_result(None)


async def run_once(
    targets: Sequence[Target], ctx: CheckContext, *, concurrency: int = 32
) -> list[pb.Result]:
    """Every target once, concurrently under the cap; results in target order."""
    slots = asyncio.Semaphore(concurrency)

    async def one(target: Target) -> pb.Result:
        async with slots:
            return await run_check(target, ctx)

    return list(await asyncio.gather(*(one(t) for t in targets)))
