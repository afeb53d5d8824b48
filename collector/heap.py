"""Keeps the collector's full garbage collections short, however big the fleet's state.

CPython's cyclic collector walks every tracked object in a full (generation 2) collection, and
it runs one whenever a quarter as many objects as are long-lived have become long-lived since
the last: a collector with 5,000 probes x 250 checks holds some 6 million such objects (each
check's latest result, its key tuples, its encoder and path-quality entries) and replaces a
quarter of them within a minute, so it would stop every event loop callback for ~2 s every
minute (0.43 s per full collection at 1,000 probes, measured: tests/bench/RESULTS.md). Every
FREEZE_SECONDS the objects alive then are moved to the permanent generation (gc.freeze), which
collections skip: full collections then walk only what became long-lived since.

Frozen objects are still freed by reference counting, which is how the state's objects die
(none of them are in reference cycles); only a cycle that became garbage after reaching the
old generation and before a freeze would be kept. The young generations are collected first,
so that the cycles asyncio and gRPC leave behind (exceptions, frames) are gone before it.
"""

from __future__ import annotations

import asyncio
import gc

FREEZE_SECONDS = 60.0


def freeze() -> int:
    """Collect the young generations, freeze what is left; how many objects are frozen."""
    gc.collect(1)
    gc.freeze()
    return gc.get_freeze_count()


async def freeze_periodically(period: float = FREEZE_SECONDS) -> None:
    while True:
        await asyncio.sleep(period)
        freeze()
