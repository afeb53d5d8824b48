"""Which names are Apple's, which catalog group each one serves, and where their answers point.

A name is Apple-related when the built-in catalog lists it (courierwatch.probe.catalog, with the
numbered N-courier names it dials), when it lies under a domain Apple owns (APPLE_SUFFIXES), or
when the CNAME chain of such a name reaches it: that is how Akamai, Apple's own edge and other
CDN names (e6858.dsce9.akamaiedge.net, ...) come into the report. Everything else is counted
and left out.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from courierwatch.discover.tally import NameStats, PopStats, SourceStats, Tally
from courierwatch.probe import catalog, sanity
from courierwatch.probe.rotation import numbered

__all__ = [
    "APPLE_SUFFIXES",
    "Answer",
    "Discovery",
    "Entry",
    "Pop",
    "apple_owned",
    "assess",
    "catalog_hosts",
    "shape",
]

# Domains Apple owns (registrable domains, Apple's top-level domain, and the zones of its CNAME
# hops at Akamai), beyond the catalog's exact host names. The catalog also names third parties
# (DigiCert, Entrust, Cloudflare): those count as Apple-related only by their exact catalog
# names. A test checks that every catalog host under an "apple" domain is covered here.
APPLE_SUFFIXES: Final = frozenset(
    {
        "apple", "apple.com", "apple.com.cn", "apple.news", "icloud.com", "icloud.com.cn",
        "icloud-content.com", "me.com", "mac.com", "mzstatic.com", "itunes.com",
        "apple-cloudkit.com", "apple-livephotoskit.com", "apple-mapkit.com", "apple-dns.net",
        "cdn-apple.com", "aaplimg.com", "appleschoolcontent.com", "axm-usercontent-apple.com",
        "push-apple.com.akadns.net", "courier-push-apple.com.akadns.net",
        "apple.com.akadns.net", "apple.com.edgekey.net", "apple.com.edgesuite.net",
        "icloud.com.akadns.net", "apple-dns.cn",
    }
)  # fmt: skip
MAX_CLIENT_IDS: Final = 100  # hashed client ids listed per name (all are counted)
SECTIONS: Final = ("blocked", "outside", "catalog", "chained")
_DIGITS: Final = re.compile(r"\d+")


@dataclass(frozen=True, slots=True)
class Answer:
    address: str
    apple: bool  # inside Apple's ranges (catalog.apple().ranges)


@dataclass(frozen=True, slots=True)
class Entry:
    name: str
    section: str  # one of SECTIONS
    apple: str  # why it is Apple's: "catalog", "apple domain" or "cname"
    group: str  # the catalog group it belongs to; "" when not in the catalog
    via: str  # for a name reached through a chain: the Apple name the chain starts from
    stats: NameStats
    client_ids: tuple[str, ...]  # salted hashes (--hash-clients), else empty
    answers: tuple[Answer, ...]
    cnames: tuple[str, ...]  # names this one is a CNAME for
    ports: tuple[int, ...]  # TCP ports clients opened to its addresses

    @property
    def asked(self) -> bool:
        return self.stats.queries > 0 or bool(self.stats.blocked)


@dataclass(frozen=True, slots=True)
class Pop:
    pop: str
    clients: int
    queries: int
    names: tuple[str, ...]  # the courier names asked
    hops: tuple[str, ...]  # the chain hops the POP was read from (or failed to be)


@dataclass(frozen=True, slots=True)
class Discovery:
    sources: tuple[SourceStats, ...]
    entries: tuple[Entry, ...]  # by section, in SECTIONS order
    pops: tuple[Pop, ...]  # most clients first
    names: int  # distinct names seen, Apple's or not
    since: float | None
    until: float | None
    clients_hashed: bool

    def section(self, name: str) -> tuple[Entry, ...]:
        return tuple(entry for entry in self.entries if entry.section == name)


@functools.cache
def catalog_hosts() -> Mapping[str, str]:
    """Every name the catalog checks -> its group (the first, critical groups come first),
    with the numbered names a courier check dials."""
    hosts: dict[str, str] = {}
    for target in catalog.targets():
        hosts.setdefault(target.host, target.group)
        for number in target.numbers:
            hosts.setdefault(numbered(number, target.host), target.group)
    return hosts


def shape(name: str) -> str:
    """The family of a numbered name, its first label's digits as N (7-courier.push.apple.com
    -> N-courier.push.apple.com); "" for a name without digits in its first label."""
    first, _, rest = name.partition(".")
    return f"{_DIGITS.sub('N', first)}.{rest}" if rest and _DIGITS.search(first) else ""


def apple_owned(name: str) -> bool:
    labels = name.split(".")
    return any(".".join(labels[i:]) in APPLE_SUFFIXES for i in range(len(labels)))


def assess(
    tally: Tally,
    *,
    hosts: Mapping[str, str] | None = None,
    ranges: Sequence[sanity.Network] | None = None,
    hash_clients: bool = False,
) -> Discovery:
    hosts = catalog_hosts() if hosts is None else hosts
    ranges = catalog.apple().ranges if ranges is None else ranges
    salt = os.urandom(16)  # per run: hashes tell clients apart, never across reports
    hashed = functools.partial(_client_ids, salt) if hash_clients else _no_ids
    apple = {
        name: ("catalog" if name in hosts else "apple domain")
        for name in {*tally.names, *tally.cnames}
        if name in hosts or apple_owned(name)
    }
    via = _reached(apple, tally.cnames, (n for n, st in tally.names.items() if st.queries))
    empty = NameStats()
    entries = []
    for name, why in [*apple.items(), *((n, "cname") for n in via if n not in apple)]:
        stats = tally.names.get(name, empty)
        addresses = sorted(stats.answers, key=_address_order)
        group = hosts.get(name, "")
        entry = Entry(
            name=name,
            section=_section(stats, group),
            apple=why,
            group=group,
            via=via.get(name, ""),
            stats=stats,
            client_ids=hashed(stats.clients),
            answers=tuple(Answer(a, _inside(a, ranges)) for a in addresses),
            cnames=tuple(sorted(tally.cnames.get(name, ()))),
            ports=tuple(sorted({p for a in stats.answers for p in tally.ports.get(a, ())})),
        )
        entries.append(entry)
    order = {gid: index for index, gid in enumerate(catalog.groups())}
    entries.sort(
        key=lambda e: (
            SECTIONS.index(e.section),
            order.get(e.group, len(order)) if e.section in ("blocked", "catalog") else 0,
            e.via if e.section == "chained" else "",
            -(sum(e.stats.blocked.values()) if e.section == "blocked" else e.stats.queries),
            e.name,
        )
    )
    return Discovery(
        sources=tuple(tally.sources),
        entries=tuple(entries),
        pops=_pops(tally.pops),
        names=len({*tally.names, *tally.cnames}),
        since=None if tally.since == float("-inf") else tally.since,
        until=None if tally.until == float("inf") else tally.until,
        clients_hashed=hash_clients,
    )


def _section(stats: NameStats, group: str) -> str:
    if stats.blocked:
        return "blocked"
    if not stats.queries:
        return "chained"
    return "catalog" if group else "outside"


def _reached(
    apple: Mapping[str, str], cnames: Mapping[str, set[str]], asked: Iterable[str]
) -> dict[str, str]:
    """Every name an Apple name's CNAME chain leads to -> the Apple name it starts from: a
    name the clients asked for where there is one. Breadth first, so a loop ends."""
    via: dict[str, str] = {}
    asked = set(asked)
    for starts in (sorted(n for n in apple if n in asked), sorted(apple)):
        frontier = [(name, name) for name in starts if name in cnames and name not in via]
        while frontier:
            following = []
            for name, origin in frontier:
                for target in sorted(cnames.get(name, ())):
                    if target not in via and target != origin:
                        via[target] = origin
                        following.append((target, origin))
            frontier = following
    return via


def _pops(pops: Mapping[str, PopStats]) -> tuple[Pop, ...]:
    ranked = sorted(pops.items(), key=lambda item: (-len(item[1].clients), item[0]))
    return tuple(
        Pop(
            name,
            len(seen.clients),
            seen.queries,
            tuple(sorted(seen.names)),
            tuple(sorted(seen.hops)),
        )
        for name, seen in ranked
    )


def _inside(address: str, ranges: Sequence[sanity.Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in ranges)


def _address_order(address: str) -> tuple[int, str]:
    return (":" in address, address)


def _client_ids(salt: bytes, clients: Iterable[str]) -> tuple[str, ...]:
    ids = {hashlib.blake2b(c.encode(), key=salt, digest_size=6).hexdigest() for c in clients}
    return tuple(sorted(ids)[:MAX_CLIENT_IDS])


def _no_ids(clients: Iterable[str]) -> tuple[str, ...]:
    return ()
