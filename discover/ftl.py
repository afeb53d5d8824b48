"""Pi-hole's long-term query database, pihole-FTL.db (SQLite), read without disturbing FTL.

Pi-hole v5 has a `queries` table; v6 stores `query_storage` with ids into `domain_by_id` and
`client_by_id` and offers a `queries` view of the same columns. Schemas and codes as Pi-hole
publishes them: pi-hole/FTL src/database/query-table.h (CREATE_QUERIES_TABLE_V1,
CREATE_QUERY_STORAGE_TABLE, CREATE_QUERIES_VIEW) and pi-hole/docs docs/database/query-database.md
("Supported query types", "Supported status types", "Linking tables", and "additional_info":
the CNAME that got a query blocked for statuses 9 to 11).

The file is opened read-only (`file:...?mode=ro`) and read in id ranges of CHUNK rows, each one
short statement, so FTL's writer never waits behind a long read. SQLite does the counting: per
range one statement groups by name, type and status, with the distinct clients of each group,
so Python touches one row per group, not per query. Where the v6 linking tables exist
they are read directly (grouping integer ids, then naming them once), which is several times
faster than grouping the view's looked-up text; a row that still holds text (the docs: "the
table may still contain strings instead of integer IDs") is read as text. The same range read,
from an id watermark, is what a probe can run every minute (read_range).
"""

from __future__ import annotations

import sqlite3
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Final, NamedTuple

from courierwatch.discover.tally import SourceStats, Tally

__all__ = ["BLOCKED", "CHUNK", "FtlError", "FtlRow", "Reader", "read", "read_range"]

CHUNK: Final = 100_000  # rows per statement: a fraction of a second of SQLite's time

# Status codes that mean Pi-hole blocked the query, and how (query-database.md).
BLOCKED: Final = {
    1: "gravity",
    4: "regex denylist",
    5: "exact denylist",
    6: "upstream blocking page",
    7: "upstream 0.0.0.0",
    8: "upstream NXDOMAIN",
    9: "gravity, at a CNAME",
    10: "regex denylist, at a CNAME",
    11: "exact denylist, at a CNAME",
    15: "database busy",
    16: "special domain",
    18: "upstream EDE 15",
}
_AT_CNAME: Final = frozenset({9, 10, 11})  # additional_info names the CNAME that matched
_TYPES: Final = {
    1: "A", 2: "AAAA", 3: "ANY", 4: "SRV", 5: "SOA", 6: "PTR", 7: "TXT", 8: "NAPTR", 9: "MX",
    10: "DS", 11: "RRSIG", 12: "DNSKEY", 13: "NS", 14: "OTHER", 15: "SVCB", 16: "HTTPS",
}  # fmt: skip
_TYPE_OFFSET: Final = 100  # any other type is stored as 100 + its number
_FAR: Final = 1e18  # an open end of the time window
_RANGE: Final = "id > ? AND id <= ? AND timestamp >= ? AND timestamp < ?"
# Clients come along as one list per group: SQLite's distinct list costs a fraction of a
# second statement listing the distinct (name, client) pairs, and addresses hold no commas.
_GROUPS: Final = f"""
SELECT domain, type, status, count(*), min(timestamp), max(timestamp),
       max(CASE WHEN status IN (9, 10, 11) THEN additional_info END),
       group_concat(DISTINCT client)
FROM {{table}} WHERE {_RANGE} GROUP BY domain, type, status
"""
_CLIENTS: Final = "SELECT id, ip FROM client_by_id"
_LINKED: Final = frozenset({"query_storage", "domain_by_id", "client_by_id", "addinfo_by_id"})


class FtlError(Exception):
    """The file is no Pi-hole FTL database this reader knows; str() names the file."""


class FtlRow(NamedTuple):
    """Queries of one name, type and status within one id range."""

    domain: str | None  # None: a v6 id with no entry in domain_by_id
    type: int
    status: int
    count: int
    first: float
    last: float
    cname: str  # for a CNAME block, the name that matched; else ""
    clients: Sequence[str]  # the distinct clients that asked


