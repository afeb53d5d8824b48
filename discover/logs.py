"""DNS from query logs: dnsmasq's (and so Pi-hole's pihole.log) and unbound's.

dnsmasq with log-queries (`extra` adds an id and the client's port; both shapes are read):

    Dec  1 08:00:01 dnsmasq[812]: query[A] gs.apple.com from 192.168.1.20
    Dec  1 08:00:01 dnsmasq[812]: forwarded gs.apple.com to 9.9.9.9
    Dec  1 08:00:01 dnsmasq[812]: reply gs.apple.com is <CNAME>
    Dec  1 08:00:01 dnsmasq[812]: reply gs-loc.apple.com.akadns.net is 17.253.53.207
    Dec  1 08:00:02 dnsmasq[812]: cached gs.apple.com is <CNAME>
    Dec  1 08:00:03 dnsmasq[812]: gravity blocked metrics.icloud.com is 0.0.0.0

Blocked lines are Pi-hole's: `gravity blocked`, `regex blacklisted`/`regex denied`,
`exactly blacklisted`/`exactly denied`, `special domain`, a blocklist file (`/etc/pihole/
gravity.list`), and dnsmasq's `config NAME is 0.0.0.0` (an address=/NAME/ rule). A chain is read
from consecutive reply lines: each `<CNAME>` line is followed by the line of its target.

unbound with log-queries, log-replies and log-local-actions (its own or syslog's time stamp):

    [1764576001] unbound[901:0] info: 192.168.1.20 www.apple.com. A IN
    [1764576001] unbound[901:0] reply: 192.168.1.20 www.apple.com. A IN NOERROR 0.0123 0 93
    [1764576001] unbound[901:0] info: ads.example. always_null 192.168.1.20@53122 ads.example. A IN

Queries are counted from query lines; from reply lines only when the log has no query lines.
A line in neither shape is skipped and counted; a line of a known program that carries no query
(DHCP, startup, forwarding) is read and ignored.
"""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Final

from courierwatch.discover.tally import SourceStats, Tally

__all__ = ["read"]

_MONTHS: Final = {name: number for number, name in enumerate(calendar.month_abbr) if name}
_SYSLOG_TIME = r"(?P<mon>[A-Z][a-z]{2}) +(?P<day>\d{1,2}) (?P<clock>\d\d:\d\d:\d\d)"
_ISO_TIME = r"(?P<iso>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?)"
_STAMP = rf"(?:{_SYSLOG_TIME}|{_ISO_TIME})"
_DNSMASQ = re.compile(
    rf"{_STAMP} (?:\S+ )?(?:dnsmasq|pihole-FTL)\[\d+\]: (?:\d+ \S+/\d+ )?(?P<msg>.*)"
)
_UNBOUND = re.compile(
    rf"(?:\[(?P<epoch>\d+(?:\.\d+)?)\] unbound\[\d+:\d+\]|{_STAMP} (?:\S+ )?unbound(?:\[\d+\])?:"
    r" \[\d+:\d+\]) (?P<level>\w+): (?P<msg>.*)"
)
_QUERY = re.compile(r"query\[(?P<type>[^\]]+)\] (?P<name>\S+) from (?P<client>\S+)")
_REPLY = re.compile(r"(?:reply|cached|cached-stale) (?P<name>\S+) is (?P<value>\S+)")
_BLOCK = re.compile(
    r"(?P<how>gravity blocked|regex blacklisted|regex denied|exactly blacklisted|exactly denied"
    r"|special domain|config|/\S+) (?P<name>\S+) is (?P<value>\S+)"
)
_BLOCK_REASONS: Final = {
    "gravity blocked": "gravity",
    "regex blacklisted": "regex denylist",
    "regex denied": "regex denylist",
    "exactly blacklisted": "exact denylist",
    "exactly denied": "exact denylist",
    "special domain": "special domain",
    "config": "dnsmasq address= rule",
}
_BLOCKLISTS: Final = ("gravity", "black")  # file names of Pi-hole's (older) block lists
_SINKHOLES: Final = frozenset({"0.0.0.0", "::"})
_NOTHING: Final = frozenset({*_SINKHOLES, "NXDOMAIN", "NODATA", "NODATA-IPv4", "NODATA-IPv6"})
_NAME = r"(?P<name>\S+?)\.? (?P<type>\S+) IN"
_U_QUERY = re.compile(rf"(?P<client>[0-9a-fA-F.:]+) {_NAME}")
_U_REPLY = re.compile(rf"(?P<client>[0-9a-fA-F.:]+) {_NAME} (?P<rcode>[A-Z]+)\b")
_U_LOCAL = re.compile(rf"\S+ (?P<action>[a-z_]+) (?P<client>[0-9a-fA-F.:]+)@\d+ {_NAME}")
_U_RPZ = re.compile(rf"rpz: applied \[[^\]]*\] \S+ (?P<action>\S+) (?P<client>[^@\s]+)@\d+ {_NAME}")
_U_BLOCKING: Final = frozenset(
    {"always_null", "always_nxdomain", "always_refuse", "always_deny", "refuse", "deny",
     "inform_deny"}
)  # fmt: skip
_PENDING: Final = 10_000  # names whose last client is remembered until their reply lines


