"""Renders the collector's state as Prometheus text format 0.0.4, fresh at every scrape.

Built from the state at each scrape rather than kept in module-level metric objects: a
series that leaves the state (stale or forgotten) is simply not written, with no bookkeeping.

FAMILIES is the one table of what /metrics shows: each family's name, type, help, labels and
how to read its samples from the state. A family reads one kind of row (its Source): a check's
latest fresh result, a check's count of one outcome, a probe, or the collector itself. The row
gives the labels that name it (site, probe, target, ...); `read` gives the family's own labels
and the value. Adding a metric is adding a row to the table (and its line in the README).

Exposition writes the table's lines by hand, five to seven times faster than prometheus_client
(tests/bench/exposition.py): it keeps each row's label text from scrape to scrape, and a
check's lines while its latest result is the same object. The tests hold a second renderer of
the same table through prometheus_client (tests/reference_exposition.py) and compare.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from prometheus_client.utils import floatToGoString

from courierwatch.collector.state import CheckKey, Probe, ProbeKey, State
from courierwatch.common import sitestate
from courierwatch.common.bounds import cut
from courierwatch.common.results import courier_state, outcome_label
from courierwatch.common.sitestate import SiteState
from courierwatch.v1 import courierwatch_pb2 as pb

# A family's own label values (in the order of its labels, less those its row gives), and
# the value: an int is written exactly, a float as repr() writes it.
Sample = tuple[tuple[str, ...], float]
PHASES = ("dns", "connect", "tls", "first_byte", "total")
_INF = math.inf


@dataclass(frozen=True, slots=True)
class Source:
    """What one row of a family is, and the labels that name it."""

    name: str
    labels: tuple[str, ...]


# What `read` is given, per source.
# read(result, started): a check's latest fresh result, and started() of it
CHECK = Source("check", ("site", "probe", "target", "port", "check", "group", "family", "via"))
COUNT = Source("count", CHECK.labels)  # read(outcome, count): a check's count of one outcome
PROBE = Source("probe", ("site", "probe"))  # read(ProbeView)
COLLECTOR = Source("collector", ())  # read(State)
Reader = Callable[..., Sequence[Sample]]


@dataclass(slots=True)
class ProbeView:
    """What a probe family reads: the probe, and what the scrape worked out for it once."""

    state: State
    probe: Probe
    couriers: str | None  # courier_state() of its fresh results
    fresh: Sequence[pb.Result] | None = None  # its fresh results, when the scrape has them
    _site: SiteState | None = None

    def site(self) -> SiteState:
        """The probe's site state, asked of the state once per scrape (which caches it)."""
        if self._site is None:
            self._site = self.state.site_state(self.probe, self.fresh)
        return self._site


# How a family's line is made: its labels sorted by name, as runs of the labels its row gives
# (text each row keeps: a run id) and its own labels between them (a _Slot).
class _Slot:
    """One own label of a family at one place in its line; keeps the text of each value seen,
    for every family with the same label at such a place."""

    __slots__ = ("after", "index", "label", "texts")

    def __init__(self, label: str, index: int, last: bool, texts: dict[str, str]) -> None:
        self.label, self.index, self.after, self.texts = label, index, "} " if last else ",", texts

    def text(self, value: str) -> str:
        text = self.texts.get(value)
        if text is None:
            if len(self.texts) >= _MAX_TEXTS:  # label values a misbehaving probe invents
                self.texts.clear()
            text = self.texts[value] = f'{self.label}="{_escape(value)}"{self.after}'
        return text


_MAX_TEXTS = 4096
_RUNS: dict[tuple[str, tuple[int, ...], bool], int] = {}  # (source, positions, last): run id
# By run id: the positions of its labels in the row's, their names, and what follows the run.
_RUN_LAYOUT: list[tuple[tuple[int, ...], tuple[str, ...], str]] = []
_SLOT_TEXTS: dict[tuple[str, bool], dict[str, str]] = {}


