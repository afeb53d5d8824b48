"""Batches take turns on the event loop, so that requests are served between them.

asyncio runs every callback that is ready when a turn of its loop begins before it looks at
the sockets again. With thousands of streams, hundreds of batches are ready at once when the
collector is busy; applied and encoded in one turn (some 10 ms each at 250 results), that turn
lasted seconds, and an HTTP request, which needs a handful of turns, waited for as many: at
5,000 probes x 250 checks /healthz took up to 1.7 s (tests/bench/modes.py --fleet 5000). With
one batch per turn a request waits for a batch or two per step instead. The work is the same,
so is the throughput; a batch waits for its turn in the order it came. What waits is at
most one message per stream (a stream reads its next only after its turn), as before.

A turn is asked for as a future, so that a stream can do something else while it waits (tell
its probe it is busy) without losing its place, which a cancelled lock acquire would.

How many batches wait, and how long they waited in all, are on /metrics: the collector's
saturation signal (a queue that stays long means the core is full, before requests slow).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator


class Ticket:
    """A batch's place in the queue for a turn."""

    __slots__ = ("asked", "away", "future", "gone", "granted")

    def __init__(self, future: asyncio.Future[None], asked: float, granted: bool) -> None:
        self.future = future  # done once granted (a fresh one after each wait that timed out)
        self.asked = asked
        self.granted = granted
        self.gone = False  # its stream gave up waiting
        self.away = False  # its stream is busy elsewhere (writing to its probe): passed over


class Turns:
    def __init__(self) -> None:
        self._queue: deque[Ticket] = deque()
        self._taken = False  # a batch has the turn, or it is being passed on
        self.waiting = 0  # batches waiting for their turn now
        self.waited = 0.0  # seconds that batches waited for their turns, in all

    def ask(self) -> Ticket:
        """A place in the queue (the turn at once when nobody has it): wait() for it, run the
        batch, then end() it; end() it as well to give up waiting."""
        loop = asyncio.get_running_loop()
        ticket = Ticket(loop.create_future(), loop.time(), granted=not self._taken)
        if ticket.granted:
            self._taken = True
        else:
            self._queue.append(ticket)
            self.waiting += 1
        return ticket

    async def wait(self, ticket: Ticket, seconds: float) -> bool:
        """Waits at most `seconds` for `ticket`'s turn, keeping its place; whether it came.
        The future is awaited directly: a turn granted is taken up in the loop's next turn,
        with no hop in between (the turn is the collector's one serial resource)."""
        if not ticket.granted:
            try:
                async with asyncio.timeout(seconds):
                    await ticket.future
            except TimeoutError:
                if not ticket.granted:  # granted as the timeout fired: it is ours all the same
                    ticket.future = asyncio.get_running_loop().create_future()
        return ticket.granted

    def away(self, ticket: Ticket) -> None:
        """`ticket`'s stream does something that may take long (a write to a probe that does
        not read): its turn goes to the next meanwhile, and it keeps its place."""
        ticket.away = True

    def back(self, ticket: Ticket) -> None:
        """`ticket`'s stream is back: it has the turn at once if nobody has it."""
        ticket.away = False
        if not self._taken and not ticket.granted:  # passed over while away, the loop idle
            self._queue.remove(ticket)
            self._taken = True
            self._grant(ticket)

    def end(self, ticket: Ticket) -> None:
        """The batch of `ticket` ran (the next starts in the loop's next turn, once what
        became ready meanwhile, a request's next step, has run), or its stream gave up
        waiting. Once per ask()."""
        if ticket.granted:
            asyncio.get_running_loop().call_soon(self._pass)
        else:  # passed over when its place comes
            ticket.gone = True
            ticket.future.cancel()
            self.waiting -= 1

    def _pass(self) -> None:
        queue, skipped = self._queue, 0  # skipped: tickets away, at the head of the queue
        while skipped < len(queue):
            ticket = queue[skipped]
            if ticket.away and not ticket.gone:
                skipped += 1
                continue
            del queue[skipped]
            if not ticket.gone:
                self._grant(ticket)
                return
        self._taken = False

    def _grant(self, ticket: Ticket) -> None:
        self.waiting -= 1
        self.waited += asyncio.get_running_loop().time() - ticket.asked
        ticket.granted = True
        if not ticket.future.done():  # a wait timed out this very turn: it sees granted
            ticket.future.set_result(None)

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Its body runs alone in its turn of the loop (it must not await)."""
        ticket = self.ask()
        try:
            if not ticket.granted:
                await ticket.future
            yield
        finally:
            self.end(ticket)