def read(path: str, tally: Tally, label: str) -> SourceStats:
    stats = SourceStats(path, "log")
    tally.sources.append(stats)
    try:
        with open(path, encoding="utf-8", errors="replace") as lines:  # noqa: PTH123
            _Reader(tally, label, stats).run(lines)
    except OSError as error:
        stats.error = f"{path}: {error.strerror or error}"
        return stats
    if stats.records and not stats.used and stats.skipped == stats.records:
        stats.error = f"{path}: no dnsmasq or unbound log lines ({stats.first_skipped})"
    return stats


class _Reader:
    def __init__(self, tally: Tally, label: str, stats: SourceStats) -> None:
        self.tally = tally
        self.label = label
        self.stats = stats
        self.kinds: set[str] = set()
        self.clients: dict[str, str] = {}  # name -> the client that last asked for it
        self.chain: list[str] = []  # the reply lines' chain so far
        self.chain_open = False  # its last line was a <CNAME>
        self.chain_ts = 0.0
        self.addresses: list[str] = []  # where the chain ends
        self.year = time.gmtime().tm_year
        self.now = time.time()
        self.unbound_queries = 0
        self.unbound_replies: dict[tuple[str, str, str], list[float]] = {}

    def run(self, lines: Iterable[str]) -> None:
        for number, line in enumerate(lines, 1):
            self.stats.records += 1
            line = line.rstrip("\n")
            try:
                if self.line(line):
                    continue
            except (ValueError, KeyError, OverflowError):
                self.stats.skip(f"line {number}", f"unreadable time stamp: {line[:40]!r}")
                continue
            self.stats.skip(f"line {number}", f"not a dnsmasq or unbound line: {line[:40]!r}")
        self.flush()
        if not self.unbound_queries:  # replies logged without their queries
            for (name, qtype, client), (count, first, last) in self.unbound_replies.items():
                self.tally.query(
                    name, qtype, client, first, self.label, count=int(count), last=last
                )
        if len(self.kinds) == 1:
            (self.stats.kind,) = self.kinds

    def line(self, line: str) -> bool:
        """Read one line; False if it is neither dnsmasq's nor unbound's."""
        match = _DNSMASQ.match(line)
        if match:
            self.kinds.add("dnsmasq-log")
            self.dnsmasq(match["msg"], self.stamp(match))
            return True
        match = _UNBOUND.match(line)
        if match:
            self.kinds.add("unbound-log")
            epoch = match["epoch"]
            self.unbound(match["msg"], float(epoch) if epoch else self.stamp(match))
            return True
        return False

    def stamp(self, match: re.Match[str]) -> float:
        if match["iso"]:
            when = datetime.fromisoformat(match["iso"].replace("Z", "+00:00"))
            return when.timestamp() if when.tzinfo else calendar.timegm(when.timetuple())
        # Syslog has no year: this year, unless that is in the future (a log from December).
        clock = [int(part) for part in match["clock"].split(":")]
        fields = (self.year, _MONTHS[match["mon"]], int(match["day"]), *clock)
        stamp = calendar.timegm((*fields, 0, 0, 0))
        if stamp > self.now + 86400:
            stamp = calendar.timegm((self.year - 1, *fields[1:], 0, 0, 0))
        return float(stamp)

    def dnsmasq(self, message: str, ts: float) -> None:
        tally, stats = self.tally, self.stats
        match = _REPLY.match(message)
        if match:
            self.reply(match["name"].lower().rstrip("."), match["value"], ts)
            stats.used += 1
            return
        self.flush()
        if message.startswith("query["):
            match = _QUERY.match(message)
            if match:
                name = match["name"].lower().rstrip(".")
                qtype = match["type"].upper().replace("TYPE=", "TYPE")
                tally.query(name, qtype, match["client"], ts, self.label)
                if len(self.clients) >= _PENDING:
                    self.clients.clear()
                self.clients[name] = match["client"]
                stats.used += 1
                return
        match = _BLOCK.match(message)
        if match:
            how, value = match["how"], match["value"]
            reason = _BLOCK_REASONS.get(how)
            if reason is None and any(part in how for part in _BLOCKLISTS):
                reason = "gravity"
            if reason and (value in _NOTHING or reason != _BLOCK_REASONS["config"]):
                name = match["name"].lower().rstrip(".")
                tally.block(name, reason, self.clients.get(name, ""), ts)
                stats.used += 1

    def reply(self, name: str, value: str, ts: float) -> None:
        """One reply line: the chain grows while lines say <CNAME>, then its addresses; the
        answer goes to the tally once the chain is complete (flush)."""
        if self.chain_open and name != self.chain[-1]:
            self.chain.append(name)  # the target of the <CNAME> line before
        elif not (self.chain and self.chain[-1] == name):
            self.flush()  # a new answer
            self.chain, self.chain_ts = [name], ts
        self.chain_open = value == "<CNAME>"
        if value in _NOTHING and value not in _SINKHOLES:
            self.tally.rcode(name, value)
        elif not value.startswith("<"):
            self.addresses.append(value)

    def flush(self) -> None:
        chain, addresses = self.chain, self.addresses
        if chain and (addresses or len(chain) > 1):
            client = self.clients.get(chain[0], "")
            self.tally.answer(chain, addresses, client, self.chain_ts, self.label)
        self.chain, self.addresses, self.chain_open = [], [], False

    def unbound(self, message: str, ts: float) -> None:
        tally, stats = self.tally, self.stats
        if message.startswith("rpz: applied"):
            match = _U_RPZ.match(message)
            if match:
                name = match["name"].lower()
                tally.block(name, f"RPZ {match['action']}", match["client"], ts)
                stats.used += 1
            return
        match = _U_LOCAL.fullmatch(message)
        if match and match["action"] in _U_BLOCKING:
            name = match["name"].lower()
            tally.block(name, f"unbound {match['action']}", match["client"], ts)
            stats.used += 1
            return
        match = _U_QUERY.fullmatch(message)
        if match:
            name = match["name"].lower()
            tally.query(name, match["type"], match["client"], ts, self.label)
            self.unbound_queries += 1
            stats.used += 1
            return
        match = _U_REPLY.match(message)
        if match:
            name = match["name"].lower()
            if match["rcode"] != "NOERROR":
                tally.rcode(name, match["rcode"])
            if tally.within(ts):
                key = (name, match["type"], match["client"])
                seen = self.unbound_replies.setdefault(key, [0, ts, ts])
                seen[0] += 1
                seen[1], seen[2] = min(seen[1], ts), max(seen[2], ts)
            stats.used += 1