def _steps(family: Family) -> tuple[int | _Slot, ...]:
    steps: list[int | _Slot] = []
    run: list[int] = []
    names = sorted(family.labels)
    for n, label in enumerate(names):
        last = n == len(names) - 1
        if label in family.source.labels:
            run.append(family.source.labels.index(label))
            if last or names[n + 1] not in family.source.labels:
                key = (family.source.name, tuple(run), last)
                if key not in _RUNS:
                    _RUNS[key] = len(_RUN_LAYOUT)
                    names_of = tuple(family.source.labels[i] for i in run)
                    _RUN_LAYOUT.append((tuple(run), names_of, "} " if last else ","))
                steps.append(_RUNS[key])
                run = []
        else:
            texts = _SLOT_TEXTS.setdefault((label, last), {})
            steps.append(_Slot(label, family.own.index(label), last, texts))
    return tuple(steps)


@dataclass(frozen=True, eq=False, slots=True)
class Family:
    name: str  # as exposed: a counter's ends in _total
    type: str  # "gauge" or "counter"
    help: str
    labels: tuple[str, ...]
    source: Source
    read: Reader
    own: tuple[str, ...] = field(init=False)  # the labels `read` gives, in their order
    opening: str = field(init=False, repr=False)  # of each line: the name and "{"
    steps: tuple[int | _Slot, ...] = field(init=False, repr=False)  # of each line after it

    def __post_init__(self) -> None:
        own = tuple(label for label in self.labels if label not in self.source.labels)
        object.__setattr__(self, "own", own)
        object.__setattr__(self, "opening", self.name + ("{" if self.labels else " "))
        object.__setattr__(self, "steps", _steps(self))

    def header(self) -> str:
        text = self.help.replace("\\", r"\\").replace("\n", r"\n")
        return f"# HELP {self.name} {text}\n# TYPE {self.name} {self.type}\n"


def _gauge(name: str, help: str, labels: Sequence[str], source: Source,
           read: Reader) -> Family:  # fmt: skip
    return Family(name, "gauge", help, tuple(labels), source, read)


def _counter(name: str, help: str, labels: Sequence[str], source: Source,
             read: Reader) -> Family:  # fmt: skip
    return Family(f"{name}_total", "counter", help, tuple(labels), source, read)


def _one(value: float) -> tuple[Sample]:
    """The one sample of a family with no labels of its own."""
    return (((), value),)


def _durations(result: pb.Result, _: float) -> list[Sample]:
    phases, pop = result.phases, result.pop
    values = (phases.dns, phases.connect, phases.tls, phases.first_byte, phases.total)
    # An absent phase has no series (rather than a misleading 0); it reads 0, and reading is
    # cheaper than HasField, which only 0 needs.
    return [((pop, phase), seconds) for phase, seconds in zip(PHASES, values, strict=True)
            if seconds or phases.HasField(phase)]  # fmt: skip


# HasField first: reading an absent message makes an empty one, which costs more.
def _not_after(result: pb.Result, _: float) -> tuple[Sample, ...]:
    if result.HasField("tls") and result.tls.HasField("not_after"):
        return _one(float(result.tls.not_after.seconds))
    return ()


def _issuer(result: pb.Result, _: float) -> tuple[Sample, ...]:
    if result.HasField("tls") and result.tls.issuer:
        return (((result.tls.issuer, result.tls.verified_by), 1.0),)
    return ()


# An answer was read: the offset is measured (and with clock_skew, it is the finding).
MEASURED_OFFSET = frozenset({pb.OUTCOME_OK, pb.OUTCOME_CLOCK_SKEW})


def _ntp(result: pb.Result, _: float) -> tuple[Sample, ...]:
    if result.outcome in MEASURED_OFFSET and result.HasField("ntp"):
        return _one(result.ntp.offset_seconds)
    return ()