class Reader:
    """One read-only connection to pihole-FTL.db and what it knows about its layout."""

    def __init__(self, path: str) -> None:
        self.path = path
        uri = f"file:{urllib.parse.quote(str(Path(path).resolve()))}?mode=ro"
        try:
            self.conn = sqlite3.connect(uri, uri=True, timeout=5.0, isolation_level=None)
            objects = dict(self.conn.execute("SELECT name, type FROM sqlite_master"))
        except sqlite3.DatabaseError as error:
            raise FtlError(f"{path}: not a readable SQLite database: {error}") from None
        if objects.get("queries") not in ("table", "view"):
            self.conn.close()
            raise FtlError(f"{path}: no queries table or view: not a Pi-hole FTL database")
        self.linked = objects.keys() >= _LINKED
        self.table = "query_storage" if self.linked else "queries"
        self._domains: dict[int, str] = {}
        self._client_ids: dict[str, str] = {}  # client_by_id, its ids as text
        self._addinfo: dict[int, str] = {}
        self._missing: set[tuple[str, int]] = set()  # ids with no entry in their table

    def close(self) -> None:
        self.conn.close()

    def bounds(self) -> tuple[int, int]:
        """(the id before the first row, the last id): where a full read starts and ends."""
        low, high = self.conn.execute(f"SELECT min(id), max(id) FROM {self.table}").fetchone()
        return (0, 0) if low is None else (low - 1, high)

    def groups(self, after: int, upto: int, window: tuple[float, float]) -> list[FtlRow]:
        """The range grouped: fetched whole, so the statement (and its read lock) ends before
        Python does anything with the rows."""
        rows = self.conn.execute(_GROUPS.format(table=self.table), (after, upto, *window))
        rows = rows.fetchall()
        out = []
        for domain, qtype, status, count, first, last, info, clients in rows:
            cname = self._cname(info) if status in _AT_CNAME else ""
            who = self._who(clients.split(",")) if clients else ()
            out.append(FtlRow(self._domain(domain), qtype, status, count, first, last, cname, who))
        return out

    def _who(self, keys: list[str]) -> Sequence[str]:
        if not self.linked:
            return keys
        # Ids come back as text in the list, so they are looked up by their text; a miss is
        # a new client (or a row that still holds an address): then one by one.
        known = self._client_ids
        try:
            return [known[key] for key in keys]
        except KeyError:
            self._client_ids.update((str(k), v) for k, v in self.conn.execute(_CLIENTS))
            named = (known.get(key) or (key if not key.isdigit() else "") for key in keys)
            return [name for name in named if name]

    def _domain(self, key: object) -> str | None:
        return self._named(key, self._domains, "SELECT id, domain FROM domain_by_id")

    def _named(self, key: object, names: dict[int, str], table: str) -> str | None:
        """The text of a linking-table id (or the text a row holds itself)."""
        if not isinstance(key, int):
            return key if isinstance(key, str) else None
        name = names.get(key)
        if name is None and (table, key) not in self._missing:
            # FTL adds names as it goes: reload the (small) table for an id not seen yet.
            names.update(self.conn.execute(table))
            name = names.get(key)
            if name is None:
                self._missing.add((table, key))
        return name

    def _cname(self, key: object) -> str:
        if not (self.linked and isinstance(key, int)):
            return key if isinstance(key, str) else ""
        if key not in self._addinfo:
            found = self.conn.execute(
                "SELECT content FROM addinfo_by_id WHERE id = ? AND type = 1", (key,)
            ).fetchone()
            self._addinfo[key] = str(found[0]) if found else ""
        return self._addinfo[key]


def read_range(
    reader: Reader,
    after: int,
    *,
    limit: int = CHUNK,
    since: float | None = None,
    until: float | None = None,
    last_id: int | None = None,
) -> tuple[list[FtlRow], int]:
    """Grouped rows with after < id <= after + limit (and not beyond last_id, default the
    newest row), and the id to pass next time: bounded work per call, from a watermark."""
    newest = reader.bounds()[1] if last_id is None else last_id
    upto = min(after + limit, newest)
    if upto <= after:
        return [], after
    return reader.groups(after, upto, _window(since, until)), upto


def query_type(code: int) -> str:
    if code in _TYPES:
        return _TYPES[code]
    return f"TYPE{code - _TYPE_OFFSET}" if code > _TYPE_OFFSET else f"TYPE{code}"


def read(path: str, tally: Tally, label: str) -> SourceStats:
    """Every query of the database within the tally's window, into the tally."""
    stats = SourceStats(path, "pihole-ftl")
    tally.sources.append(stats)
    try:
        reader = Reader(path)
    except FtlError as error:
        stats.error = str(error)
        return stats
    inf = float("inf")
    window = _window(None if tally.since == -inf else tally.since,
                     None if tally.until == inf else tally.until)  # fmt: skip
    after = 0
    try:
        after, last_id = reader.bounds()
        stats.records = last_id - after
        while after < last_id:
            upto = min(after + CHUNK, last_id)
            _feed(reader.groups(after, upto, window), tally, label, stats)
            after = upto
    except sqlite3.DatabaseError as error:
        stats.error = f"{path}: read failed after row id {after}: {error}"
    finally:
        reader.close()
    return stats


def _window(since: float | None, until: float | None) -> tuple[float, float]:
    return (-_FAR if since is None else since, _FAR if until is None else until)


def _feed(rows: list[FtlRow], tally: Tally, label: str, stats: SourceStats) -> None:
    for row in rows:
        if not row.domain:
            stats.skipped += row.count  # a v6 row whose domain id has no name
            if not stats.first_skipped:
                stats.first_skipped = f"{row.count} rows without a domain"
            continue
        domain = row.domain.lower().rstrip(".")
        qtype = query_type(row.type)
        tally.query(domain, qtype, "", row.first, label, count=row.count, last=row.last)
        asked = tally.names.get(domain)  # None only if the window cut it (SQL did already)
        if asked is not None:
            asked.clients.update(row.clients)
        reason = BLOCKED.get(row.status)
        if reason:
            tally.block(domain, reason, "", row.first, count=row.count, at=row.cname.lower())
        stats.used += row.count
