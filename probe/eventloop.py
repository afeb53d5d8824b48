"""Which event loop the probe runs on: uvloop's when it is installed (the optional `fast`
extra), else asyncio's own. Chosen once, at probe start, by COURIERWATCH_EVENT_LOOP: `auto`
(the default: uvloop if it imports), `uvloop` (it must) or `asyncio`.

Both measure the same way (the checks wait on raw sockets; the kernel stamps arrivals and
times connects), so the choice moves CPU, not figures: tests/bench/RESULTS-probe.md has both
on the footprint and the accuracy benchmark.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

ENV = "COURIERWATCH_EVENT_LOOP"
CHOICES = ("auto", "uvloop", "asyncio")

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def choose(choice: str | None = None) -> tuple[str, LoopFactory]:
    """(name, factory) of the loop to run on, by `choice` or else the environment; a
    ValueError (one line naming the variable) for a choice that cannot be had."""
    if choice is None:
        choice = os.environ.get(ENV) or "auto"
    if choice not in CHOICES:
        raise ValueError(f"{ENV}={choice!r}: must be one of {', '.join(CHOICES)}")
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise ValueError(
                    f"{ENV}=uvloop: uvloop is not installed (pip install 'courierwatch[fast]')"
                ) from None
        else:
            return "uvloop", uvloop.new_event_loop
    return "asyncio", asyncio.new_event_loop


def running() -> str:
    """The name of the loop this coroutine runs on, for the start-up log line."""
    module = type(asyncio.get_running_loop()).__module__
    return "uvloop" if module.startswith("uvloop") else "asyncio"
