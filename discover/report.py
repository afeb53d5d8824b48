"""Printing a discovery: the report for a person (80 columns) or a program (JSON).

Sections, as the readiness report (`courierwatch check`) orders its findings: blocked Apple
names first, each a finding with its fix, then Apple names outside the catalog, then those in
it, then the names reached only through CNAME chains, then the courier POPs by client count and
the to-do list. Client addresses never appear: they are counted, and with --hash-clients
listed as salted hashes (a new salt each run) so a report can leave the site.

The fixes are worded by the caller's Advisor (the command line passes the readiness report's
own DNS filter action), so that both reports say the same thing for the same finding.

JSON schema "courierwatch.discover/1" (keys are only ever added; a consumer ignores unknown ones):

    schema          "courierwatch.discover/1"
    since, until    the time window asked for (ISO 8601, UTC) or null
    clients_hashed  true with --hash-clients (then names[].client_ids are filled)
    sources         [{path, kind, records, used, skipped, first_skipped, error}]
                    kind: pihole-ftl, pcap, pcapng, dnsmasq-log, unbound-log, log; records:
                    rows, packets or lines; used: those carrying DNS; error: "" or why the
                    source could not be read (what it gave before is kept)
    names_seen      distinct names in the sources, Apple's or not
    counts          {blocked, outside, catalog, chained}: Apple names per section
    names           [{name, section, apple, group, via, queries, clients, client_ids,
                      first_seen, last_seen, types, blocked, blocked_at, rcodes, answers,
                      cnames, ports, sources, action}]
                    section: blocked | outside (not in the catalog) | catalog | chained
                    (reached only through a CNAME chain); apple: why it is Apple's
                    (catalog, apple domain, cname); group: the catalog group or "";
                    via: the Apple name whose chain reaches it; types, blocked (by reason),
                    rcodes: {label: queries}; answers: [{address, apple}] (apple: inside
                    Apple's ranges); ports: TCP ports clients opened to its addresses;
                    first_seen, last_seen: ISO 8601 or null; action: the fix, blocked only
    pops            [{pop, clients, queries, names, hops}]  by clients, most first
    actions         every distinct fix, merged as the readiness report merges them
"""

from __future__ import annotations

import json
import math
import textwrap
import time
from collections.abc import Sequence
from typing import Any, Final, Protocol

from courierwatch.discover.classify import SECTIONS, Answer, Discovery, Entry, shape
from courierwatch.discover.tally import NameStats, SourceStats

__all__ = ["SCHEMA", "Advisor", "discovery_json", "discovery_text"]

SCHEMA: Final = "courierwatch.discover/1"
_WIDTH: Final = 80
_NAME: Final = 46  # columns for a name in a table row
_SHOWN_ANSWERS: Final = 3  # addresses printed per name; --json has them all
_DETAIL_LINES: Final = 3  # per name; the rest is in --json
_FAMILY: Final = 3  # numbered names of one shape (N-courier...) printed as one row from here
_TITLES: Final = {
    "outside": "Apple names outside the catalog",
    "catalog": "Apple names in the catalog",
    "chained": "Reached through CNAME chains",
}
_NOTES: Final = {  # what a blocked reason means, where it is not plain
    "special domain": "Pi-hole blocks iCloud Private Relay unless "
    "dns.specialDomains.iCloudPrivateRelay is false",
}


class Advisor(Protocol):
    """Words a DNS filter finding: the fix for one blocked name of a group, and the to-do
    list for several (one fix for many names merged)."""

    def fix(self, name: str, group: str) -> str: ...

    def todo(self, findings: Sequence[tuple[str, str]]) -> list[str]: ...


def _subject(entry: Entry) -> tuple[str, str]:
    # A filter that matched a CNAME hop is fixed by allowing the hop, whatever group asked.
    at = entry.stats.blocked_at
    return (at, "") if at else (entry.name, entry.group)


def discovery_json(discovery: Discovery, advisor: Advisor) -> str:
    blocked = discovery.section("blocked")
    document = {
        "schema": SCHEMA,
        "since": _iso(discovery.since),
        "until": _iso(discovery.until),
        "clients_hashed": discovery.clients_hashed,
        "sources": [_source_json(s) for s in discovery.sources],
        "names_seen": discovery.names,
        "counts": {name: len(discovery.section(name)) for name in SECTIONS},
        "names": [_entry_json(entry, advisor) for entry in discovery.entries],
        "pops": [
            {
                "pop": p.pop,
                "clients": p.clients,
                "queries": p.queries,
                "names": list(p.names),
                "hops": list(p.hops),
            }
            for p in discovery.pops
        ],
        "actions": advisor.todo([_subject(e) for e in blocked]) if blocked else [],
    }
    return json.dumps(document, indent=2)


def _source_json(source: SourceStats) -> dict[str, Any]:
    return {
        "path": source.path,
        "kind": source.kind,
        "records": source.records,
        "used": source.used,
        "skipped": source.skipped,
        "first_skipped": source.first_skipped,
        "error": source.error,
    }


