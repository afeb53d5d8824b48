"""Renders the collector's state as Prometheus metric families, fresh at every scrape.

Built from the state at each scrape rather than kept in module-level metric objects: a
series that leaves the state (stale or forgotten) is simply not written, with no bookkeeping.

Two renderers of the same families:
- Exposition: the text format 0.0.4 written by hand: the families, series, label order and
  values of prometheus_client's generate_latest() for StateCollector (tests compare them;
  only numbers from 1e6 are spelled as Python does, not as Go), at a tenth of the cost: it
  keeps each check's label text from scrape to scrape, and its lines while its latest result
  is the same object. This is what /metrics should serve (render_chunks()).
- StateCollector: the families as prometheus_client objects, for a CollectorRegistry.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from courierwatch.collector.state import CheckKey, Probe, ProbeKey, State, check_key, started
from courierwatch.common.results import courier_state, outcome_label
from courierwatch.v1 import courierwatch_pb2 as pb

CHECK_LABELS = ("site", "probe", "target", "port", "check", "group", "family", "via")
PROBE_LABELS = ("site", "probe")
PHASES = ("dns", "connect", "tls", "first_byte", "total")
COURIER_STATES = ("ok", "degraded", "down")

# As written in a line, between group and the labels after it.
_OUTCOME_LABELS = {number: f'outcome="{outcome_label(number)}",' for number in pb.Outcome.values()}
_UNKNOWN_OUTCOME = 'outcome="unknown",'


@dataclass(frozen=True, slots=True)
class Family:
    name: str  # as prometheus_client names it: a counter's without "_total"
    exposed: str  # the name of its samples on /metrics
    counter: bool
    help: str
    labels: tuple[str, ...]

    def header(self) -> str:
        kind = "counter" if self.counter else "gauge"
        text = self.help.replace("\\", r"\\").replace("\n", r"\n")
        return f"# HELP {self.exposed} {text}\n# TYPE {self.exposed} {kind}\n"

    def metric(self) -> GaugeMetricFamily | CounterMetricFamily:
        kind = CounterMetricFamily if self.counter else GaugeMetricFamily
        return kind(self.name, self.help, labels=list(self.labels))


def _gauge(name: str, documentation: str, labels: Sequence[str]) -> Family:
    return Family(name, name, False, documentation, tuple(labels))


def _counter(name: str, documentation: str, labels: Sequence[str]) -> Family:
    return Family(name, f"{name}_total", True, documentation, tuple(labels))


_CHECK_POP = (*CHECK_LABELS, "pop")
SUCCESS = _gauge("courierwatch_check_success",
                 "1 if the latest run of the check worked, 0 if it failed.", _CHECK_POP)
OUTCOME = _gauge("courierwatch_check_outcome",
                 "Always 1; the outcome label names the failure class of the latest run.",
                 (*_CHECK_POP, "outcome"))
DURATION = _gauge("courierwatch_check_duration_seconds",
                  "Duration of each phase of the latest run of the check.", (*_CHECK_POP, "phase"))
LAST_RUN = _gauge("courierwatch_check_last_run_timestamp_seconds",
                  "When the latest run of the check started, in Unix time.", CHECK_LABELS)
NOT_AFTER = _gauge("courierwatch_tls_leaf_not_after_timestamp_seconds",
                   "Expiry of the leaf certificate the endpoint presented, in Unix time.",
                   CHECK_LABELS)
ISSUER = _gauge("courierwatch_tls_issuer_info",
                "Always 1; who issued the certificate the endpoint presented, and which "
                "anchors verified it (expected, site, or none).",
                (*CHECK_LABELS, "issuer", "verified_by"))
NTP = _gauge("courierwatch_ntp_offset_seconds",
             "Clock offset of the NTP server against the probe's clock.",
             ("site", "probe", "target", "family"))
RESULTS = _counter("courierwatch_check_results", "Results received, by outcome.",
                   (*CHECK_LABELS, "outcome"))
COURIER = _gauge("courierwatch_courier_state",
                 "Always 1; state is ok (5223 works), degraded (only the 443 fallback) "
                 "or down (no courier reachable).", (*PROBE_LABELS, "state"))
POP = _gauge("courierwatch_pop_info", "Always 1; the Akamai POP the probe's couriers land on.",
             (*PROBE_LABELS, "pop"))
POP_CHANGES = _counter("courierwatch_pop_changes", "Times the courier POP changed.",
                       PROBE_LABELS)
POP_CHANGED = _gauge("courierwatch_pop_last_change_timestamp_seconds",
                     "When the courier POP last changed, in Unix time.", PROBE_LABELS)
UP = _gauge("courierwatch_probe_up", "1 while the probe has a stream open to this collector.",
            PROBE_LABELS)
LAST_SEEN = _gauge("courierwatch_probe_last_seen_timestamp_seconds",
                   "When the probe was last heard from, in Unix time.", PROBE_LABELS)
INFO = _gauge("courierwatch_probe_info",
              "Always 1; software version and configuration digest of the probe.",
              (*PROBE_LABELS, "version", "config_digest"))
APPLIED = _counter("courierwatch_probe_results_applied", "Results applied from the probe.",
                   PROBE_LABELS)
DUPLICATES = _counter("courierwatch_probe_results_duplicate",
                      "Results received again (replays) and ignored.", PROBE_LABELS)
DEPTH = _gauge("courierwatch_probe_spool_depth",
               "Results in the probe's spool waiting for an acknowledgement.", PROBE_LABELS)
SPOOL_BYTES = _gauge("courierwatch_probe_spool_bytes", "Size of the probe's spooled results.",
                     PROBE_LABELS)
DROPPED = _counter("courierwatch_probe_spool_dropped",
                   "Results the probe dropped because its spool hit a bound.", PROBE_LABELS)
LAG = _gauge("courierwatch_probe_loop_lag_seconds",
             "How late the probe's latest check started against its schedule.", PROBE_LABELS)
OLDEST = _gauge("courierwatch_probe_oldest_pending_seconds",
                "Age of the oldest result the probe has not had acknowledged.", PROBE_LABELS)
REFUSED = _counter("courierwatch_collector_refused",
                   "Streams or messages the collector refused, by reason.", ("reason",))

# What a check's latest result shows, one string of lines per family: Exposition's cache.
CHECK_FAMILIES = (SUCCESS, OUTCOME, DURATION, LAST_RUN, NOT_AFTER, ISSUER, NTP)
# Per probe, from its counters, health and couriers.
PROBE_FAMILIES = (COURIER, POP, POP_CHANGES, POP_CHANGED, UP, LAST_SEEN, INFO, APPLIED,
                  DUPLICATES, DEPTH, SPOOL_BYTES, DROPPED, LAG, OLDEST)  # fmt: skip
FAMILIES = (*CHECK_FAMILIES, RESULTS, *PROBE_FAMILIES, REFUSED)  # the order on /metrics


class StateCollector(Collector):
    def __init__(self, state: State) -> None:
        self._state = state

    def collect(self) -> Iterator[Metric]:
        families = {family: family.metric() for family in FAMILIES}
        (success, outcome, duration, last_run, not_after, issuer, ntp, results, courier, pop,
         pop_changes, pop_changed, up, last_seen, info, applied, duplicates, depth, spool_bytes,
         dropped, lag, oldest, refused) = families.values()  # fmt: skip
        state = self._state
        for probe in state.probes():
            who = [probe.site, probe.probe_id]
            up.add_metric(who, 1.0 if state.is_up(probe) else 0.0)
            last_seen.add_metric(who, probe.last_seen)
            info.add_metric([*who, probe.version, probe.config_digest], 1.0)
            applied.add_metric(who, probe.applied)
            duplicates.add_metric(who, probe.duplicates)
            health = probe.health
            depth.add_metric(who, health.spool_depth)
            spool_bytes.add_metric(who, health.spool_bytes)
            dropped.add_metric(who, health.dropped_total)
            lag.add_metric(who, health.loop_lag_seconds)
            oldest.add_metric(who, health.oldest_pending_seconds)
            pop_changes.add_metric(who, probe.pop_changes)
            if probe.pop_changed_at:
                pop_changed.add_metric(who, probe.pop_changed_at)
            for (key, code), count in probe.counts.items():
                results.add_metric([*_labels(probe, key), outcome_label(code)], count)
            current = list(state.fresh(probe))
            couriers = courier_state(current)
            if couriers is not None:
                courier.add_metric([*who, couriers], 1.0)
                if probe.pop:
                    pop.add_metric([*who, probe.pop], 1.0)
            for result in current:
                labels = _labels(probe, check_key(result))
                with_pop = [*labels, result.pop]
                success.add_metric(with_pop, 1.0 if result.outcome == pb.OUTCOME_OK else 0.0)
                outcome.add_metric([*with_pop, outcome_label(result.outcome)], 1.0)
                last_run.add_metric(labels, started(result))
                for phase in PHASES:
                    if result.phases.HasField(phase):
                        duration.add_metric([*with_pop, phase], getattr(result.phases, phase))
                if result.tls.HasField("not_after"):
                    not_after.add_metric(labels, float(result.tls.not_after.seconds))
                if result.tls.issuer:
                    issuer.add_metric([*labels, result.tls.issuer, result.tls.verified_by], 1.0)
                if result.HasField("ntp") and result.outcome == pb.OUTCOME_OK:
                    ntp.add_metric([*who, result.target, result.address_family],
                                   result.ntp.offset_seconds)
        for reason, count in sorted(state.refused.items()):
            refused.add_metric([reason], count)
        yield from families.values()


def _labels(probe: Probe, key: CheckKey) -> list[str]:
    target, port, check, group, family, via = key
    return [probe.site, probe.probe_id, target, str(port), check, group, family, via]


class Exposition:
    """The state as text format 0.0.4, for /metrics with Content-Type CONTENT_TYPE_PLAIN_0_0_4.
    Labels are written sorted by name, as generate_latest does."""

    def __init__(self, state: State) -> None:
        self._state = state
        self._checks: dict[ProbeKey, dict[CheckKey, _Check]] = {}

    def render(self) -> bytes:
        return b"".join(self.render_chunks())

    def render_chunks(self) -> Iterator[bytes]:
        """Renders the state now; the text comes in chunks of about CHUNK_BYTES, each made
        as it is asked for. Write them one after the other: a body of a hundred megabytes
        in one buffer costs more memory, and more time to make and to send, than rendering."""
        pieces = self._pieces()
        return ("".join(pieces[i : i + _PIECES_PER_CHUNK]).encode()
                for i in range(0, len(pieces), _PIECES_PER_CHUNK))  # fmt: skip

    def _pieces(self) -> list[str]:
        state = self._state
        # Entries of checks and probes that left the state go with the old dict.
        previous, self._checks = self._checks, {}
        fresh: list[_Pieces] = []  # per fresh check
        counts: list[str] = []
        per_probe: dict[Family, list[str]] = {family: [] for family in PROBE_FAMILIES}
        for probe in state.probes():
            who = f'probe="{_escape(probe.probe_id)}",site="{_escape(probe.site)}"'
            known = previous.get(probe.key, {})
            checks = self._checks[probe.key] = {
                key: known.get(key) or _Check(who, key) for key in probe.latest
            }
            for (key, code), count in probe.counts.items():
                check = checks.get(key) or _remember(checks, known, who, key)
                outcome = _OUTCOME_LABELS.get(code, _UNKNOWN_OUTCOME)
                counts.append(check.line(RESULTS.exposed, _count(count), outcome))
            current = list(state.current(probe))
            fresh.extend(checks[key].pieces(result, at) for key, result, at in current)
            couriers = courier_state([result for _, result, _ in current])
            _probe_lines(state, probe, who, couriers, per_probe)
        pieces: list[str] = []
        for i, family in enumerate(CHECK_FAMILIES):
            pieces.append(family.header())
            pieces.extend(itertools.chain.from_iterable([check[i] for check in fresh]))
        pieces.append(RESULTS.header())
        pieces.extend(counts)
        for family, lines in per_probe.items():
            pieces.append(family.header())
            pieces.extend(lines)
        pieces.append(REFUSED.header())
        pieces.extend(f'{REFUSED.exposed}{{reason="{_escape(reason)}"}} {_count(count)}\n'
                      for reason, count in sorted(state.refused.items()))  # fmt: skip
        return pieces


CHUNK_BYTES = 64 * 1024  # below malloc's mmap threshold: chunks reuse the same memory
_PIECES_PER_CHUNK = CHUNK_BYTES // 64  # a piece is a line, or the labels or value of one


# A check's lines, per CHECK_FAMILIES, as pieces to join: whole lines that seldom change
# (success, outcome, ...) and, for lines whose value changes with every result (durations,
# last run), the label text kept from scrape to scrape and the new value.
_Pieces = tuple[Sequence[str], ...]


def _remember(checks: dict[CheckKey, _Check], known: dict[CheckKey, _Check], who: str,
              key: CheckKey) -> _Check:  # fmt: skip
    """The check's entry from the previous scrape, or a new one; kept for the next."""
    check = checks[key] = known.get(key) or _Check(who, key)
    return check


