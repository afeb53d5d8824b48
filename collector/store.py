"""The collector's durable memory: per probe the highest applied sequence number and the
counters, so a restarted collector neither counts a replayed batch twice nor restarts its
counters from zero. The only collector module that knows SQLite.

A batch's changes are committed before the batch is acknowledged (the caller's rule); one
worker thread runs every call in order, so the event loop never waits on the disk. Batches
saved while a commit runs are committed together in the next one (group commit): a
transaction costs about as much for a thousand probes' batches as for one.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from courierwatch.collector.state import Applied, Probe, ProbeKey

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS probes (
    site TEXT NOT NULL, probe TEXT NOT NULL,
    applied_through INTEGER NOT NULL, applied INTEGER NOT NULL, duplicates INTEGER NOT NULL,
    last_seen REAL NOT NULL,
    PRIMARY KEY (site, probe)
);
CREATE TABLE IF NOT EXISTS counts (
    site TEXT NOT NULL, probe TEXT NOT NULL,
    target TEXT NOT NULL, port INTEGER NOT NULL, kind TEXT NOT NULL, grp TEXT NOT NULL,
    family TEXT NOT NULL, via TEXT NOT NULL, outcome INTEGER NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (site, probe, target, port, kind, grp, family, via, outcome)
);
"""


ProbeRow = tuple[str, str, int, int, int, float]  # site, probe, through, applied, dups, seen
CountRow = tuple[str, str, str, int, str, str, str, str, int]  # site, probe, *check, outcome


class Store:
    def __init__(self, path: str | Path) -> None:
        self._path = Path(path)
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="store")
        self._db: sqlite3.Connection | None = None
        # Saved but not yet committed: each probe's newest row, summed count deltas, waiters.
        self._rows: dict[ProbeKey, ProbeRow] = {}
        self._counts: dict[CountRow, int] = {}
        self._waiting: list[asyncio.Future[None]] = []
        self._committer: asyncio.Task[None] | None = None

    async def _call(self, function: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._worker, function, *args)

    async def open(self) -> list[Probe]:
        """Open (creating if needed) and return the probes remembered from earlier runs."""
        self._path.parent.mkdir(parents=True, exist_ok=True)
        return await self._call(self._open)

    def _open(self) -> list[Probe]:
        db = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        self._db = db
        probes: dict[ProbeKey, Probe] = {}
        for site, probe_id, through, applied, duplicates, last_seen in db.execute(
            "SELECT site, probe, applied_through, applied, duplicates, last_seen FROM probes"
        ):
            probes[(site, probe_id)] = Probe(
                site, probe_id, applied_through=through, applied=applied,
                duplicates=duplicates, last_seen=last_seen,
            )  # fmt: skip
        for site, probe_id, *check, outcome, n in db.execute("SELECT * FROM counts"):
            probe = probes.get((site, probe_id))
            if probe is not None:
                target, port, kind, group, family, via = check
                probe.counts[((target, port, kind, group, family, via), outcome)] = n
        return list(probes.values())

    async def save(self, probe: Probe, change: Applied) -> None:
        """Commit what a batch applied; return only once it is on disk."""
        site, probe_id = probe.key
        self._rows[probe.key] = (site, probe_id, change.through, probe.applied,
                                 probe.duplicates, probe.last_seen)  # fmt: skip
        counts = self._counts
        for (key, outcome), n in change.counts.items():
            row = (site, probe_id, *key, outcome)
            counts[row] = counts.get(row, 0) + n
        done = asyncio.get_running_loop().create_future()
        self._waiting.append(done)
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_while_saved())
        # Shielded: a stream that goes away still has its batch committed (and not counted
        # twice: it was applied, and the probe will see it in its next Welcome).
        await asyncio.shield(done)

    async def _commit_while_saved(self) -> None:
        while self._waiting:
            rows, counts, waiting = list(self._rows.values()), self._counts, self._waiting
            self._rows, self._counts, self._waiting = {}, {}, []
            try:
                await self._call(self._save, rows, [(*row, n) for row, n in counts.items()])
            except Exception as error:  # every batch of this commit fails with it
                for done in waiting:
                    if not done.done():
                        done.set_exception(error)
            else:
                for done in waiting:
                    if not done.done():
                        done.set_result(None)

    def _save(self, rows: list[ProbeRow], counts: list[tuple[object, ...]]) -> None:
        db = self._require_db()
        with db:
            db.execute("BEGIN")
            db.executemany(
                "INSERT INTO probes VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(site, probe) DO UPDATE "
                "SET applied_through = excluded.applied_through, applied = excluded.applied, "
                "duplicates = excluded.duplicates, last_seen = excluded.last_seen",
                rows,
            )
            db.executemany(
                "INSERT INTO counts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT "
                "(site, probe, target, port, kind, grp, family, via, outcome) "
                "DO UPDATE SET n = n + excluded.n",
                counts,
            )

    async def forget(self, keys: list[ProbeKey]) -> None:
        if keys:
            await self._call(self._forget, keys)

    def _forget(self, keys: list[ProbeKey]) -> None:
        db = self._require_db()
        with db:
            db.execute("BEGIN")
            db.executemany("DELETE FROM probes WHERE site = ? AND probe = ?", keys)
            db.executemany("DELETE FROM counts WHERE site = ? AND probe = ?", keys)

    async def close(self) -> None:
        if self._committer is not None:
            await self._committer  # what was saved is committed before the database closes
        if self._db is not None:
            await self._call(self._db.close)
            self._db = None
        self._worker.shutdown()

    def _require_db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the store is not open")
        return self._db
