"""The collector's durable memory: per probe the highest applied sequence number and the
counters, so a restarted collector neither counts a replayed batch twice nor restarts its
counters from zero. The only collector module that knows SQLite.

A batch's changes are committed before the batch is acknowledged (the caller's rule); one
worker thread runs every call in order, so the event loop never waits on the disk. Batches
saved while a commit runs are committed together in the next one (group commit): a
transaction costs about as much for a thousand probes' batches as for one.

A commit that fails for want of room (or another fault of the disk) is tried again, with
what was saved meanwhile, until it works: the batches wait unacknowledged (their probes
keep them spooled) and `problem` says why, for /healthz. A file at start that is not a
usable store (not SQLite, damaged, another schema) is moved aside with a timestamp, said in
one log line, and a fresh store is started: what that costs is in the README (Delivery).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from courierwatch.collector.state import Applied, CheckKey, CountKey, Probe, ProbeKey
from courierwatch.common import sqlitefile

log = logging.getLogger(__name__)
T = TypeVar("T")
# Seconds between attempts at a commit that failed: doubling from the first to the last.
RETRY_SECONDS = (0.25, 5.0)

# A check's counters are keyed by a small integer rather than its eight labels: an upsert
# of the busiest table then costs a third as much.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS probes (
    site TEXT NOT NULL, probe TEXT NOT NULL,
    applied_through INTEGER NOT NULL, applied INTEGER NOT NULL, duplicates INTEGER NOT NULL,
    last_seen REAL NOT NULL,
    PRIMARY KEY (site, probe)
);
CREATE TABLE IF NOT EXISTS checks (
    id INTEGER PRIMARY KEY,
    site TEXT NOT NULL, probe TEXT NOT NULL,
    target TEXT NOT NULL, port INTEGER NOT NULL, kind TEXT NOT NULL, grp TEXT NOT NULL,
    family TEXT NOT NULL, via TEXT NOT NULL,
    UNIQUE (site, probe, target, port, kind, grp, family, via)
);
CREATE TABLE IF NOT EXISTS outcome_counts (
    check_id INTEGER NOT NULL REFERENCES checks (id), outcome INTEGER NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (check_id, outcome)
) WITHOUT ROWID;
"""

ProbeRow = tuple[str, str, int, int, int, float]  # site, probe, through, applied, dups, seen
# Every table of the schema and its columns, in order: what a file must have to be a store.
_TABLES = {
    "probes": ("site", "probe", "applied_through", "applied", "duplicates", "last_seen"),
    "checks": ("id", "site", "probe", "target", "port", "kind", "grp", "family", "via"),
    "outcome_counts": ("check_id", "outcome", "n"),
}


