"""Keeps the collector's full garbage collections short, however big the fleet's state.

CPython's cyclic collector walks every tracked object in a full (generation 2) collection, and
it runs one whenever a quarter as many objects as are long-lived have become long-lived since
the last: a collector with 5,000 probes x 250 checks holds some 6 million such objects (each
check's latest result, its key tuples, its encoder and path-quality entries) and replaces a
quarter of them within a minute, so it would stop every event loop callback for ~2 s every
minute (0.43 s per full collection at 1,000 probes, measured: tests/bench/RESULTS.md). Every
FREEZE_SECONDS the objects alive then are moved to the permanent generation (gc.freeze), which
collections skip: full collections then walk only what became long-lived since. That is why
the period is short: at 5,000 probes a minute's worth made each full collection 0.2-0.7 s
(and one came every few seconds); 5 s' worth, 0.03-0.05 s. Freezing costs nothing per
object, but counting the frozen (gc.get_freeze_count) walks them all, so it is left out.

Frozen objects are still freed by reference counting, which is how the state's objects die
(none of them are in reference cycles); only a cycle that became garbage after reaching the
old generation and before a freeze would be kept. The young generations are collected first,
so that the cycles asyncio and gRPC leave behind (exceptions, frames) are gone before it.
"""

from __future__ import annotations

import asyncio
import gc

FREEZE_SECONDS = 5.0


def freeze() -> None:
    """Collect the young generations, freeze what is left."""
    gc.collect(1)
    gc.freeze()


async def freeze_periodically(period: float = FREEZE_SECONDS) -> None:
    while True:
        await asyncio.sleep(period)
        freeze()
