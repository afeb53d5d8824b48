"""What the collector knows: the latest result per series, counters, and each probe's health.

Rules for results that stop coming (the contract a NOC relies on):
- A check's gauges (success, durations, outcome) live while its latest result is fresh:
  younger than max(stale_intervals x its interval, min_stale). After that they vanish from
  /metrics, so Prometheus marks them stale instead of showing an old "success 1" forever.
- A probe is up while its stream is open (gRPC keepalive closes a stream whose path died).
- Counters stay (they are cumulative) until the probe has been silent for forget_after;
  then the probe and every series of it are forgotten.
- Within a probe, a result at or below the highest applied sequence number is a duplicate
  and is not counted again; a result older than the current one counts but does not replace it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from courierwatch.v1 import courierwatch_pb2 as pb

ProbeKey = tuple[str, str]  # (site, probe_id)
CheckKey = tuple[str, int, str, str]  # (target, port, check, group)


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
    latest: dict[CheckKey, pb.Result] = field(default_factory=dict)
    counts: dict[tuple[CheckKey, int], int] = field(default_factory=dict)

    @property
    def key(self) -> ProbeKey:
        return (self.site, self.probe_id)


def check_key(result: pb.Result) -> CheckKey:
    return (result.target, result.port, result.check, result.group)


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

    def connect(self, hello: pb.Hello) -> Probe:
        key = (hello.site, hello.probe_id)
        probe = self._probes.get(key)
        if probe is None:
            probe = self._probes[key] = Probe(hello.site, hello.probe_id)
        probe.version = hello.software_version
        probe.config_digest = hello.config_digest
        probe.streams += 1
        probe.last_seen = self.clock()
        return probe

    def disconnect(self, probe: Probe) -> None:
        probe.streams = max(0, probe.streams - 1)

    def apply(self, probe: Probe, results: Iterable[pb.Result]) -> int:
        """Apply a batch in order; returns the probe's highest applied sequence number."""
        probe.last_seen = self.clock()
        for result in results:
            if result.seq <= probe.applied_through:
                probe.duplicates += 1
                continue
            probe.applied_through = result.seq
            probe.applied += 1
            key = check_key(result)
            counted = (key, result.outcome)
            probe.counts[counted] = probe.counts.get(counted, 0) + 1
            current = probe.latest.get(key)
            if current is None or started(result) >= started(current):
                probe.latest[key] = result
        return probe.applied_through

    def probes(self) -> list[Probe]:
        """Every probe still remembered; forgets the ones silent for longer than forget_after."""
        now = self.clock()
        for key in [k for k, p in self._probes.items() if now - p.last_seen > self.forget_after]:
            del self._probes[key]
        return list(self._probes.values())

    def is_up(self, probe: Probe) -> bool:
        return probe.streams > 0

    def fresh(self, probe: Probe) -> Iterator[pb.Result]:
        """The latest result of each check that is still fresh enough to be shown as current."""
        now = self.clock()
        for result in probe.latest.values():
            horizon = max(self.stale_intervals * result.interval_seconds, self.min_stale)
            if now - started(result) <= horizon:
                yield result


def started(result: pb.Result) -> float:
    return result.started_at.seconds + result.started_at.nanos / 1e9