def _courier(view: ProbeView) -> tuple[Sample, ...]:
    return (((view.couriers,), 1.0),) if view.couriers is not None else ()


def _site_state(view: ProbeView) -> list[Sample]:
    current = view.site().state
    return [((state,), 1.0 if state == current else 0.0) for state in sitestate.STATES]


def _site_causes(view: ProbeView) -> list[Sample]:
    return [((c.state, c.cause, c.group), 1.0) for c in view.site().causes]


def _path_loss(view: ProbeView) -> list[Sample]:
    return [((str(port),), share) for port, share, _ in view.probe.quality.figures()]


def _path_jitter(view: ProbeView) -> list[Sample]:
    return [((str(port),), jitter) for port, _, jitter in view.probe.quality.figures()
            if jitter is not None]  # fmt: skip


def _pop(view: ProbeView) -> tuple[Sample, ...]:
    pop = view.probe.pop
    return (((pop,), 1.0),) if view.couriers is not None and pop else ()


def _groups(view: ProbeView) -> list[Sample]:
    return [((g.id, g.title, "true" if g.critical else "false"), 1.0)
            for g in view.state.groups(view.probe)]  # fmt: skip


def _pop_changed(view: ProbeView) -> tuple[Sample, ...]:
    return _one(view.probe.pop_changed_at) if view.probe.pop_changed_at else ()


def _dns_clients(view: ProbeView) -> list[Sample]:
    return [(labels, n) for labels, n in sorted(view.probe.dns_clients.items())]


