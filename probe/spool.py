"""The durable queue between measuring and sending: the only module that knows SQLite.

Results are numbered as they are made and kept in memory until the next flush, which
writes everything waiting in one transaction (a Pi's SD card wears by write count, so
not one write per result). Only flushed results are offered for sending, so a number the
collector has seen is always on disk: a restarted probe never reuses it. Rows leave when
the collector acknowledges them, or when the bounds (total size, age) are hit: the oldest
go first and are counted.

SQLite in WAL mode with synchronous=NORMAL: a commit survives a killed process; an OS
crash may lose the last commits but never corrupts the file. Every database call runs in
one worker thread, so a slow card never stalls the event loop that times the checks, and
calls stay in order even when the coroutine that asked is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from courierwatch.v1 import courierwatch_pb2 as pb

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    seq INTEGER PRIMARY KEY,
    made REAL NOT NULL,      -- wall-clock time the result was queued, for the age bound
    body BLOB NOT NULL       -- the serialized courierwatch.v1.Result
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class SpoolStats:
    depth: int
    bytes: int
    dropped: int
    oldest_age: float


class Spool:
    def __init__(
        self,
        path: str | Path,
        *,
        max_bytes: int = 256 * 1024 * 1024,
        max_age: float = 48 * 3600.0,
        flush_interval: float = 2.0,
        flush_size: int = 500,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._path = Path(path)
        self._max_bytes = max_bytes
        self._max_age = max_age
        self.flush_interval = flush_interval
        self._flush_size = flush_size
        self._clock = clock
        self._waiting: list[tuple[int, float, bytes]] = []
        self._db: sqlite3.Connection | None = None
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="spool")
        self._flushed = asyncio.Event()
        self._full = asyncio.Event()
        self._next_seq = 1
        self._durable_through = 0
        self._dropped = 0
        self._depth = 0
        self._bytes = 0
        self._oldest = 0.0

    async def _call(self, function: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._worker, function, *args)

    async def open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        await self._call(self._open)

    def _open(self) -> None:
        db = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        meta = dict(db.execute("SELECT name, value FROM meta").fetchall())
        last = db.execute("SELECT MAX(seq) FROM results").fetchone()[0] or 0
        # Never reuse a number: not one still queued, nor one acknowledged and deleted.
        self._next_seq = max(last, meta.get("last_seq", 0)) + 1
        self._durable_through = self._next_seq - 1
        self._dropped = meta.get("dropped", 0)
        self._db = db
        self._depth, self._bytes = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM results"
        ).fetchone()
        self._oldest = _oldest(db)

    async def close(self) -> None:
        await self.flush()
        if self._db is not None:
            await self._call(self._db.close)
            self._db = None
        self._worker.shutdown()

    def put(self, result: pb.Result) -> None:
        """Number the result and queue it for the next flush."""
        result.seq = self._next_seq
        self._next_seq += 1
        self._waiting.append((result.seq, self._clock(), result.SerializeToString()))
        if len(self._waiting) >= self._flush_size:
            self._full.set()

    async def run_flusher(self) -> None:
        """Flush every flush_interval, or sooner when a batch is full; until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), self.flush_interval)
            self._full.clear()
            await self.flush()

    async def flush(self) -> None:
        if not self._waiting:
            return
        rows, self._waiting = self._waiting, []
        await self._call(self._write, rows)
        self._flushed.set()

    def _write(self, rows: list[tuple[int, float, bytes]]) -> None:
        db = self._require_db()
        with db:
            db.execute("BEGIN")
            db.executemany("INSERT INTO results (seq, made, body) VALUES (?, ?, ?)", rows)
            self._depth += len(rows)
            self._bytes += sum(len(body) for _, _, body in rows)
            _set_meta(db, "last_seq", rows[-1][0])
            dropped = self._enforce_bounds(db)
            if dropped:
                self._dropped += dropped
                _set_meta(db, "dropped", self._dropped)
        self._durable_through = rows[-1][0]
        self._oldest = _oldest(db)

    def _enforce_bounds(self, db: sqlite3.Connection) -> int:
        """Drop what is too old, then the oldest until the rest fits; returns how many."""
        too_old = db.execute(
            "SELECT MAX(seq) FROM results WHERE made < ?", (self._clock() - self._max_age,)
        ).fetchone()[0]
        dropped = self._delete(db, too_old) if too_old else 0
        if self._bytes > self._max_bytes:
            cut, left = 0, self._bytes
            for seq, size in db.execute("SELECT seq, LENGTH(body) FROM results ORDER BY seq"):
                if left <= self._max_bytes:
                    break
                cut, left = seq, left - size
            dropped += self._delete(db, cut)
        return dropped

    def _delete(self, db: sqlite3.Connection, through_seq: int) -> int:
        """Delete rows numbered up to through_seq, keeping the running totals right."""
        count, size = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM results WHERE seq <= ?",
            (through_seq,),
        ).fetchone()
        db.execute("DELETE FROM results WHERE seq <= ?", (through_seq,))
        self._depth -= count
        self._bytes -= size
        return int(count)

    async def after(self, seq: int, limit: int) -> list[pb.Result]:
        """Up to `limit` flushed results numbered above `seq`, oldest first."""
        rows = await self._call(self._read, seq, limit)
        results = []
        for number, body in rows:
            result = pb.Result.FromString(body)
            result.seq = number  # the row's number is authoritative (see rebase)
            results.append(result)
        return results

    def _read(self, seq: int, limit: int) -> list[tuple[int, bytes]]:
        return (
            self._require_db()
            .execute(
                "SELECT seq, body FROM results WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
            )
            .fetchall()
        )

    async def rebase(self, above: int) -> None:
        """Renumber everything above `above`: for a spool younger than what the collector has
        seen of this probe (a new SD card, a moved spool file), whose numbers it would
        otherwise take for replays and ignore."""
        offset = max(above, self._next_seq)  # past every number in use: no clash mid-update
        self._waiting = [(seq + offset, made, body) for seq, made, body in self._waiting]
        self._next_seq += offset
        await self._call(self._shift, offset)

    def _shift(self, offset: int) -> None:
        db = self._require_db()
        with db:
            db.execute("BEGIN")
            db.execute("UPDATE results SET seq = seq + ?", (offset,))
            _set_meta(db, "last_seq", self._next_seq - 1)
        self._durable_through += offset

    async def ack(self, through_seq: int) -> None:
        await self._call(self._delete_through, through_seq)

    def _delete_through(self, through_seq: int) -> None:
        db = self._require_db()
        with db:
            db.execute("BEGIN")
            self._delete(db, through_seq)
        self._oldest = _oldest(db)

    async def wait_after(self, seq: int) -> None:
        """Return once a flushed result numbered above `seq` exists."""
        while self._durable_through <= seq:
            self._flushed.clear()
            await self._flushed.wait()

    @property
    def path(self) -> Path:
        return self._path

    @property
    def durable_through(self) -> int:
        """The highest sequence number written to disk."""
        return self._durable_through

    def stats(self) -> SpoolStats:
        age = self._clock() - self._oldest if self._depth else 0.0
        return SpoolStats(self._depth + len(self._waiting), self._bytes, self._dropped, age)

    def _require_db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the spool is not open")
        return self._db


def _set_meta(db: sqlite3.Connection, name: str, value: int) -> None:
    db.execute(
        "INSERT INTO meta VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
        (name, value),
    )


def _oldest(db: sqlite3.Connection) -> float:
    row = db.execute("SELECT made FROM results ORDER BY seq LIMIT 1").fetchone()
    return float(row[0]) if row else 0.0
