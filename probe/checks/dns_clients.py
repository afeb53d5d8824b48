"""dns_clients: what the site's devices asked the Pi-hole on this host for, and what it blocked.

One run is one pass over the rows FTL added to pihole-FTL.db since the previous pass (an id
watermark), read-only with discover's reader (courierwatch.discover.ftl): at most `rows` rows a
pass, the rest the next, so a pass's work is bounded whatever the site's traffic. The rows are
summarised per catalog group by courierwatch.discover.groups, Apple's names only, into
Result.dns_clients (queries and blocked per group, never one entry per name); the names blocked
most are only named, the first `top` of them, in the detail. The outcome is ok when nothing of
Apple's was blocked in the pass, dns_sinkhole when something was: this is the one way to see a
filter that hits the devices and spares the probe (a Pi-hole exempting its own host).

The watermark starts at the newest row of the first pass and lives, with the open connection,
in this module's per-target state for the life of the process; it is not persisted. A restarted
probe so never counts the database's history again and never counts a row twice (a persisted
watermark would have to commit together with the spooled result, or count twice after a crash
between them); the queries made while it was down are a gap in the counters, which Prometheus
reads as a counter reset, not a burst. Row ids only grow (AUTOINCREMENT): a newest id below the
watermark means a new database (Pi-hole recreated the file), which is read from its start.

Every read runs on the target's own worker thread: the event loop never waits on SQLite, and the
connection, which caches v6's name tables between passes, stays on the thread that opened it.
The connection is opened again when the file at the path is another one (replaced or moved).
"""

from __future__ import annotations

import asyncio
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from courierwatch.common.configfile import describe, to_int
from courierwatch.probe.checks.base import CheckContext
from courierwatch.probe.checks.spec import KindSpec, Option
from courierwatch.probe.failures import CheckFailure
from courierwatch.v1 import courierwatch_pb2 as pb

if TYPE_CHECKING:
    from courierwatch.discover.ftl import Reader
    from courierwatch.discover.groups import Summary
    from courierwatch.probe.targets import Target

GROUP: Final = "dns_clients"  # the group of its results: advisory (probe.config, ADVISORY_GROUPS)
# The target a `discover.pihole_db` config makes: the DNS server on this host. An address, not
# a name, so that a pass cut short by its timeout is no "DNS timeout" (runner._timed_out).
HOST: Final = "127.0.0.1"
PORT: Final = 53
BLOCKED_WORDS: Final = "the site's DNS filter blocked Apple names its devices asked for"


def _absolute_path(value: Any) -> str:
    if not isinstance(value, str) or not Path(value).is_absolute():
        raise ValueError(f"must be an absolute file path, got {describe(value)}")
    return value


DATABASE: Final = Option(
    "database",
    _absolute_path,
    "the Pi-hole FTL database to read, read-only (`discover.pihole_db` sets it)",
    "an absolute path",
    required=True,
)
TOP: Final = Option(
    "top",
    to_int(1, 100),
    "how many of the Apple names blocked in a pass the detail names, most blocked first",
    "1 to 100",
    default=10,
)
ROWS: Final = Option(
    "rows",
    to_int(1, 500_000),
    "at most this many new database rows per pass; the rest wait for the next pass",
    "1 to 500000",
    default=100_000,
)


@dataclass(slots=True)
class _Watch:
    """One target's state between passes."""

    worker: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="dns_clients")
    )
    reader: Reader | None = None  # touched on the worker thread only
    opened: tuple[int, int] = (0, 0)  # (st_dev, st_ino) of the file the reader has open
    watermark: int | None = None  # the last row id counted; touched by the pass's task only


# By series and database, not by the whole target: a reload that changes another of its
# options (its timeout, its rows) keeps the watch, its worker and its watermark; another
# database is watched afresh, from its newest row.
_WATCHES: dict[tuple[tuple[str, int, str, str, str], str], _Watch] = {}


async def run(target: Target, ctx: CheckContext, result: pb.Result) -> None:
    key = (target.series, DATABASE.of(target))
    watch = _WATCHES.get(key)
    if watch is None:
        watch = _WATCHES[key] = _Watch()
    loop = asyncio.get_running_loop()
    summary, upto = await loop.run_in_executor(
        watch.worker, _read, watch, DATABASE.of(target), ROWS.of(target), TOP.of(target)
    )
    # Only now: a pass cut short by its timeout leaves its rows for the next one.
    watch.watermark = upto
    facts = result.dns_clients
    facts.SetInParent()  # present even when the pass saw no Apple query
    for group in summary.groups:
        facts.groups.add(group=group.group, queries=group.queries, blocked=group.blocked)
    if any(group.blocked for group in summary.groups):
        raise CheckFailure(pb.OUTCOME_DNS_SINKHOLE, blocked_detail(summary))


def _read(watch: _Watch, path: str, rows: int, top: int) -> tuple[Summary, int]:
    """One pass, on the worker thread: (the summary, the watermark to keep)."""
    # Lazily: discover reads the catalog, and the catalog imports every kind, this one too.
    from courierwatch.discover import ftl, groups

    reader = _reader(watch, path)
    try:
        first, newest = reader.bounds()
        after = watch.watermark
        if after is None:
            after = newest  # the first pass: from now on, never the history
        elif newest < after:
            after = first  # a new database
        found, upto = ftl.read_range(reader, after, limit=rows, last_id=newest)
    except sqlite3.DatabaseError as error:
        _close(watch)  # opened afresh next pass
        raise CheckFailure(pb.OUTCOME_ERROR, f"{path}: read failed: {error}") from None
    return groups.summarize(found, top=top), upto


def _reader(watch: _Watch, path: str) -> Reader:
    from courierwatch.discover import ftl

    try:
        info = Path(path).stat()
    except OSError as error:
        _close(watch)
        raise CheckFailure(pb.OUTCOME_ERROR, f"{path}: {error.strerror or error}") from None
    if watch.reader is None or watch.opened != (info.st_dev, info.st_ino):
        _close(watch)
        try:
            watch.reader = ftl.Reader(path)
        except ftl.FtlError as error:
            raise CheckFailure(pb.OUTCOME_ERROR, str(error)) from None
        watch.opened = (info.st_dev, info.st_ino)
    return watch.reader


def _close(watch: _Watch) -> None:
    if watch.reader is not None:
        watch.reader.close()
        watch.reader = None


def blocked_detail(summary: Summary) -> str:
    """`<BLOCKED_WORDS>: push 12 (1-courier.push.apple.com, ...), ...`: each group with blocked
    queries, most first, with the names of the summary's top blocked in it; `...` when the
    group had more blocked than those names account for."""
    parts = []
    for group in sorted(summary.groups, key=lambda g: (-g.blocked, g.group)):
        if not group.blocked:
            continue
        named = [(name, count) for name, gid, count in summary.top_blocked if gid == group.group]
        names = [name for name, _ in named]
        if sum(count for _, count in named) < group.blocked:
            names.append("...")
        parts.append(f"{group.group} {group.blocked}" + (f" ({', '.join(names)})" if names else ""))
    return f"{BLOCKED_WORDS}: {', '.join(parts)}"


SPEC: Final = KindSpec(
    name="dns_clients",
    run=run,
    summary="the Pi-hole on this host blocked none of the Apple names its clients asked for "
    "since the last pass (counts per group)",
    options=(DATABASE, TOP, ROWS),
    default_port=PORT,
    facts=("dns_clients",),
)