_CHECK_POP = (*CHECK.labels, "pop")
_OK = pb.OUTCOME_OK
_outcome = functools.lru_cache(maxsize=256)(outcome_label)  # a newer probe's may be any number
# The order of the table is the order on /metrics.
FAMILIES: tuple[Family, ...] = (
    _gauge("courierwatch_check_success",
           "1 if the latest run of the check worked, 0 if it failed.", _CHECK_POP, CHECK,
           lambda r, _: (((r.pop,), 1.0 if r.outcome == _OK else 0.0),)),
    _gauge("courierwatch_check_outcome",
           "Always 1; the outcome label names the failure class of the latest run.",
           (*_CHECK_POP, "outcome"), CHECK,
           lambda r, _: (((r.pop, _outcome(r.outcome)), 1.0),)),
    _gauge("courierwatch_check_duration_seconds",
           "Duration of each phase of the latest run of the check.", (*_CHECK_POP, "phase"),
           CHECK, _durations),
    _gauge("courierwatch_check_last_run_timestamp_seconds",
           "When the latest run of the check started, in Unix time.", CHECK.labels, CHECK,
           lambda _, started: _one(started)),
    _gauge("courierwatch_tls_leaf_not_after_timestamp_seconds",
           "Expiry of the leaf certificate the endpoint presented, in Unix time.", CHECK.labels,
           CHECK, _not_after),
    _gauge("courierwatch_tls_issuer_info",
           "Always 1; who issued the certificate the endpoint presented, and which anchors "
           "verified it (expected, site, or none).", (*CHECK.labels, "issuer", "verified_by"),
           CHECK, _issuer),
    _gauge("courierwatch_ntp_offset_seconds",
           "Clock offset of the NTP server against the probe's clock.",
           ("site", "probe", "target", "family"), CHECK, _ntp),
    _counter("courierwatch_check_results", "Results received, by outcome.",
             (*COUNT.labels, "outcome"), COUNT,
             lambda outcome, count: (((_outcome(outcome),), count),)),
    _gauge("courierwatch_courier_state",
           "Always 1; state is ok (5223 works), degraded (only the 443 fallback) or down "
           "(no courier reachable).", (*PROBE.labels, "state"), PROBE, _courier),
    _gauge("courierwatch_site_state",
           "1 for the probe's site state (the worst of its causes), 0 for each other state: "
           "ok, degraded, filtered, intercepted, unreachable, probe_offline.",
           (*PROBE.labels, "state"), PROBE, _site_state),
    _gauge("courierwatch_site_cause",
           "Always 1; one series per cause of the probe's site state (the detail is on the "
           "status page and /api/status).", (*PROBE.labels, "state", "cause", "group"), PROBE,
           _site_causes),
    _gauge("courierwatch_path_loss_ratio",
           "Share of the recent direct connects per port that failed or needed a SYN "
           "retransmission.", (*PROBE.labels, "port"), PROBE, _path_loss),
    _gauge("courierwatch_path_jitter_seconds",
           "Mean absolute difference of consecutive connect times of a series, per port.",
           (*PROBE.labels, "port"), PROBE, _path_jitter),
    _gauge("courierwatch_pop_info", "Always 1; the Akamai POP the probe's couriers land on.",
           (*PROBE.labels, "pop"), PROBE, _pop),
    _counter("courierwatch_pop_changes", "Times the courier POP changed.", PROBE.labels, PROBE,
             lambda v: _one(v.probe.pop_changes)),
    _gauge("courierwatch_pop_last_change_timestamp_seconds",
           "When the courier POP last changed, in Unix time.", PROBE.labels, PROBE,
           _pop_changed),
    _gauge("courierwatch_probe_up", "1 while the probe has a stream open to this collector.",
           PROBE.labels, PROBE, lambda v: _one(1.0 if v.state.is_up(v.probe) else 0.0)),
    _gauge("courierwatch_probe_last_seen_timestamp_seconds",
           "When the probe was last heard from, in Unix time.", PROBE.labels, PROBE,
           lambda v: _one(v.probe.last_seen)),
    _gauge("courierwatch_probe_info",
           "Always 1; software version and configuration digest of the probe.",
           (*PROBE.labels, "version", "config_digest"), PROBE,
           lambda v: (((v.probe.version, v.probe.config_digest), 1.0),)),
    _gauge("courierwatch_probe_families_info",
           "Always 1; the address families the probe checks (ipv4,ipv6) and why: "
           "'configured', or what `families: auto` found on the probe's host.",
           (*PROBE.labels, "families", "reason"), PROBE,
           lambda v: (((",".join(v.probe.families), cut(v.probe.families_reason, 256)), 1.0),)
           if v.probe.families else ()),
    _gauge("courierwatch_group_info",
           "Always 1; the title of a service group the probe checks, and whether it is "
           "critical (an outage stops enrolment, management or push), as its catalog says.",
           (*PROBE.labels, "group", "title", "critical"), PROBE, _groups),
    _counter("courierwatch_dns_client_queries",
             "Apple queries the site's devices made to the DNS filter on the probe's host "
             "(discover.pihole_db), per catalog group; status allowed or blocked.",
             (*PROBE.labels, "group", "status"), PROBE, _dns_clients),
    _counter("courierwatch_probe_results_applied", "Results applied from the probe.",
             PROBE.labels, PROBE, lambda v: _one(v.probe.applied)),
    _counter("courierwatch_probe_results_duplicate",
             "Results received again (replays) and ignored.", PROBE.labels, PROBE,
             lambda v: _one(v.probe.duplicates)),
    _gauge("courierwatch_probe_spool_depth",
           "Results in the probe's spool waiting for an acknowledgement.", PROBE.labels, PROBE,
           lambda v: _one(v.probe.health.spool_depth)),
    _gauge("courierwatch_probe_spool_bytes", "Size of the probe's spooled results.",
           PROBE.labels, PROBE, lambda v: _one(v.probe.health.spool_bytes)),
    _counter("courierwatch_probe_spool_dropped",
             "Results the probe dropped because its spool hit a bound.", PROBE.labels, PROBE,
             lambda v: _one(v.probe.health.dropped_total)),
    _counter("courierwatch_probe_spool_quarantined",
             "Spooled rows the probe could not read or send and moved aside (never blocking "
             "the rows behind them).", PROBE.labels, PROBE,
             lambda v: _one(v.probe.health.quarantined_total)),
    _counter("courierwatch_probe_spool_dropped_disk_full",
             "Oldest results the probe dropped because its disk was full.", PROBE.labels,
             PROBE, lambda v: _one(v.probe.health.dropped_disk_full_total)),
    _counter("courierwatch_probe_collectors_silent",
             "Streams the probe gave up because a collector left a batch unacknowledged for "
             "its ack timeout and said nothing (a stuck collector), since the probe started.",
             PROBE.labels, PROBE, lambda v: _one(v.probe.health.collectors_silent_total)),
    _gauge("courierwatch_probe_loop_lag_seconds",
           "How late the probe's latest check started against its schedule.", PROBE.labels,
           PROBE, lambda v: _one(v.probe.health.loop_lag_seconds)),
    _gauge("courierwatch_probe_oldest_pending_seconds",
           "Age of the oldest result the probe has not had acknowledged.", PROBE.labels, PROBE,
           lambda v: _one(v.probe.health.oldest_pending_seconds)),
    _gauge("courierwatch_probe_clock_offset_seconds",
           "The probe's wall clock minus the collector's, from its latest health beat (less "
           "the one-way delay of the path, milliseconds on a sound one).", PROBE.labels, PROBE,
           lambda v: _one(v.probe.clock_offset) if v.probe.clock_offset is not None else ()),
    _gauge("courierwatch_probe_duplicate_identity",
           "1 while a second stream with this probe's identity is being refused: two probes "
           "use one identity (a cloned SD card or bundle).", PROBE.labels, PROBE,
           lambda v: _one(1.0 if v.state.duplicated(v.probe) else 0.0)),
    _gauge("courierwatch_probe_state_bytes",
           "Memory the probe's latest results take on the collector (encoded size).",
           PROBE.labels, PROBE, lambda v: _one(v.probe.state_bytes)),
    _counter("courierwatch_collector_refused",
             "Streams or messages the collector refused, by reason.", ("reason",), COLLECTOR,
             lambda state: [((reason,), count) for reason, count in sorted(state.refused.items())]),
    _counter("courierwatch_collector_limited",
             "Results cut to the string limits, and HTTP connections turned away, by reason.",
             ("reason",), COLLECTOR,
             lambda state: [((reason,), count) for reason, count in sorted(state.limited.items())]),
    _gauge("courierwatch_collector_batches_waiting",
           "Probe batches waiting for their turn on the collector's event loop (one is "
           "applied per turn): the collector's saturation.", (), COLLECTOR,
           lambda state: _one(state.turns.waiting)),
    _counter("courierwatch_collector_batch_wait_seconds",
             "Seconds that probe batches waited for their turn on the event loop, in all.",
             (), COLLECTOR, lambda state: _one(state.turns.waited)),
    _counter("courierwatch_collector_busy_notices",
             "Busy messages sent to probes: a batch held unacknowledged (waiting for its turn, "
             "its commit or the store) past a third of its probe's ack timeout.", (),
             COLLECTOR, lambda state: _one(state.busy_notices)),
    _gauge("courierwatch_config_last_reload_successful",
           "1 if the latest configuration (re)load worked, 0 if it failed.", (), COLLECTOR,
           lambda state: _one(1.0 if state.config_reload_ok else 0.0)),
    _gauge("courierwatch_config_last_reload_success_timestamp_seconds",
           "When the configuration was last loaded, in Unix time.", (), COLLECTOR,
           lambda state: _one(state.config_reload_at)),
)  # fmt: skip
CHECK_FAMILIES = tuple(family for family in FAMILIES if family.source is CHECK)
COLLECTOR_FAMILIES = tuple(family for family in FAMILIES if family.source is COLLECTOR)


