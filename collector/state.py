"""What the collector knows: the latest result per series, counters, and each probe's health.

Rules for results that stop coming (the contract a NOC relies on):
- A check's gauges (success, durations, outcome) live while its latest result is fresh:
  younger than max(stale_intervals x its interval, min_stale). After that they vanish from
  /metrics, so Prometheus marks them stale instead of showing an old "success 1" forever.
- A probe is up while its stream is open (gRPC keepalive closes a stream whose path died).
- Counters stay (they are cumulative) until the probe has been silent for forget_after;
  then the probe and every series of it are forgotten.
- Within a probe, a result at or below the highest applied sequence number is a duplicate
  and is not counted again; a result older than the current one counts (so increase() over
  an outage is right once the backlog arrives) but does not replace the current one.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from courierwatch.v1 import courierwatch_pb2 as pb

ProbeKey = tuple[str, str]  # (site, probe_id)
# (target, port, check, group, address family, via): what makes two results one series.
CheckKey = tuple[str, int, str, str, str, str]
CountKey = tuple[CheckKey, int]  # (check, outcome)


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
    streams: int = 0  # open streams; more than one only briefly, while a reconnect overlaps
    last_seen: float = 0.0
    applied_through: int = 0
    applied: int = 0
    duplicates: int = 0
    health: pb.Health = field(default_factory=pb.Health)
    latest: dict[CheckKey, pb.Result] = field(default_factory=dict)
    # started() of each latest result: comparing against it is the hot path of apply().
    started: dict[CheckKey, float] = field(default_factory=dict)
    counts: dict[CountKey, int] = field(default_factory=dict)
    pop: str = ""  # where the probe's couriers land now
    pop_changes: int = 0
    pop_changed_at: float = 0.0
    groups: dict[str, GroupFacts] = field(default_factory=dict)  # from its Hello, by id

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


def check_key(result: pb.Result) -> CheckKey:
    return (
        result.target, result.port, result.check, result.group, result.address_family, result.via,
    )  # fmt: skip


def started(result: pb.Result) -> float:
    return result.started_at.seconds + result.started_at.nanos / 1e9


class State:
    def __init__(
        self,
        *,
        stale_intervals: float = 3.0,
        min_stale: float = 60.0,
        forget_after: float = 86400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.stale_intervals = stale_intervals
        self.min_stale = min_stale
        self.forget_after = forget_after
        self.clock = clock
        self._probes: dict[ProbeKey, Probe] = {}
        self.refused: Counter[str] = Counter()  # streams and messages refused, by reason

    def restore(self, probe: Probe) -> None:
        """Take back a probe from the durable store after a restart (not connected)."""
        probe.last_seen = probe.last_seen or self.clock()
        self._probes[probe.key] = probe

    def connect(self, hello: pb.Hello) -> Probe:
        key = (hello.site, hello.probe_id)
        probe = self._probes.get(key)
        if probe is None:
            probe = self._probes[key] = Probe(hello.site, hello.probe_id)
        probe.version = hello.software_version
        probe.config_digest = hello.config_digest
        probe.groups = {g.id: GroupFacts(g.id, g.title or g.id, g.critical) for g in hello.groups}
        probe.streams += 1
        probe.last_seen = self.clock()
        return probe

    def disconnect(self, probe: Probe) -> None:
        probe.streams = max(0, probe.streams - 1)

    def report_health(self, probe: Probe, health: pb.Health) -> None:
        probe.health = health
        probe.last_seen = self.clock()

    def apply(
        self, probe: Probe, results: Sequence[pb.Result], keys: Sequence[CheckKey] | None = None
    ) -> Applied:
        """Apply a batch in sequence order. `keys`: check_key() of each result, when the
        caller has them already (it is the costliest part of reading a result)."""
        now = probe.last_seen = self.clock()
        if keys is None:
            keys = [check_key(result) for result in results]
        counts: dict[CountKey, int] = {}
        applied = duplicates = 0
        through = probe.applied_through
        since = probe.started
        current: dict[CheckKey, pb.Result] = {}  # what this batch made the latest result
        for result, key in zip(results, keys, strict=True):
            seq = result.seq
            if seq <= through:
                duplicates += 1
                continue
            through = seq
            applied += 1
            counted = (key, result.outcome)
            counts[counted] = counts.get(counted, 0) + 1
            at = started(result)
            previous = since.get(key)
            if previous is None or at >= previous:
                since[key] = at
                current[key] = result
                if key[2] == "courier" and result.pop and result.pop != probe.pop:
                    if probe.pop:
                        probe.pop_changes += 1
                        probe.pop_changed_at = now
                    probe.pop = result.pop
        for key, result in current.items():
            # A copy: a result parsed from a batch holds the whole batch's memory.
            own = probe.latest[key] = pb.Result()
            own.CopyFrom(result)
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

    def fresh(self, probe: Probe) -> Iterator[pb.Result]:
        """The latest result of each check that is still fresh enough to be shown as current."""
        for _, result, _ in self.current(probe):
            yield result

    def current(self, probe: Probe) -> Iterator[tuple[CheckKey, pb.Result, float]]:
        """fresh(), with each result's check key and started()."""
        now = self.clock()
        since = probe.started
        for key, result in probe.latest.items():
            at = since[key]
            if now - at <= max(self.stale_intervals * result.interval_seconds, self.min_stale):
                yield key, result, at
