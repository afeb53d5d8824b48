"""What the collector knows: the latest result per series, counters, and each probe's health.

Rules for results that stop coming (the contract a NOC relies on):
- A check's gauges (success, durations, outcome) live while its latest result is fresh:
  younger than max(stale_intervals x its interval, min_stale). After that they vanish from
  /metrics, so Prometheus marks them stale instead of showing an old "success 1" forever.
- A probe is up while its stream is open (gRPC keepalive closes a stream whose path died).
- Counters stay (they are cumulative) until the probe has been silent for forget_after;
  then the probe and every series of it are forgotten.
- Within a probe, a result at or below the highest applied sequence number is a duplicate
  and is not counted again. Which result is latest is the probe's sequence order, and
  freshness is judged by when a result arrived here, on this collector's clock: the probe's
  wall clock (started_at) is data, never the judge, so an NTP step on a Pi changes neither.
- The probe's clock offset against ours is estimated from each Health beat (its send time
  against our arrival time: late by the one-way delay, milliseconds on a sound path).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from courierwatch.collector.quality import CONNECTING, DEFAULT_LOSS, LossThresholds, PathQuality
from courierwatch.collector.turns import Turns
from courierwatch.common import sitestate
from courierwatch.v1 import courierwatch_pb2 as pb

ProbeKey = tuple[str, str]  # (site, probe_id)
# (target, port, check, group, address family, via): what makes two results one series.
CheckKey = tuple[str, int, str, str, str, str]
CountKey = tuple[CheckKey, int]  # (check, outcome)
# A duplicate identity is shown for this long after its latest refused stream: three of a
# refused probe's longest backoffs, so a clone that keeps retrying keeps it shown.
DUPLICATE_SECONDS = 90.0


@dataclass(frozen=True, slots=True)
class GroupFacts:
    """What the probe's catalog says of one service group (the catalog is their one owner)."""

    id: str
    title: str
    critical: bool


def undescribed(group_id: str) -> GroupFacts:
    """A group the probe sent no facts for (an older probe): critical, titled by its id, as the
    catalog treats a group it does not know. Loud rather than silent: its alerts page."""
    return GroupFacts(group_id, group_id, True)


@dataclass(slots=True)
class Probe:
    site: str
    probe_id: str
    version: str = ""
    config_digest: str = ""
    # The address families the probe checks and why (configured, or how `auto` decided).
    families: tuple[str, ...] = ()
    families_reason: str = ""
    streams: int = 0  # open streams: one at most (ingest refuses a second, see there)
    peer: str = ""  # where the open stream comes from
    # The latest stream refused because this identity had one open: from where, and when.
    duplicate_peer: str = ""
    duplicate_at: float = 0.0
    clock_offset: float | None = None  # the probe's wall clock minus ours, from Health
    last_seen: float = 0.0
    applied_through: int = 0
    applied: int = 0
    duplicates: int = 0
    health: pb.Health = field(default_factory=pb.Health)
    latest: dict[CheckKey, pb.Result] = field(default_factory=dict)
    # started() of each latest result (what the probe says; shown, never judged by).
    started: dict[CheckKey, float] = field(default_factory=dict)
    # When each latest result arrived, on the collector's clock: what freshness is judged by.
    arrived: dict[CheckKey, float] = field(default_factory=dict)
    state_bytes: int = 0  # encoded size of `latest`: what this probe's state costs in memory
    sizes: dict[CheckKey, int] = field(default_factory=dict)  # of each result in `latest`
    counts: dict[CountKey, int] = field(default_factory=dict)
    pop: str = ""  # where the probe's couriers land now
    pop_changes: int = 0
    pop_changed_at: float = 0.0
    groups: dict[str, GroupFacts] = field(default_factory=dict)  # from its Hello, by id
    # Apple queries of the site's devices (dns_clients results): (group, status) -> queries.
    dns_clients: dict[tuple[str, str], int] = field(default_factory=dict)
    quality: PathQuality = field(default_factory=PathQuality)  # loss and jitter, per port
    # One more whenever `latest` or `groups` changes (whatever changes them must bump it).
    revision: int = 0
    # site_state()'s last answer, and what it was made from.
    assessed: _Assessed | None = None
    # current()'s last answer, and while it holds.
    fresh_set: _Fresh | None = None

    @property
    def key(self) -> ProbeKey:
        return (self.site, self.probe_id)