def check_labels(probe: Probe, key: CheckKey) -> tuple[str, ...]:
    """The values of CHECK.labels for one check of a probe."""
    return check_label_values(probe.site, probe.probe_id, key)


def check_label_values(site: str, probe_id: str, key: CheckKey) -> tuple[str, ...]:
    """check_labels() of the probe with this site and id, for who has no Probe at hand."""
    target, port, check, group, family, via = key
    return (site, probe_id, target, str(port), check, group, family, via)


def probe_labels(probe: Probe) -> tuple[str, ...]:
    """The values of PROBE.labels."""
    return (probe.site, probe.probe_id)


class Exposition:
    """The state as text format 0.0.4, for /metrics with Content-Type CONTENT_TYPE_PLAIN_0_0_4.
    Labels are written sorted by name, as generate_latest does. `families`: the rows of
    FAMILIES it writes, in table order (remote-write mode: the collector's own only)."""

    def __init__(self, state: State, families: Sequence[Family] = FAMILIES) -> None:
        self._state = state
        self._table = families
        self._checks: dict[ProbeKey, dict[CheckKey, _Check]] = {}
        self._probes: dict[ProbeKey, _Row] = {}
        self._collector = _Row(())

    def render(self) -> bytes:
        return b"".join(self.render_chunks())

    def render_chunks(self) -> Iterator[bytes]:
        """The state as text, in chunks of about CHUNK_BYTES, each rendered as it is asked for.
        The caller may let the event loop run between two chunks (web.py does, so a scrape
        of a million series never holds the loop for long): a probe's lines are read from
        what was taken of it the first time the scrape came to it, and a result that arrives
        meanwhile shows at the next scrape. Rendering chunk by chunk also keeps memory small:
        no buffer holds the whole body, or a list of all its pieces."""
        chunk: list[str] = []
        for pieces in self._families():
            chunk.extend(pieces)
            if len(chunk) >= _PIECES_PER_CHUNK:
                yield "".join(chunk).encode()
                chunk = []
        if chunk:
            yield "".join(chunk).encode()

    def _families(self) -> Iterator[list[str]]:
        """The pieces of each family in table order, in runs of about _PIECES_PER_CHUNK."""
        state = self._state
        probes = state.probes()
        # Entries of checks and probes that left the state go with the old dicts.
        previous, self._checks = self._checks, {}
        previous_probes, self._probes = self._probes, {}
        taken: list[_Taken] = []

        def rows() -> Iterator[_Taken]:
            """Each probe: taken in the first family's pass, as that pass comes to it."""
            if len(taken) == len(probes):
                yield from taken
                return
            for probe in probes:
                row = self._take(probe, previous.get(probe.key, {}), previous_probes)
                taken.append(row)
                yield row

        for family in self._table:
            out = [family.header()]
            source = family.source
            if source is COLLECTOR:
                _write(family, self._collector, family.read(state), out)
            else:
                check = _CHECK_INDEX.get(family)
                for row in rows():
                    if check is not None:
                        for pieces in row.fresh:
                            out.extend(pieces[check])
                    elif source is COUNT:
                        for counted, code, count in row.counts:
                            _write(family, counted, family.read(code, count), out)
                    else:
                        _write(family, row.row, family.read(row.view), out)
                    if len(out) >= _PIECES_PER_CHUNK:
                        yield out
                        out = []
            yield out

    def _take(self, probe: Probe, known: dict[CheckKey, _Check],
              previous_probes: dict[ProbeKey, _Row]) -> _Taken:  # fmt: skip
        """What a scrape reads of one probe: its checks' rows (kept from the last scrape),
        counts, and fresh results with their pieces."""
        state = self._state
        checks = self._checks[probe.key] = {}
        for key in probe.latest:
            checks[key] = known.get(key) or _Check(check_labels(probe, key))
        counts: list[tuple[_Check, int, int]] = []
        for (key, code), count in probe.counts.items():
            check = checks.get(key)
            if check is None:  # counted, but no latest result (after a restart)
                check = checks[key] = known.get(key) or _Check(check_labels(probe, key))
            counts.append((check, code, count))
        fresh: list[_Pieces] = []
        results: list[pb.Result] = []
        for key, result, at in state.current(probe):
            fresh.append(checks[key].pieces(result, at))
            results.append(result)
        row = self._probes[probe.key] = previous_probes.get(probe.key) or _Row(probe_labels(probe))
        view = ProbeView(state, probe, courier_state(results), results)
        return _Taken(row, view, counts, fresh)


