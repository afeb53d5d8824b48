"""Per catalog group, the Apple queries a Pi-hole answered and blocked, and the names it blocked
most: the bounded summary a probe can stream every minute (issue 13, "live on the probe").

Pure: FtlRow lists in (courierwatch.discover.ftl.read_range on a Reader, from an id watermark,
so each pass does bounded work), a Summary out. Its size is bounded by the catalog's groups and
`top`, never by the names: one series per group and status, the blocked names only as a top N.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from courierwatch.discover.classify import apple_owned, catalog_hosts
from courierwatch.discover.ftl import BLOCKED, FtlRow

__all__ = ["OUTSIDE", "GroupCount", "Summary", "summarize"]

OUTSIDE: Final = "not_in_catalog"  # the group of an Apple name the catalog does not list


@dataclass(frozen=True, slots=True)
class GroupCount:
    group: str
    queries: int
    blocked: int


@dataclass(frozen=True, slots=True)
class Summary:
    groups: tuple[GroupCount, ...]  # groups with queries, by name
    top_blocked: tuple[tuple[str, str, int], ...]  # (name, group, queries blocked), most first


def summarize(
    rows: Iterable[FtlRow], *, top: int = 10, hosts: Mapping[str, str] | None = None
) -> Summary:
    hosts = catalog_hosts() if hosts is None else hosts
    queries: dict[str, int] = {}
    blocked: dict[str, int] = {}
    names: dict[tuple[str, str], int] = {}
    for row in rows:
        if not isinstance(row.domain, str):
            continue
        name = row.domain.lower().rstrip(".")
        group = hosts.get(name) or (OUTSIDE if apple_owned(name) else "")
        if not group:
            continue
        queries[group] = queries.get(group, 0) + row.count
        if row.status in BLOCKED:
            blocked[group] = blocked.get(group, 0) + row.count
            names[name, group] = names.get((name, group), 0) + row.count
    ranked = sorted(names.items(), key=lambda item: (-item[1], item[0]))[:top]
    return Summary(
        groups=tuple(GroupCount(g, queries[g], blocked.get(g, 0)) for g in sorted(queries)),
        top_blocked=tuple((name, group, count) for (name, group), count in ranked),
    )