class _Check:
    """One check's label text and what is made of it, kept from scrape to scrape; its
    pieces are made again only when its latest result is another object."""

    __slots__ = ("_duration", "_issuer", "_last_run", "_not_after", "_pieces", "_pop",
                 "_verdict", "family", "head", "result", "tail", "target", "via",
                 "who")  # fmt: skip

    def __init__(self, who: str, key: CheckKey) -> None:
        target, port, check, group, family, via = key
        # Sorted by name: issuer, outcome, phase and pop fall between `head` and `tail`,
        # verified_by between `tail` and `via`.
        self.head = f'check="{_escape(check)}",family="{_escape(family)}",group="{_escape(group)}",'
        self.tail = f'port="{port}",{who},target="{_escape(target)}",'
        self.via = f'via="{_escape(via)}"'
        self.who, self.target, self.family = who, target, family  # shared with the key
        self._last_run = self.line(LAST_RUN.exposed, "")[:-1]  # the line without its value
        self._pop: str | None = None  # the pop that _duration and _verdict were made for
        self._duration = ("", "")  # a duration line: [0], the phase, [1], the value
        self._verdict: tuple[int, tuple[str], tuple[str]] | None = None  # outcome, 2 lines
        self._not_after: tuple[int, tuple[str]] | None = None  # seconds, line
        self._issuer: tuple[str, str, tuple[str]] | None = None  # issuer, verified_by, line
        self.result: pb.Result | None = None
        self._pieces: _Pieces = ()

    def line(self, name: str, value: str, middle: str = "", before_via: str = "") -> str:
        """`middle` holds the labels sorted between group and port."""
        return f"{name}{{{self.head}{middle}{self.tail}{before_via}{self.via}}} {value}\n"

    def pieces(self, result: pb.Result, started_at: float) -> _Pieces:
        """The same as last time if `result` is."""
        if result is self.result:
            return self._pieces
        code, pop = result.outcome, result.pop
        if pop != self._pop:
            pop_label = f'pop="{_escape_repeated(pop)}",'
            self._duration = (f'{DURATION.exposed}{{{self.head}phase="',
                              f'",{pop_label}{self.tail}{self.via}}} ')  # fmt: skip
            self._pop, self._verdict = pop, None
        if self._verdict is None or self._verdict[0] != code:
            pop_label = f'pop="{_escape_repeated(pop)}",'
            ok = "1.0" if code == pb.OUTCOME_OK else "0.0"
            outcome = _OUTCOME_LABELS.get(code, _UNKNOWN_OUTCOME) + pop_label
            self._verdict = (code, (self.line(SUCCESS.exposed, ok, pop_label),),
                             (self.line(OUTCOME.exposed, "1.0", outcome),))  # fmt: skip
        phases = result.phases
        values = (phases.dns, phases.connect, phases.tls, phases.first_byte, phases.total)
        before, after = self._duration
        durations: list[str] = []
        for phase, seconds in zip(PHASES, values, strict=True):
            # An absent phase reads 0: reading is cheaper than HasField, which only 0 needs.
            if seconds or phases.HasField(phase):
                value = f"{seconds!r}\n" if -_INF < seconds < _INF else f"{_number(seconds)}\n"
                durations += (before, phase, after, value)
        not_after: tuple[str, ...] = ()
        issuer: tuple[str, ...] = ()
        ntp: tuple[str, ...] = ()
        if result.HasField("tls"):
            tls = result.tls
            if tls.HasField("not_after"):
                not_after = self._not_after_line(tls.not_after.seconds)
            if tls.issuer:
                issuer = self._issuer_line(tls.issuer, tls.verified_by)
        if code == pb.OUTCOME_OK and result.HasField("ntp"):
            ntp = (f'{NTP.exposed}{{family="{_escape(self.family)}",{self.who},'
                   f'target="{_escape(self.target)}"}} '
                   f"{_number(result.ntp.offset_seconds)}\n",)  # fmt: skip
        last_run = (self._last_run, f"{_number(started_at)}\n")
        self.result = result
        self._pieces = (self._verdict[1], self._verdict[2], durations, last_run, not_after,
                        issuer, ntp)  # fmt: skip
        return self._pieces

    def _not_after_line(self, seconds: int) -> tuple[str]:
        if self._not_after is None or self._not_after[0] != seconds:
            line = self.line(NOT_AFTER.exposed, _number(float(seconds)))
            self._not_after = (seconds, (line,))
        return self._not_after[1]

    def _issuer_line(self, issuer: str, verified_by: str) -> tuple[str]:
        if self._issuer is None or self._issuer[:2] != (issuer, verified_by):
            line = self.line(ISSUER.exposed, "1.0", f'issuer="{_escape_repeated(issuer)}",',
                             f'verified_by="{_escape_repeated(verified_by)}",')  # fmt: skip
            self._issuer = (issuer, verified_by, (line,))
        return self._issuer[2]


