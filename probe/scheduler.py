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
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from courierwatch.probe.checks.base import CheckContext
from courierwatch.probe.runner import run_check
from courierwatch.probe.targets import Target
from courierwatch.v1 import courierwatch_pb2 as pb

Emit = Callable[[pb.Result], None]
Series = tuple[str, int, str, str, str]


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
        rng: random.Random | None = None,
    ) -> None:
        self._targets = tuple(targets)
        self._ctx = ctx
        self._emit = emit
        self._concurrency = concurrency
        self._slots = asyncio.Semaphore(concurrency)
        self._jitter = jitter
        self._startup_spread = startup_spread
        self._rng = rng or random.Random()
        self.lag_seconds = 0.0  # how late the latest run started against its due time
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
        self, targets: Sequence[Target], ctx: CheckContext, *, concurrency: int, jitter: float
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
            await asyncio.sleep(max(0.0, due + spread - loop.time()))
            async with self._slots:  # read at each run: an update may replace cap and context
                self.lag_seconds = max(0.0, loop.time() - (due + spread))
                result = await run_check(target, self._ctx)
            self._emit(result)
            due += target.interval
            behind = loop.time() - due
            if behind > 0:  # skip the slots missed, keep the phase
                due += (behind // target.interval + 1) * target.interval


async def run_once(
    targets: Sequence[Target], ctx: CheckContext, *, concurrency: int = 32
) -> list[pb.Result]:
    """Every target once, concurrently under the cap; results in target order."""
    slots = asyncio.Semaphore(concurrency)

    async def one(target: Target) -> pb.Result:
        async with slots:
            return await run_check(target, ctx)

    return list(await asyncio.gather(*(one(t) for t in targets)))
