"""What the sources saw, merged: per DNS name, counted. Memory grows with the number of distinct
names (and their clients), never with the number of queries.

Every source reader (ftl, pcap, logs) feeds one Tally; several sources feed the same one, which is
how they are merged. The time window (--since/--until) is applied here, once for all of them.
Client addresses live only in memory, for counting: nothing here exports them.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from typing import Final

from courierwatch.probe import pop

# Bounds on what one name may hold: a name answered with a thousand addresses is still one row.
MAX_ANSWERS: Final = 16
MAX_CNAMES: Final = 8
MAX_PORTS: Final = 8
MAX_ADDRESSES: Final = 200_000  # distinct server addresses remembered for ports seen
SINKHOLE: Final = "answered 0.0.0.0"  # a blocked reason a capture sees: the filter's answer


@dataclass(slots=True)
class NameStats:
    queries: int = 0
    first: float = math.inf
    last: float = -math.inf
    clients: set[str] = field(default_factory=set)
    types: dict[str, int] = field(default_factory=dict)
    blocked: dict[str, int] = field(default_factory=dict)  # reason -> queries blocked
    blocked_at: str = ""  # the CNAME hop a filter matched, when it was not the name itself
    answers: set[str] = field(default_factory=set)  # addresses (at most MAX_ANSWERS)
    rcodes: dict[str, int] = field(default_factory=dict)  # NXDOMAIN, SERVFAIL, ... answers
    sources: set[str] = field(default_factory=set)  # labels of the sources that saw it


@dataclass(slots=True)
class PopStats:
    queries: int = 0
    clients: set[str] = field(default_factory=set)
    names: set[str] = field(default_factory=set)
    hops: set[str] = field(default_factory=set)  # the courier hops the POP was read from


@dataclass(slots=True)
class SourceStats:
    """One source's own account: how much it held, what it skipped and where the first was."""

    path: str
    kind: str  # "pihole-ftl", "pcap", "pcapng", "dnsmasq-log", "unbound-log", ...
    records: int = 0  # rows, packets or lines read
    used: int = 0  # of which carried DNS the report counts
    skipped: int = 0  # malformed or not understood: counted, never fatal
    first_skipped: str = ""  # "line 12: ..." or "packet 40: ...", for the operator
    error: str = ""  # the source could not be read (its data so far is kept)

    def skip(self, where: str, why: str) -> None:
        self.skipped += 1
        if not self.first_skipped:
            self.first_skipped = f"{where}: {why}"


class Tally:
    def __init__(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        pop_pattern: re.Pattern[str] | None = None,
    ) -> None:
        self.since = -math.inf if since is None else since
        self.until = math.inf if until is None else until
        self.pop_pattern = pop_pattern
        self.names: dict[str, NameStats] = {}
        self.cnames: dict[str, set[str]] = {}  # name -> names it is a CNAME for (its targets)
        self.ports: dict[str, set[int]] = {}  # server address -> TCP ports clients opened
        self.pops: dict[str, PopStats] = {}
        self.sources: list[SourceStats] = []

    def within(self, ts: float) -> bool:
        return self.since <= ts < self.until

    def _name(self, name: str) -> NameStats:
        stats = self.names.get(name)
        if stats is None:
            stats = self.names[name] = NameStats()
        return stats

    def query(
        self,
        name: str,
        qtype: str,
        client: str,
        ts: float,
        source: str,
        *,
        count: int = 1,
        last: float | None = None,
    ) -> None:
        """count queries of one type from one client, the first at ts and the last at last
        (an aggregated row, which its reader has already cut to the window)."""
        if not self.within(ts):
            return
        stats = self._name(name)
        stats.queries += count
        if client:  # "" when the reader adds clients apart (Pi-hole's distinct pairs)
            stats.clients.add(client)
        types = stats.types
        types[qtype] = types.get(qtype, 0) + count
        if ts < stats.first:
            stats.first = ts
        last = ts if last is None else last
        if last > stats.last:
            stats.last = last
        stats.sources.add(source)

    def block(
        self, name: str, reason: str, client: str, ts: float, *, count: int = 1, at: str = ""
    ) -> None:
        """count of the name's queries were blocked (they are counted by query() too); at is
        the CNAME hop the filter matched, if not the name."""
        if not self.within(ts):
            return
        stats = self._name(name)
        stats.blocked[reason] = stats.blocked.get(reason, 0) + count
        if client:  # a log's block line names no client when its query line is missing
            stats.clients.add(client)
        if at and at != name:
            stats.blocked_at = at

    def answer(
        self, chain: list[str], addresses: list[str], client: str, ts: float, source: str
    ) -> None:
        """A response: chain is the name asked then each CNAME target in order; addresses are
        what the last one resolved to. A filter's 0.0.0.0 or :: marks the name blocked."""
        if not self.since <= ts < self.until:
            return
        asked = chain[0]
        stats = self._name(asked)
        stats.sources.add(source)
        if len(chain) > 1:
            cnames = self.cnames
            for here, there in itertools.pairwise(chain):
                targets = cnames.get(here)
                if targets is None:
                    cnames[here] = {there}
                elif len(targets) < MAX_CNAMES:
                    targets.add(there)
        if addresses:
            _remember(stats.answers, addresses)
            if len(chain) > 1:
                _remember(self._name(chain[-1]).answers, addresses)
            if "0.0.0.0" in addresses or "::" in addresses:
                self.block(asked, SINKHOLE, client, ts)
        if self.pop_pattern is not None and len(chain) > 1 and "courier" in asked:
            where = pop.extract(chain, self.pop_pattern)
            if where:
                seen = self.pops.setdefault(where, PopStats())
                seen.queries += 1
                if client:
                    seen.clients.add(client)
                seen.names.add(asked)
                if len(seen.hops) < MAX_CNAMES:
                    seen.hops.add(next(h for h in reversed(chain) if "courier" in h))

    def rcode(self, name: str, code: str) -> None:
        """An answer without addresses: NXDOMAIN, SERVFAIL, NODATA and the like."""
        stats = self._name(name)
        stats.rcodes[code] = stats.rcodes.get(code, 0) + 1

    def connection(self, address: str, port: int) -> None:
        """A client opened TCP to address:port (a SYN in a capture): the port a name serves."""
        ports = self.ports.get(address)
        if ports is None:
            if len(self.ports) >= MAX_ADDRESSES:
                return
            ports = self.ports[address] = set()
        if len(ports) < MAX_PORTS:
            ports.add(port)


def _remember(held: set[str], addresses: list[str]) -> None:
    room = MAX_ANSWERS - len(held)
    if room > 0:
        held.update(addresses[:room])
