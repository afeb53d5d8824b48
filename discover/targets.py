"""--write-targets: the Apple names the site's devices asked for that the catalog does not check,
as probe targets in probe.yaml's own `targets:` format, each under a comment saying where and
how often it was seen.

Per name a `dns` target, then one per TCP port clients were seen opening to its addresses (in a
capture): `courier` for a courier name, `tls` on 443, `http` on 80, `tcp` otherwise; with no
port seen, `tls` on 443. A numbered courier name (7-courier.x.push.apple.com) becomes its
logical name with `numbers`, as the catalog writes couriers (a courier check without numbers
would dial the catalog's 1..50, which another courier name need not have); an unnumbered one
gets the kind by port. Nothing is guessed: a name of a numbered family (p23-caldav.icloud.com
beside p41-caldav...: a wildcard in Apple's lists), one that never resolved, or one that is no
host name is listed in a comment at the end instead.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from courierwatch.common.configfile import valid_host
from courierwatch.discover.classify import Discovery, Entry, shape

__all__ = ["GROUP", "Planned", "plan", "render", "write"]

GROUP: Final = "discovered"  # the targets' group label
_KINDS: Final = {443: "tls", 80: "http"}  # by port; any other port: tcp
_COURIER_PORT: Final = 5223
_DEFAULT: Final = (("tls", 443),)
_COURIER = re.compile(r"(?P<number>\d+)-(?P<host>courier[a-z0-9-]*\..+)")


@dataclass(slots=True)
class Planned:
    host: str
    checks: list[tuple[str, int]]  # (kind, port) beside the dns target
    numbers: list[int] = field(default_factory=list)
    seen: list[str] = field(default_factory=list)  # where, for the comment


def plan(discovery: Discovery) -> tuple[list[Planned], list[str]]:
    """(the targets to write, the names listed but not written, each with why)."""
    outside = [e for e in discovery.entries if not e.group and e.asked]
    families = _families(outside)
    planned: dict[str, Planned] = {}
    unwritten = []
    for entry in outside:
        why = _not_probeable(entry, families)
        if why:
            unwritten.append(f"{entry.name}: {why}")
            continue
        courier = _COURIER.fullmatch(entry.name)
        host = courier["host"] if courier else entry.name
        ports = entry.ports
        if courier:
            checks = [("courier", p) for p in ports or (_COURIER_PORT,)]
        else:
            checks = [(_KINDS.get(p, "tcp"), p) for p in ports] or list(_DEFAULT)
        target = planned.setdefault(host, Planned(host, []))
        target.checks.extend(c for c in checks if c not in target.checks)
        if courier:
            target.numbers.append(int(courier["number"]))
        target.seen.append(_seen(entry))
    return list(planned.values()), unwritten


def render(discovery: Discovery, *, now: float | None = None) -> str:
    planned, unwritten = plan(discovery)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(time.time() if now is None else now))
    lines = [
        "# Apple names this site's devices asked for that courierwatch's built-in catalog does",
        f"# not check, written by `courierwatch discover` on {stamp} from:",
        *(f"#   {source.path}" for source in discovery.sources),
        "# Load it from probe.yaml with an include, or copy the entries under its targets:.",
        "targets:" if planned else "targets: []",
    ]
    for target in planned:
        lines.extend(f"  # {seen}" for seen in target.seen)
        numbers = f", numbers: [{', '.join(map(str, sorted(set(target.numbers))))}]"
        numbers = numbers if target.numbers else ""
        common = f"group: {GROUP}, addresses: public"
        lines.append(f"  - {{host: {target.host}, check: dns, {common}{numbers}}}")
        for kind, port in target.checks:
            lines.append(f"  - {{host: {target.host}, port: {port}, check: {kind}, {common}"
                         f"{numbers if kind == 'courier' else ''}}}")  # fmt: skip
    if unwritten:
        lines.append("# Seen but not written (name one host of a family yourself if it matters):")
        lines.extend(f"#   {item}" for item in unwritten)
    return "\n".join(lines) + "\n"


def write(path: str, discovery: Discovery) -> int:
    """Write the targets file; the number of names written as targets. OSError if it cannot."""
    text = render(discovery)
    Path(path).write_text(text, encoding="utf-8")
    return len(plan(discovery)[0])


def _seen(entry: Entry) -> str:
    stats = entry.stats
    first, last = (
        time.strftime("%Y-%m-%d %H:%M", time.gmtime(t)) for t in (stats.first, stats.last)
    )
    when = (
        first if first == last else f"{first} to {last[11:] if last[:10] == first[:10] else last}"
    )
    where = ", ".join(sorted(stats.sources))
    queries, clients = stats.queries, len(stats.clients)
    text = (f"{entry.name}: {queries:,} quer{'y' if queries == 1 else 'ies'} from {clients} "
            f"client{'' if clients == 1 else 's'}, {when} UTC, in {where}")  # fmt: skip
    if stats.blocked:
        text += "; blocked by the site's DNS filter"
    if entry.ports:
        text += f"; TCP {', '.join(map(str, entry.ports))} seen"
    return text


def _families(entries: Sequence[Entry]) -> dict[str, int]:
    """A numbered name's shape (first label's digits as N) -> how many names share it."""
    shapes: dict[str, int] = {}
    for entry in entries:
        family = shape(entry.name)
        if family:
            shapes[family] = shapes.get(family, 0) + 1
    return shapes


def _not_probeable(entry: Entry, families: dict[str, int]) -> str:
    if not valid_host(entry.name) or "." not in entry.name:
        return "not a host name"
    if any(label.startswith("_") for label in entry.name.split(".")):
        return "not a host name (a service label)"
    if _COURIER.fullmatch(entry.name):
        return ""
    family = shape(entry.name)
    if family and families.get(family, 0) > 1:
        return f"one of {families[family]} names {family} (a wildcard family)"
    if not entry.answers and entry.stats.rcodes and not entry.stats.blocked:
        return f"did not resolve ({', '.join(sorted(entry.stats.rcodes))})"
    return ""
