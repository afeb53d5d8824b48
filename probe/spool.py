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

What an unattended Pi meets, and what the spool does about it:
- Clock steps (NTP on a Pi without an RTC): a row's age is judged on the spool's own clock,
  never the wall clock. Within a run it is the monotonic clock; its reading is stored with
  every flush and the next run carries on from there. So time the probe was not running does
  not count towards the age bound: after a reboot the wall clock cannot be trusted to say how
  long that was (it may be 1970, or the last shutdown's time, until NTP steps it), and keeping
  a result a little longer is the safe error; the size bound still holds.
- A row that cannot be read (a body that is not a Result) or sent (larger than the collector
  takes) is moved to the quarantine table and counted; the rows behind it go on.
- A full disk: the oldest rows are dropped, and counted, to make room, and measuring goes on.
  In WAL mode even a DELETE has to write, so a reserve file is kept beside the spool and given
  up when the disk fills, to give SQLite the room to make room.
- A file at the spool's path that is not a usable spool (not SQLite, corrupt, another schema)
  is renamed aside with a timestamp, said in one log line, and a fresh spool is started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from google.protobuf.message import DecodeError

from courierwatch.common import sqlitefile
from courierwatch.v1 import courierwatch_pb2 as pb

T = TypeVar("T")

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    seq INTEGER PRIMARY KEY,
    made REAL NOT NULL,      -- the spool clock (not the wall clock) when it was queued
    body BLOB NOT NULL       -- the serialized courierwatch.v1.Result
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS quarantine (  -- rows that could not be read or sent, for a look
    seq INTEGER PRIMARY KEY,
    made REAL,
    body BLOB,
    reason TEXT NOT NULL
);
"""
# Everything a spool file holds; a file with any other table or column is something else.
_TABLES = {
    "results": ("seq", "made", "body"),
    "meta": ("name", "value"),
    "quarantine": ("seq", "made", "body", "reason"),
}
_QUARANTINE_KEPT = 100  # the newest quarantined rows stay to be looked at; the count has them all
# The log is copied into the file once it holds this many pages (SQLite's default is 1,000):
# what a checkpoint may need to grow the file by stays within the reserve.
_CHECKPOINT_PAGES = 256
# Room for one last checkpoint (the pages above, plus a transaction) when the disk fills.
RESERVE_BYTES = 2 * 1024 * 1024
_ROOM_ATTEMPTS = 16  # each gives up twice as many of the oldest rows as the one before


@dataclass(frozen=True, slots=True)
class SpoolStats:
    depth: int
    bytes: int
    dropped: int  # by the bounds (size, age)
    oldest_age: float  # seconds, on the spool clock
    quarantined: int  # rows moved aside: unreadable, or larger than the collector takes
    dropped_disk_full: int  # the oldest, given up because the disk was full


class Spool:
    def __init__(
        self,
        path: str | Path,
        *,
        max_bytes: int = 256 * 1024 * 1024,
        max_age: float = 48 * 3600.0,
        flush_interval: float = 2.0,
        flush_size: int = 500,
        clock: Callable[[], float] = time.monotonic,  # must not step with the wall clock
    ) -> None:
        self._path = Path(path)
        self._reserve = self._path.with_name(self._path.name + "-reserve")
        self._max_bytes = max_bytes
        self._max_age = max_age
        self.flush_interval = flush_interval
        self._flush_size = flush_size
        self._clock = clock
        self._clock_base = 0.0  # spool clock = this + clock()
        self._waiting: list[tuple[int, float, bytes]] = []
        self._db: sqlite3.Connection | None = None
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="spool")
        self._flushed = asyncio.Event()
        self._full = asyncio.Event()
        self._next_seq = 1
        self._durable_through = 0
        self._acked = 0
        self._dropped = 0
        self._quarantined = 0
        self._dropped_disk_full = 0
        self._disk_full = False
        self._max_pages = 0  # SQLite's own limit, restored once the disk has room again
        self._depth = 0
        self._bytes = 0
        self._first_seq = 0
        self._oldest = 0.0

    async def _call(self, function: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._worker, function, *args)

    def _now(self) -> float:
        return self._clock_base + self._clock()

    async def open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        await self._call(self._open)

    def _open(self) -> None:
        try:
            self._db = self._connect()
        except sqlitefile.Damaged as error:
            aside = sqlitefile.move_aside(self._path)
            log.error(
                "spool %s is not a usable spool (%s): moved it aside to %s and started a fresh "
                "one; results in it that were never acknowledged are not sent",
                self._path, error, aside.name,
            )  # fmt: skip
            self._db = self._connect()
        self._keep_reserve()

    def _connect(self) -> sqlite3.Connection:
        def setup(db: sqlite3.Connection) -> None:
            db.execute(f"PRAGMA wal_autocheckpoint={_CHECKPOINT_PAGES}")
            db.executescript(_SCHEMA)
            self._load(db)  # the totals and the spool clock, from what the file holds

        return sqlitefile.open_checked(self._path, _TABLES, setup)

    def _load(self, db: sqlite3.Connection) -> None:
        meta = dict(db.execute("SELECT name, value FROM meta").fetchall())
        last, newest = db.execute("SELECT MAX(seq), MAX(made) FROM results").fetchone()
        # Never reuse a number: not one still queued, nor one acknowledged and deleted.
        self._next_seq = max(last or 0, meta.get("last_seq", 0)) + 1
        self._durable_through = self._next_seq - 1
        self._dropped = meta.get("dropped", 0)
        self._quarantined = meta.get("quarantined", 0)
        self._dropped_disk_full = meta.get("dropped_disk_full", 0)
        # Carry on from where the spool clock got to. A spool written before it existed
        # stamped rows with the wall clock: carrying on from its newest row keeps their ages.
        at = meta["clock_ms"] / 1000 if "clock_ms" in meta else float(newest or 0.0)
        self._clock_base = at - self._clock()
        self._max_pages = int(db.execute("PRAGMA max_page_count").fetchone()[0])
        self._depth, self._bytes = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM results"
        ).fetchone()
        self._refresh_oldest(db)

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
        self._waiting.append((result.seq, self._now(), result.SerializeToString()))
        if len(self._waiting) >= self._flush_size:
            self._full.set()

    async def run_flusher(self) -> None:
        """Flush every flush_interval, or sooner when a batch is full; until cancelled."""
        while True:
            # Not wait_for: on 3.11 it swallows a cancel that comes as the batch fills, and
            # the flusher would outlive the shutdown that cancelled it.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.flush_interval):
                    await self._full.wait()
            self._full.clear()
            await self.flush()

    async def flush(self) -> None:
        if not self._waiting:
            return
        rows, self._waiting = self._waiting, []
        await self._call(self._write, rows)
        self._flushed.set()

    def _write(self, rows: list[tuple[int, float, bytes]]) -> None:
        for attempt in range(_ROOM_ATTEMPTS):
            try:
                self._insert(rows)
            except sqlite3.OperationalError as error:
                if not _is_full(error):
                    raise
                if not self._make_room(len(rows) << attempt):
                    break
            else:
                if self._disk_full:
                    self._recover()
                return
        # Nothing more to give up on disk and still no room: these are the oldest left.
        self._dropped_disk_full += len(rows)  # stored with the next write that finds room

    def _insert(self, rows: list[tuple[int, float, bytes]]) -> None:
        added = sum(len(body) for _, _, body in rows)
        with self._transaction() as db:
            db.executemany("INSERT INTO results (seq, made, body) VALUES (?, ?, ?)", rows)
            _set_meta(db, "last_seq", rows[-1][0])
            _set_meta(db, "clock_ms", round(self._now() * 1000))
            _set_meta(db, "dropped_disk_full", self._dropped_disk_full)
            count, size = self._over_bounds(db, self._bytes + added)
            if count:
                _set_meta(db, "dropped", self._dropped + count)
        # The running totals move only once the transaction is in.
        self._depth += len(rows) - count
        self._bytes += added - size
        self._dropped += count
        self._durable_through = rows[-1][0]
        self._refresh_oldest(db)

    def _over_bounds(self, db: sqlite3.Connection, total: int) -> tuple[int, int]:
        """Delete what is too old, then the oldest until the rest fits; (count, bytes) gone."""
        cutoff = self._now() - self._max_age
        cut, left = 0, total
        # `made` grows with seq, so only a spool whose oldest row is too old has any: no
        # scan of a table without an index on `made` at every flush of a large spool.
        if self._depth and self._oldest < cutoff:
            too_old = db.execute(
                "SELECT MAX(seq) FROM results WHERE made < ?", (cutoff,)
            ).fetchone()[0]
            if too_old:
                cut = too_old
                left = total - _span(db, cut)[1]
        if left > self._max_bytes:
            for seq, length in db.execute(
                "SELECT seq, LENGTH(body) FROM results WHERE seq > ? ORDER BY seq", (cut,)
            ):
                if left <= self._max_bytes:
                    break
                cut, left = seq, left - length
        return _delete(db, cut) if cut else (0, 0)

    def _make_room(self, count: int) -> bool:
        """The disk is full: give up the `count` oldest rows (acknowledged ones first, not
        counted as dropped). False when none could be given up."""
        db = self._require_db()
        if not self._disk_full:
            self._disk_full = True
            log.warning("spool %s: the disk is full; dropping the oldest results", self._path)
            # The reserve pays for copying the log into the file one last time. From then on
            # the file does not grow: new rows reuse the pages of dropped ones, so a checkpoint
            # never needs room that is not there, and the log is reused from its start.
            self._release_reserve()
            self._checkpoint()
            pages = int(db.execute("PRAGMA page_count").fetchone()[0])
            db.execute(f"PRAGMA max_page_count={pages}")
        try:
            with self._transaction() as db:
                delivered = _delete(db, self._acked)
                through = db.execute(
                    "SELECT MAX(seq) FROM (SELECT seq FROM results ORDER BY seq LIMIT ?)",
                    (count,),
                ).fetchone()[0]
                dropped = _delete(db, through) if through else (0, 0)
                _set_meta(db, "dropped_disk_full", self._dropped_disk_full + dropped[0])
        except sqlite3.OperationalError as error:
            if not _is_full(error):
                raise
            return False
        self._depth -= delivered[0] + dropped[0]
        self._bytes -= delivered[1] + dropped[1]
        self._dropped_disk_full += dropped[0]
        self._refresh_oldest(db)
        self._checkpoint()  # so the next transaction starts the log over instead of growing it
        return delivered[0] + dropped[0] > 0

    def _recover(self) -> None:
        """After a write while the disk is full: once there is room again, let the file grow,
        take the reserve back and say so."""
        self._checkpoint()
        if _free_bytes(self._path.parent) < 2 * RESERVE_BYTES:
            return
        self._require_db().execute(f"PRAGMA max_page_count={self._max_pages}")
        self._keep_reserve()
        self._disk_full = False
        log.info(
            "spool %s: the disk has room again (%d results dropped for want of it so far)",
            self._path, self._dropped_disk_full,
        )  # fmt: skip

    def _keep_reserve(self) -> None:
        if self._reserve.exists():
            return
        try:
            with self._reserve.open("wb") as reserve:
                os.posix_fallocate(reserve.fileno(), 0, RESERVE_BYTES)
        except OSError as error:  # no room, or a filesystem without fallocate: go without
            self._reserve.unlink(missing_ok=True)
            log.debug("spool %s: no reserve file: %s", self._path, error)

    def _release_reserve(self) -> bool:
        try:
            self._reserve.unlink()
        except FileNotFoundError:
            return False
        return True

    def _checkpoint(self) -> None:
        # Best effort: with no room it fails, and the next attempt to make room tries again.
        with contextlib.suppress(sqlite3.OperationalError):
            self._require_db().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    async def after(self, seq: int, limit: int) -> list[pb.Result]:
        """Up to `limit` flushed results numbered above `seq`, oldest first. Rows that cannot
        be read are quarantined on the way; empty only when no readable row is left."""
        return await self._call(self._read, seq, limit)

    def _read(self, seq: int, limit: int) -> list[pb.Result]:
        db = self._require_db()
        results: list[pb.Result] = []
        while not results:  # ends: each pass moves past at least one of finitely many rows
            rows = db.execute(
                "SELECT seq, body FROM results WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
            ).fetchall()
            if not rows:
                break
            unreadable = []
            for number, body in rows:
                try:
                    result = pb.Result.FromString(body)
                except (DecodeError, TypeError) as error:  # TypeError: a body that is not bytes
                    unreadable.append((number, f"unreadable: {error}"))
                    continue
                result.seq = number  # the row's number is authoritative (see rebase)
                results.append(result)
            if unreadable:
                self._quarantine(unreadable)
            seq = rows[-1][0]
        return results

    async def quarantine(self, seq: int, reason: str) -> None:
        """Move a row aside that cannot be sent (e.g. larger than the collector takes)."""
        await self._call(self._quarantine, [(seq, reason)])

    def _quarantine(self, rows: list[tuple[int, str]]) -> None:
        numbers = [(seq,) for seq, _ in rows]
        try:
            with self._transaction() as db:
                count = size = 0
                for seq, reason in rows:
                    found = db.execute(
                        "INSERT OR REPLACE INTO quarantine "
                        "SELECT seq, made, body, ? FROM results WHERE seq = ? "
                        "RETURNING LENGTH(body)",
                        (reason, seq),
                    ).fetchall()
                    count, size = count + len(found), size + sum(n for (n,) in found)
                db.executemany("DELETE FROM results WHERE seq = ?", numbers)
                db.execute(
                    "DELETE FROM quarantine WHERE seq NOT IN "
                    "(SELECT seq FROM quarantine ORDER BY seq DESC LIMIT ?)",
                    (_QUARANTINE_KEPT,),
                )
                _set_meta(db, "quarantined", self._quarantined + count)
        except sqlite3.OperationalError as error:
            if not _is_full(error):
                raise
            # Left in place for now: skipped by this read, moved aside by a later one.
            log.warning("spool %s: no room to quarantine #%d", self._path, rows[0][0])
            return
        self._quarantined += count
        self._depth -= count
        self._bytes -= size
        self._refresh_oldest(db)
        log.warning(
            "spool %s: moved %d result(s) aside to its quarantine table, from #%d: %s",
            self._path, count, rows[0][0], rows[0][1],
        )  # fmt: skip

    async def rebase(self, above: int) -> None:
        """Renumber everything above `above`: for a spool younger than what the collector has
        seen of this probe (a new SD card, a moved spool file), whose numbers it would
        otherwise take for replays and ignore."""
        offset = max(above, self._next_seq)  # past every number in use: no clash mid-update
        self._waiting = [(seq + offset, made, body) for seq, made, body in self._waiting]
        self._next_seq += offset
        await self._call(self._shift, offset)

    def _shift(self, offset: int) -> None:
        with self._transaction() as db:
            db.execute("UPDATE results SET seq = seq + ?", (offset,))
            _set_meta(db, "last_seq", self._next_seq - 1)
        self._durable_through += offset
        self._refresh_oldest(db)

    async def ack(self, through_seq: int) -> None:
        await self._call(self._delete_through, through_seq)

    def _delete_through(self, through_seq: int) -> None:
        self._acked = max(self._acked, through_seq)
        try:
            with self._transaction() as db:
                count, size = _delete(db, through_seq)
        except sqlite3.OperationalError as error:
            if not _is_full(error):
                raise
            return  # they go when room is made (first of all), or with a later ack
        self._depth -= count
        self._bytes -= size
        self._refresh_oldest(db)

    async def wait_after(self, seq: int) -> None:
        """Return once a flushed result numbered above `seq` exists."""
        while self._durable_through <= seq:
            self._flushed.clear()
            await self._flushed.wait()

    def holds(self, through_seq: int) -> bool:
        """Whether a result numbered up to `through_seq` is still spooled (or waiting)."""
        on_disk = self._depth > 0 and self._first_seq <= through_seq
        return on_disk or (bool(self._waiting) and self._waiting[0][0] <= through_seq)

    @property
    def path(self) -> Path:
        return self._path

    @property
    def durable_through(self) -> int:
        """The highest sequence number written to disk."""
        return self._durable_through

    def stats(self) -> SpoolStats:
        age = self._now() - self._oldest if self._depth else 0.0
        return SpoolStats(
            self._depth + len(self._waiting), self._bytes, self._dropped, age,
            self._quarantined, self._dropped_disk_full,
        )  # fmt: skip

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._require_db()
        db.execute("BEGIN")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # a failed COMMIT may have rolled back already
                db.execute("ROLLBACK")
            raise

    def _refresh_oldest(self, db: sqlite3.Connection) -> None:
        row = db.execute("SELECT seq, made FROM results ORDER BY seq LIMIT 1").fetchone()
        self._first_seq, self._oldest = (int(row[0]), float(row[1])) if row else (0, 0.0)

    def _require_db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the spool is not open")
        return self._db


def _span(db: sqlite3.Connection, through_seq: int) -> tuple[int, int]:
    count, size = db.execute(
        "SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM results WHERE seq <= ?",
        (through_seq,),
    ).fetchone()
    return int(count), int(size)


def _delete(db: sqlite3.Connection, through_seq: int) -> tuple[int, int]:
    """Delete rows numbered up to through_seq; (count, bytes) deleted."""
    gone = _span(db, through_seq)
    if gone[0]:
        db.execute("DELETE FROM results WHERE seq <= ?", (through_seq,))
    return gone


def _set_meta(db: sqlite3.Connection, name: str, value: int) -> None:
    db.execute(
        "INSERT INTO meta VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
        (name, value),
    )


def _is_full(error: sqlite3.Error) -> bool:
    return getattr(error, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_FULL


def _free_bytes(directory: Path) -> int:
    status = os.statvfs(directory)
    return status.f_bavail * status.f_frsize