def _probe_lines(state: State, probe: Probe, who: str, couriers: str | None,
                 out: dict[Family, list[str]]) -> None:  # fmt: skip
    """A probe's series, each appended to its family's lines."""

    def add(family: Family, value: str, before: str = "", after: str = "") -> None:
        out[family].append(f"{family.exposed}{{{before}{who}{after}}} {value}\n")

    if couriers is not None:
        add(COURIER, "1.0", after=f',state="{couriers}"')
        if probe.pop:
            add(POP, "1.0", before=f'pop="{_escape(probe.pop)}",')
    add(POP_CHANGES, _count(probe.pop_changes))
    if probe.pop_changed_at:
        add(POP_CHANGED, _number(probe.pop_changed_at))
    add(UP, "1.0" if state.is_up(probe) else "0.0")
    add(LAST_SEEN, _number(probe.last_seen))
    add(INFO, "1.0", before=f'config_digest="{_escape(probe.config_digest)}",',
        after=f',version="{_escape(probe.version)}"')  # fmt: skip
    add(APPLIED, _count(probe.applied))
    add(DUPLICATES, _count(probe.duplicates))
    health = probe.health
    add(DEPTH, _count(health.spool_depth))
    add(SPOOL_BYTES, _count(health.spool_bytes))
    add(DROPPED, _count(health.dropped_total))
    add(LAG, _number(health.loop_lag_seconds))
    add(OLDEST, _number(health.oldest_pending_seconds))


def _escape(value: str) -> str:
    """A label value as the text format writes it."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


# Label values that results bring (pop, issuer) repeat across checks: escape each once.
_escape_repeated = functools.lru_cache(maxsize=1024)(_escape)


_INF = math.inf


def _number(value: float) -> str:
    """repr(): the shortest text that reads back as the same float; the text format's
    spelling for infinities and NaN. (prometheus_client writes 1.7e+09 where this writes
    1700000000.0, as Go does from 1e6 on: Prometheus reads both as the same number.)"""
    return repr(value) if -_INF < value < _INF else floatToGoString(value)


def _count(value: int) -> str:
    """_number() of a whole number, without making a float of it."""
    return f"{value}.0" if -(2**53) < value < 2**53 else _number(float(value))
