"""Waiting on another process, which offers no event to await: ask it again, a bounded number
of times, until it says what the test waits for."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def until(
    what: str | Callable[[], str],
    seconds: float,
    check: Callable[[], Awaitable[T]],
    *,
    every: float = 0.2,
    passing: tuple[type[BaseException], ...] = (),
) -> T:
    """Calls `check()` every `every` seconds until it returns something truthy, and returns
    that. Exceptions of the kinds in `passing` (a daemon starting or restarting) count as
    not yet. Fails after `seconds`, saying `what` (or what `what()` says then) did not come."""
    try:
        async with asyncio.timeout(seconds):
            while True:
                with contextlib.suppress(*passing):
                    if found := await check():
                        return found
                await asyncio.sleep(every)
    except TimeoutError:
        said = what if isinstance(what, str) else what()
        raise AssertionError(f"not within {seconds} s: {said}") from None