@dataclass(frozen=True, slots=True)
class Applied:
    """What one batch changed, for the durable store."""

    through: int
    applied: int
    duplicates: int
    counts: dict[CountKey, int]


@dataclass(frozen=True, slots=True)
class _Assessed:
    """A site state and what it was made from. Between two revisions results only
    leave the fresh set (they age), so its size names it; no result is held here."""

    key: tuple[int, int, str]  # (revision, fresh results, loss)
    site: sitestate.SiteState


@dataclass(frozen=True, slots=True)
class _Fresh:
    """A probe's fresh results at one revision and staleness setting, which hold from `since`
    to `until` on the collector's clock (when the first of them goes stale): between two
    revisions results only leave the fresh set, so a status page or scrape of a big fleet
    reads each probe's results again only when one of them has aged out."""

    key: tuple[int, float, float]  # (revision, stale_intervals, min_stale)
    since: float
    until: float
    current: tuple[tuple[CheckKey, pb.Result, float], ...]
    # Its results alone, made once: fresh() gives the same object while the set holds (the
    # status page keeps what it made of a probe for as long as it gets that object).
    results: tuple[pb.Result, ...]


def check_key(result: pb.Result) -> CheckKey:
    return (
        result.target, result.port, result.check, result.group, result.address_family, result.via,
    )  # fmt: skip


def started(result: pb.Result) -> float:
    at = result.started_at  # each read of a message field makes a new wrapper
    return at.seconds + at.nanos / 1e9


# A probe's dns_clients groups are catalog group ids; a probe that sends more, or longer ones,
# is not given a series for each.
DNS_CLIENT_GROUPS = 64
_GROUP_BYTES = 64


def count_dns_clients(counts: dict[tuple[str, str], int], facts: pb.DnsClientFacts) -> None:
    """Add one dns_clients pass to a probe's counters: per group, allowed and blocked."""
    for entry in facts.groups:
        group = entry.group
        if not group or len(group) > _GROUP_BYTES or entry.blocked > entry.queries:
            continue
        if (group, "blocked") not in counts and len(counts) >= 2 * DNS_CLIENT_GROUPS:
            continue
        for status, n in (("allowed", entry.queries - entry.blocked), ("blocked", entry.blocked)):
            counts[group, status] = counts.get((group, status), 0) + n