CHUNK_BYTES = 64 * 1024  # below malloc's mmap threshold: chunks reuse the same memory
_PIECES_PER_CHUNK = CHUNK_BYTES // 40  # a piece is some labels, or the value of a line
_CHECK_INDEX = {family: i for i, family in enumerate(CHECK_FAMILIES)}
_Pieces = tuple[Sequence[str], ...]


@dataclass(slots=True)
class _Taken:
    """One probe as a scrape took it: its row, its view, its checks' counts (row, outcome,
    count) and the pieces of its fresh checks."""

    row: _Row
    view: ProbeView
    counts: list[tuple[_Check, int, int]]
    fresh: list[_Pieces]


class _Row:
    """The labels that name one row (a check, a probe), and the text of its runs."""

    __slots__ = ("labels", "runs")

    def __init__(self, labels: tuple[str, ...]) -> None:
        self.labels = labels
        self.runs: list[str | None] = [None] * len(_RUN_LAYOUT)

    def run(self, run_id: int) -> str:
        text = self.runs[run_id]
        if text is None:
            positions, names, after = _RUN_LAYOUT[run_id]
            pairs = zip(names, positions, strict=True)
            text = ",".join(f'{name}="{_escape(self.labels[i])}"' for name, i in pairs) + after
            self.runs[run_id] = text
        return text