def _entry_json(entry: Entry, advisor: Advisor) -> dict[str, Any]:
    stats = entry.stats
    return {
        "name": entry.name,
        "section": entry.section,
        "apple": entry.apple,
        "group": entry.group,
        "via": entry.via,
        "queries": stats.queries,
        "clients": len(stats.clients),
        "client_ids": list(entry.client_ids),
        "first_seen": _iso(stats.first),
        "last_seen": _iso(stats.last),
        "types": dict(sorted(stats.types.items())),
        "blocked": dict(sorted(stats.blocked.items())),
        "blocked_at": stats.blocked_at,
        "rcodes": dict(sorted(stats.rcodes.items())),
        "answers": [{"address": a.address, "apple": a.apple} for a in entry.answers],
        "cnames": list(entry.cnames),
        "ports": list(entry.ports),
        "sources": sorted(stats.sources),
        "action": advisor.fix(*_subject(entry)) if entry.section == "blocked" else "",
    }


def discovery_text(discovery: Discovery, advisor: Advisor) -> str:
    lines = [*_header(discovery), ""]
    blocked = discovery.section("blocked")
    if blocked:
        lines.append(f"Blocked Apple names: {len(blocked)} (the site's DNS filter answers them)")
        for entry in blocked:
            lines.extend(_finding(entry, advisor))
        lines.append("")
    for section in ("outside", "catalog", "chained"):
        entries = discovery.section(section)
        if not entries:
            continue
        title = f"{_TITLES[section]}: {len(entries)}"
        chained = section == "chained"  # hops nobody asked for: no counts to show
        lines.append(
            title if chained else f"{title:<{_NAME + 2}} {'queries':>8} {'clients':>8}  types"
        )
        group = None
        for entry in _families(entries):
            if section == "catalog" and entry.group != group:
                group = entry.group
                lines.append(f" [{group}]")
            lines.extend(_row(entry))
        lines.append("")
    lines.extend(_pop_lines(discovery))
    if blocked:
        lines += ["To do:"]
        for number, item in enumerate(advisor.todo([_subject(e) for e in blocked]), 1):
            lines.extend(_wrap(item, f"{number:>3}. ", "     "))
        lines.append("")
    counts = ", ".join(f"{len(discovery.section(s))} {s}" for s in SECTIONS)
    lines.append(_clip(f"{len(discovery.entries)} Apple names ({counts})"))
    return "\n".join(lines).rstrip("\n")


def _header(discovery: Discovery) -> list[str]:
    window = ""
    if discovery.since is not None or discovery.until is not None:
        window = f", {_when(discovery.since) or 'start'} to {_when(discovery.until) or 'end'}"
    count = len(discovery.sources)
    lines = [_clip(f"What the site's devices ask Apple for ({count} source"
                   f"{'s' if count != 1 else ''}{window}, times UTC)")]  # fmt: skip
    for source in discovery.sources:
        what = {"pihole-ftl": "rows", "pcap": "packets", "pcapng": "packets"}.get(
            source.kind, "lines"
        )
        counts = f"{source.records:,} {what}, {source.used:,} DNS"
        if source.skipped:
            counts += f", {source.skipped:,} skipped (first: {source.first_skipped})"
        lines.append(_clip(f"  {source.path} ({source.kind})"))
        lines.extend(_wrap(counts, " " * 6, " " * 6)[:2])
        if source.error:
            lines.extend(_wrap(f"NOT READ: {source.error}", " " * 6, " " * 8))
    clients = (
        "client addresses counted, shown as salted hashes (--json)"
        if discovery.clients_hashed
        else "client addresses counted, never shown"
    )
    apple = len(discovery.entries)
    lines.append(_clip(f"{discovery.names:,} names seen, {apple:,} of them Apple's; {clients}"))
    return lines


def _finding(entry: Entry, advisor: Advisor) -> list[str]:
    stats = entry.stats
    blocked = sum(stats.blocked.values())
    where = entry.group or "not in the catalog"
    lines = [_clip(f"BLOCKED {entry.name:<{_NAME}} {where}")]
    how = ", ".join(f"{reason} ({count:,})" for reason, count in sorted(stats.blocked.items()))
    at = f" at CNAME {stats.blocked_at}" if stats.blocked_at else ""
    detail = (
        f"{blocked:,} of {max(stats.queries, blocked):,} queries blocked{at} from "
        f"{_clients(len(stats.clients))}{_span(stats.first, stats.last)}: {how}"
    )
    lines.extend(_wrap(detail, "  x  ", " " * 5))
    notes = [_NOTES[reason] for reason in stats.blocked if reason in _NOTES]
    for note in notes:
        lines.extend(_wrap(note, " " * 5, " " * 5))
    lines.extend(_wrap(advisor.fix(*_subject(entry)), "     -> ", " " * 8))
    return lines


