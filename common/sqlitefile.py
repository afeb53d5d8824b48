"""Opening the SQLite files both sides keep (the probe's spool, the collector's store) so that a
damaged or foreign file is found at start, and moving such a file aside for a fresh one.

A file is judged before anything is written to it, so what is moved aside is what was found;
every page is read at start (quick_check), so damage shows here and not in the middle of a run.
Only the file's own fault moves it: a lock, no permission or no room is raised as it is.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

_CORRUPT: Final = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})
_COMPANIONS: Final = ("", "-wal", "-shm", "-journal")  # a stale log must not meet a new file


class Damaged(Exception):
    """The file is not one this code can use: damaged, not SQLite, or of another schema."""


Tables = Mapping[str, tuple[str, ...]]  # every table of a schema: its columns, in order


def open_checked(
    path: Path, tables: Tables, setup: Callable[[sqlite3.Connection], None]
) -> sqlite3.Connection:
    """Open `path` in WAL mode, after checking that every table in it is one of `tables` with
    its columns, and an integrity check; then `setup` (schema, pragmas, loading). Raises
    Damaged for the file's own faults."""
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        _check_tables(db, tables)
        verdict = db.execute("PRAGMA quick_check(1)").fetchone()[0]
        if verdict != "ok":
            raise Damaged(" ".join(verdict.split()))  # it may span lines
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        setup(db)
    except sqlite3.DatabaseError as error:
        db.close()
        if getattr(error, "sqlite_errorcode", 0) & 0xFF in _CORRUPT:
            raise Damaged(str(error)) from error
        raise  # locked, unreadable, no room: not the file's fault, so not moved aside
    except Damaged:
        db.close()
        raise
    return db


def _check_tables(db: sqlite3.Connection, tables: Tables) -> None:
    """An empty file passes (the schema is made by setup); a foreign table or column fails."""
    names = [name for (name,) in db.execute(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite^_%' "
        "ESCAPE '^'"  # SQLite's own, e.g. sqlite_stat1 after an ANALYZE
    )]  # fmt: skip
    for name in names:
        info = db.execute("SELECT name FROM pragma_table_info(?)", (name,))
        columns = tuple(column for (column,) in info)
        if tables.get(name) != columns:
            raise Damaged(f"it has a table {name}({', '.join(columns)}) that is not of this schema")


def move_aside(path: Path) -> Path:
    """Rename `path` (and its log files) to `<name>.corrupt-<UTC time>`; the new name."""
    # The wall clock only names the file for a person; nothing is judged by it.
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    for suffix in _COMPANIONS:
        source = path.with_name(path.name + suffix)
        if source.exists():
            source.rename(aside.with_name(aside.name + suffix))
    return aside