class State:
    def __init__(
        self,
        *,
        stale_intervals: float = 3.0,
        min_stale: float = 60.0,
        forget_after: float = 86400.0,
        clock: Callable[[], float] = time.time,
        loss: LossThresholds = DEFAULT_LOSS,
        count_checks: bool = True,
    ) -> None:
        """`count_checks`: keep a count per check and outcome (scrape mode's
        courierwatch_check_results_total). Remote-write mode does not: its store counts the
        results themselves (count_over_time), whichever collector wrote them."""
        self.loss = loss
        self.count_checks = count_checks
        self.stale_intervals = stale_intervals
        self.min_stale = min_stale
        self.forget_after = forget_after
        self.clock = clock
        self._probes: dict[ProbeKey, Probe] = {}
        self.refused: Counter[str] = Counter()  # streams and messages refused, by reason
        # Limits that cut or closed something without refusing it (results cut, idle streams).
        self.limited: Counter[str] = Counter()
        # Busy messages sent: batches held past a third of their probe's ack timeout.
        self.busy_notices = 0
        # The configuration: whether the latest (re)load worked, and when one last did.
        self.config_reload_ok = True
        self.config_reload_at = clock()
        # The turns batches take on the event loop (ingest takes them, /metrics counts them).
        self.turns = Turns()

    def restore(self, probe: Probe) -> None:
        """Take back a probe from the durable store after a restart (not connected)."""
        probe.last_seen = probe.last_seen or self.clock()
        self._probes[probe.key] = probe

    def connect(self, hello: pb.Hello, peer: str = "") -> Probe:
        key = (hello.site, hello.probe_id)
        probe = self._probes.get(key)
        if probe is None:
            probe = self._probes[key] = Probe(hello.site, hello.probe_id)
        probe.version = hello.software_version
        probe.config_digest = hello.config_digest
        probe.families = tuple(hello.families)
        probe.families_reason = hello.families_reason
        probe.groups = {g.id: GroupFacts(g.id, g.title or g.id, g.critical) for g in hello.groups}
        probe.revision += 1  # the site state reads the group facts
        probe.streams += 1
        probe.peer = peer
        probe.last_seen = self.clock()
        return probe

    def disconnect(self, probe: Probe) -> None:
        probe.streams = max(0, probe.streams - 1)

    def live(self, key: ProbeKey) -> Probe | None:
        """The probe of `key` if it has a stream open."""
        probe = self._probes.get(key)
        return probe if probe is not None and probe.streams else None

    def note_duplicate(self, probe: Probe, peer: str) -> None:
        """A second stream with `probe`'s identity was refused, coming from `peer`."""
        probe.duplicate_peer, probe.duplicate_at = peer, self.clock()

    def duplicated(self, probe: Probe) -> bool:
        """Whether a second stream with this identity was refused lately: a probe refused
        retries within its backoff cap (30 s), so a clone keeps this true while it runs."""
        at = probe.duplicate_at
        return bool(at) and self.clock() - at <= DUPLICATE_SECONDS

    def report_health(self, probe: Probe, health: pb.Health) -> None:
        probe.health = health
        now = probe.last_seen = self.clock()
        if health.HasField("sent_at"):
            sent = health.sent_at.seconds + health.sent_at.nanos / 1e9
            probe.clock_offset = sent - now

    def apply(
        self,
        probe: Probe,
        results: Sequence[pb.Result],
        keys: Sequence[CheckKey] | None = None,
        sizes: Sequence[int] | None = None,
    ) -> Applied:
        """Apply a batch in sequence order. `keys`: check_key() of each result, `sizes`: its
        ByteSize(), when the caller has them already (the costliest parts of reading it)."""
        now = probe.last_seen = self.clock()
        if keys is None:
            keys = [check_key(result) for result in results]
        if sizes is None:
            sizes = [result.ByteSize() for result in results]
        counts: dict[CountKey, int] = {}
        counting = self.count_checks
        duplicates = 0
        through = probe.applied_through
        quality, loss = probe.quality, self.loss
        # The batch's latest result of each check, and its size: a check's later result
        # replaces its earlier one here, so only the last is copied into the state.
        current: dict[CheckKey, tuple[pb.Result, int]] = {}
        for result, key, size in zip(results, keys, sizes, strict=True):
            seq = result.seq
            if seq <= through:
                duplicates += 1
                continue
            through = seq
            current[key] = (result, size)
            if counting:
                counted = (key, result.outcome)
                counts[counted] = counts.get(counted, 0) + 1
            kind = key[2]
            if kind in CONNECTING:
                quality.add(result, loss)
                if kind == "courier" and (pop := result.pop) and pop != probe.pop:
                    if probe.pop:
                        probe.pop_changes += 1
                        probe.pop_changed_at = now
                    probe.pop = pop
            elif kind == "dns_clients":  # counted once: duplicates were skipped above
                count_dns_clients(probe.dns_clients, result.dns_clients)
        applied = len(results) - duplicates
        latest, arrived, held, since = probe.latest, probe.arrived, probe.sizes, probe.started
        for key, (result, size) in current.items():
            # A copy: a result parsed from a batch holds the whole batch's memory.
            own = latest[key] = pb.Result()
            own.CopyFrom(result)
            probe.state_bytes += size - held.get(key, 0)
            held[key], arrived[key] = size, now
            # A higher number is newer, whatever its started_at says (a stepped clock).
            since[key] = started(own)
        probe.revision += bool(current)
        probe.applied_through = through
        for counted, n in counts.items():
            probe.counts[counted] = probe.counts.get(counted, 0) + n
        probe.applied += applied
        probe.duplicates += duplicates
        return Applied(through, applied, duplicates, counts)

    def probes(self) -> list[Probe]:
        return list(self._probes.values())

    def get(self, key: ProbeKey) -> Probe | None:
        return self._probes.get(key)

    def forget_silent(self) -> list[ProbeKey]:
        """Forget probes silent for longer than forget_after; returns their keys."""
        now = self.clock()
        gone = [
            key
            for key, probe in self._probes.items()
            if probe.streams == 0 and now - probe.last_seen > self.forget_after
        ]
        for key in gone:
            del self._probes[key]
        return gone

    def groups(self, probe: Probe) -> list[GroupFacts]:
        """The facts of every group the probe said it checks, then of each group its results
        show that it did not describe (undescribed())."""
        told = probe.groups
        seen = dict.fromkeys(key[3] for key in probe.latest)
        return [*told.values(), *(undescribed(g) for g in seen if g not in told)]

    def group_facts(self, probe: Probe, group_id: str) -> GroupFacts:
        return probe.groups.get(group_id) or undescribed(group_id)

    def is_up(self, probe: Probe) -> bool:
        return probe.streams > 0

    def site_state(
        self, probe: Probe, fresh: Sequence[pb.Result] | None = None
    ) -> sitestate.SiteState:
        """The probe's one site state (common/sitestate) from `fresh` (its fresh() results, if
        the caller has them), assessed again only when they, its group facts or its loss
        finding changed. probe_offline once it has had no stream for min_stale."""
        if not self.is_up(probe) and self.clock() - probe.last_seen > self.min_stale:
            return sitestate.offline()
        results = list(self.fresh(probe)) if fresh is None else fresh
        key = (probe.revision, len(results), probe.quality.finding())
        done = probe.assessed
        if done is not None and done.key == key:
            return done.site
        critical = {g.id: g.critical for g in probe.groups.values()}
        site = sitestate.assess(results, critical, loss=key[2])
        probe.assessed = _Assessed(key, site)
        return site

    def fresh(self, probe: Probe) -> Sequence[pb.Result]:
        """The latest result of each check that is still fresh enough to be shown as current."""
        return self._fresh(probe).results

    def current(self, probe: Probe) -> Sequence[tuple[CheckKey, pb.Result, float]]:
        """fresh(), with each result's check key and started()."""
        return self._fresh(probe).current

    def _fresh(self, probe: Probe) -> _Fresh:
        now = self.clock()
        key = (probe.revision, self.stale_intervals, self.min_stale)
        held = probe.fresh_set
        # A clock stepped back (now before `since`) may make a stale result fresh again.
        if held is not None and held.key == key and held.since <= now < held.until:
            return held
        since, arrived = probe.started, probe.arrived
        stale_intervals, min_stale = self.stale_intervals, self.min_stale
        current = []
        until = math.inf
        for check, result in probe.latest.items():
            horizon = max(stale_intervals * result.interval_seconds, min_stale)
            if now - arrived[check] <= horizon:
                current.append((check, result, since[check]))
                until = min(until, arrived[check] + horizon)
        held = probe.fresh_set = _Fresh(
            key, now, until, tuple(current), tuple(result for _, result, _ in current)
        )
        return held