class Store:
    def __init__(self, path: str | Path) -> None:
        self._path = Path(path)
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="store")
        self._db: sqlite3.Connection | None = None
        # Saved but not yet committed: each probe's newest row, the batches' count deltas
        # (summed by the database), who waits for the commit.
        self._rows: dict[ProbeKey, ProbeRow] = {}
        self._committing: dict[ProbeKey, ProbeRow] = {}  # the rows of the commit under way
        self._counts: list[tuple[ProbeKey, dict[CountKey, int]]] = []
        self._waiting: list[asyncio.Future[None]] = []
        self._committer: asyncio.Task[None] | None = None
        self._ids: dict[ProbeKey, dict[CheckKey, int]] = {}  # the worker's: ids in `checks`
        self.problem: str | None = None  # why commits fail now; None while they work
        self.started_fresh = False  # the file found at start was moved aside
        self._closing = asyncio.Event()

    async def _call(self, function: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._worker, function, *args)

    async def open(self) -> list[Probe]:
        """Open (creating if needed) and return the probes remembered from earlier runs."""
        self._path.parent.mkdir(parents=True, exist_ok=True)
        return await self._call(self._open)

    def _open(self) -> list[Probe]:
        try:
            return self._load(self._connect())
        except sqlitefile.Damaged as error:
            aside = sqlitefile.move_aside(self._path)
            log.error(
                "state store %s is not usable (%s): moved it aside to %s and started a fresh "
                "one; the applied sequence numbers and counters in it are lost, so each "
                "probe's unacknowledged results are taken as new and its counters restart",
                self._path, error, aside.name,
            )  # fmt: skip
            self.started_fresh = True
            return self._load(self._connect())

    def _connect(self) -> sqlite3.Connection:
        return sqlitefile.open_checked(self._path, _TABLES, lambda db: db.executescript(_SCHEMA))

    def _load(self, db: sqlite3.Connection) -> list[Probe]:
        self._db = db
        probes: dict[ProbeKey, Probe] = {}
        for site, probe_id, through, applied, duplicates, last_seen in db.execute(
            "SELECT site, probe, applied_through, applied, duplicates, last_seen FROM probes"
        ):
            probes[(site, probe_id)] = Probe(
                site, probe_id, applied_through=through, applied=applied,
                duplicates=duplicates, last_seen=last_seen,
            )  # fmt: skip
        checks: dict[int, tuple[ProbeKey, CheckKey]] = {}
        for check_id, site, probe_id, target, port, kind, group, family, via in db.execute(
            "SELECT id, site, probe, target, port, kind, grp, family, via FROM checks"
        ):
            key = (target, port, kind, group, family, via)
            checks[check_id] = ((site, probe_id), key)
            self._ids.setdefault((site, probe_id), {})[key] = check_id
        for check_id, outcome, n in db.execute("SELECT check_id, outcome, n FROM outcome_counts"):
            who, key = checks.get(check_id, (None, None))
            probe = probes.get(who) if who is not None else None
            if probe is not None and key is not None:
                probe.counts[(key, outcome)] = n
        return list(probes.values())

    async def save(self, probe: Probe, change: Applied) -> None:
        """Commit what a batch applied; return only once it is on disk. What is saved is
        taken at the call, and committed in the order of the calls."""
        who = probe.key
        self._rows[who] = (*who, change.through, probe.applied, probe.duplicates,
                           probe.last_seen)  # fmt: skip
        self._counts.append((who, change.counts))
        done = asyncio.get_running_loop().create_future()
        self._waiting.append(done)
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_while_saved())
        # Shielded: a stream that goes away still has its batch committed (and not counted
        # twice: it was applied, and the probe will see it in its next Welcome).
        await asyncio.shield(done)

    async def _commit_while_saved(self) -> None:
        delay = RETRY_SECONDS[0]
        while self._waiting:
            rows, counts, waiting = self._rows, self._counts, self._waiting
            self._rows, self._counts, self._waiting = {}, [], []
            self._committing = rows
            try:
                await self._call(self._save, list(rows.values()), counts)
            except (sqlite3.OperationalError, OSError) as error:  # no room, a faulty disk
                # Back in front of what was saved meanwhile (newer rows win), and again.
                self._rows = {**rows, **self._rows}
                self._counts = counts + self._counts
                self._waiting = waiting + self._waiting
                self._failing(error)
                if self._closing.is_set():
                    self._fail(self._waiting, error)
                    return
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._closing.wait()  # then a last attempt, at once
                delay = min(2 * delay, RETRY_SECONDS[1])
                continue
            except Exception as error:  # not the disk's fault: every batch fails with it
                self._fail(waiting, error)
                continue
            finally:
                self._committing = {}
            if self.problem is not None:
                log.warning("the state store %s takes commits again", self._path)
                self.problem, delay = None, RETRY_SECONDS[0]
            for done in waiting:
                if not done.done():
                    done.set_result(None)

    def _failing(self, error: Exception) -> None:
        if self.problem is None:  # said once, not at every attempt
            log.error("cannot commit to the state store %s (%s): acknowledging nothing until "
                      "it can; the probes keep their results spooled", self._path, error)
        self.problem = f"cannot commit to the state store: {error}"

    @property
    def closing(self) -> bool:
        return self._closing.is_set()

    def pending(self, who: ProbeKey) -> bool:
        """Whether a batch of `who` is saved and not yet committed."""
        return who in self._rows or who in self._committing

    def _fail(self, waiting: list[asyncio.Future[None]], error: Exception) -> None:
        for done in waiting:
            if not done.done():
                done.set_exception(error)
        self._rows, self._counts, self._waiting = {}, [], []

    def _save(self, rows: list[ProbeRow], counts: list[tuple[ProbeKey, dict[CountKey, int]]]
              ) -> None:  # fmt: skip
        db = self._require_db()
        known = self._ids
        new: dict[ProbeKey, dict[CheckKey, int]] = {}  # known once the commit is done
        deltas = []
        if db.in_transaction:  # what a failed commit left (its rollback found no room either)
            db.rollback()
        with db:
            db.execute("BEGIN")
            db.executemany(
                "INSERT INTO probes VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(site, probe) DO UPDATE "
                "SET applied_through = excluded.applied_through, applied = excluded.applied, "
                "duplicates = excluded.duplicates, last_seen = excluded.last_seen",
                rows,
            )
            for who, changed in counts:
                ids, added = known.get(who, {}), new.setdefault(who, {})
                for (key, outcome), n in changed.items():
                    check_id = ids.get(key) or added.get(key)  # ids start at 1
                    if check_id is None:
                        check_id = added[key] = db.execute(
                            "INSERT INTO checks (site, probe, target, port, kind, grp, family, "
                            "via) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (*who, *key),
                        ).lastrowid  # fmt: skip
                    deltas.append((check_id, outcome, n))
            db.executemany(
                "INSERT INTO outcome_counts VALUES (?, ?, ?) "
                "ON CONFLICT (check_id, outcome) DO UPDATE SET n = n + excluded.n",
                deltas,
            )
        for who, added in new.items():
            if added:
                known.setdefault(who, {}).update(added)

    async def forget(self, keys: list[ProbeKey]) -> None:
        if keys:
            await self._call(self._forget, keys)

    def _forget(self, keys: list[ProbeKey]) -> None:
        db = self._require_db()
        with db:
            db.execute("BEGIN")
            db.executemany("DELETE FROM probes WHERE site = ? AND probe = ?", keys)
            db.executemany(
                "DELETE FROM outcome_counts WHERE check_id IN "
                "(SELECT id FROM checks WHERE site = ? AND probe = ?)", keys,
            )  # fmt: skip
            db.executemany("DELETE FROM checks WHERE site = ? AND probe = ?", keys)
        for key in keys:
            self._ids.pop(key, None)

    async def close(self) -> None:
        self._closing.set()  # a commit that keeps failing is tried once more, then given up
        if self._committer is not None:
            await self._committer  # what was saved is committed before the database closes
        if self.problem is not None:
            log.error("stopping with the state store failing: batches not committed were not "
                      "acknowledged either, and their probes send them again")  # fmt: skip
        if self._db is not None:
            await self._call(self._db.close)
            self._db = None
        self._worker.shutdown()

    def _require_db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the store is not open")
        return self._db