def _row(entry: Entry) -> list[str]:
    stats = entry.stats
    types = " ".join(sorted(stats.types, key=lambda t: -stats.types[t]))
    name = _clip(entry.name, _NAME)
    if entry.asked:
        counts = f" {stats.queries:>8,} {len(stats.clients):>8,}  {types}"
        lines = [_clip(f"  {name:<{_NAME}}{counts}".rstrip())]
    else:
        lines = [f"  {_clip(entry.name, _WIDTH - 2)}"]
    details = []
    if entry.via:
        details.append(f"via {entry.via}")
    if entry.cnames:
        details.append("CNAME " + ", ".join(entry.cnames))
    if entry.answers:
        shown = [f"{a.address} ({'Apple' if a.apple else 'not Apple'})" for a in entry.answers]
        more = len(shown) - _SHOWN_ANSWERS
        details.append(", ".join(shown[:_SHOWN_ANSWERS]) + (f" +{more}" if more > 0 else ""))
    if entry.ports:
        details.append("TCP " + ", ".join(map(str, entry.ports)))
    if stats.rcodes:
        details.append(", ".join(f"{code} {n:,}" for code, n in sorted(stats.rcodes.items())))
    span = _span(stats.first, stats.last).removeprefix(", ")
    if span:
        details.append(span)
    if details:
        lines.extend(_wrap("; ".join(details), " " * 6, " " * 6)[:_DETAIL_LINES])
    return lines


def _pop_lines(discovery: Discovery) -> list[str]:
    if not discovery.pops:
        return []
    lines = [f"{'Courier POPs (from courier CNAME chains)':<{_NAME + 2}} {'queries':>8} "
             f"{'clients':>8}"]  # fmt: skip
    for pop in discovery.pops:
        lines.append(f"  {_clip(pop.pop, _NAME):<{_NAME}} {pop.queries:>8,} {pop.clients:>8,}")
        detail = f"from {', '.join(pop.hops)}"
        if pop.pop == "unknown":
            detail += " (no match for apple.pop_pattern: a new POP name shape)"
        lines.extend(_wrap(detail, " " * 6, " " * 6)[:2])
    return [*lines, ""]


def _span(first: float, last: float) -> str:
    if not math.isfinite(first):
        return ""
    start, end = _when(first), _when(last)
    if start == end:
        return f", {start}"
    same_day = start[:10] == end[:10]
    return f", {start} to {end[11:] if same_day else end}"


def _clients(count: int) -> str:
    return f"{count} client{'s' if count != 1 else ''}"


def _families(entries: Sequence[Entry]) -> list[Entry]:
    """Entries, with each numbered family of at least _FAMILY names (the couriers' N-courier
    names, their N.courier-push-apple.com.akadns.net hops) merged into one, where the first
    of them stood; --json keeps every name."""
    members: dict[str, list[Entry]] = {}
    for entry in entries:
        family = shape(entry.name)
        if family:
            members.setdefault(family, []).append(entry)
    rows = []
    for entry in entries:
        family = shape(entry.name)
        group = members.get(family, []) if family else []
        if len(group) < _FAMILY:
            rows.append(entry)
        elif group[0] is entry:
            rows.append(_merged(family, group))
    return rows


def _merged(family: str, group: Sequence[Entry]) -> Entry:
    stats = NameStats()
    answers: dict[str, Answer] = {}
    for entry in group:
        part = entry.stats
        stats.queries += part.queries
        stats.first, stats.last = min(stats.first, part.first), max(stats.last, part.last)
        stats.clients |= part.clients
        stats.sources |= part.sources
        for table, into in ((part.types, stats.types), (part.rcodes, stats.rcodes)):
            for key, count in table.items():
                into[key] = into.get(key, 0) + count
        answers.update((a.address, a) for a in entry.answers)
    first = group[0]
    targets = {c for e in group for c in e.cnames}
    shapes = [shape(c) for c in targets]
    cnames = {s if s and shapes.count(s) > 1 else c for c, s in zip(targets, shapes, strict=True)}
    vias = {shape(e.via) or e.via for e in group if e.via}
    return Entry(
        name=f"{family} ({len(group)} names)",
        section=first.section,
        apple=first.apple,
        group=first.group,
        via=", ".join(sorted(vias)),
        stats=stats,
        client_ids=(),
        answers=tuple(sorted(answers.values(), key=lambda a: (":" in a.address, a.address))),
        cnames=tuple(sorted(cnames)),
        ports=tuple(sorted({p for e in group for p in e.ports})),
    )


def _when(ts: float | None) -> str:
    if ts is None or not math.isfinite(ts):
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def _iso(ts: float | None) -> str | None:
    if ts is None or not math.isfinite(ts):
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _wrap(text: str, first: str, rest: str) -> list[str]:
    return textwrap.wrap(text, _WIDTH, initial_indent=first, subsequent_indent=rest) or [first]


def _clip(text: str, width: int = _WIDTH) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