class _Check(_Row):
    """A check's row, and its pieces from its latest result: made again only when that
    result is another object."""

    __slots__ = ("pieces_", "result")

    def __init__(self, labels: tuple[str, ...]) -> None:
        super().__init__(labels)
        self.result: pb.Result | None = None
        self.pieces_: _Pieces = ()

    def pieces(self, result: pb.Result, started: float) -> _Pieces:
        if result is not self.result:
            made: list[Sequence[str]] = []
            for family in CHECK_FAMILIES:
                samples = family.read(result, started)
                if samples:
                    out: list[str] = []
                    _write(family, self, samples, out)
                    made.append(out)
                else:
                    made.append(())
            self.result, self.pieces_ = result, tuple(made)
        return self.pieces_


def _write(family: Family, row: _Row, samples: Sequence[Sample], out: list[str]) -> None:
    """Appends the pieces of each sample's line to `out`."""
    opening, steps, runs = family.opening, family.steps, row.runs
    for own, value in samples:
        out.append(opening)
        for step in steps:
            if step.__class__ is int:
                out.append(runs[step] or row.run(step))  # type: ignore[index]
            else:
                out.append(step.text(own[step.index]))  # type: ignore[union-attr]
        if value.__class__ is float and -_INF < value < _INF:
            out.append(f"{value!r}\n")
        else:
            out.append(f"{_count(value) if value.__class__ is int else _number(value)}\n")


def _escape(value: str) -> str:
    """A label value as the text format writes it."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _number(value: float) -> str:
    """repr(): the shortest text that reads back as the same float; the text format's
    spelling for infinities and NaN. (prometheus_client writes 1.7e+09 where this writes
    1700000000.0, as Go does from 1e6 on: Prometheus reads both as the same number.)"""
    return repr(value) if -_INF < value < _INF else floatToGoString(value)


def _count(value: int) -> str:
    """_number() of a whole number, without making a float of it."""
    return f"{value}.0" if -(2**53) < value < 2**53 else _number(float(value))
