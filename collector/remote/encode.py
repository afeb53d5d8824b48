"""Applied Results as remote-write samples, each at its result's own time, ready to send.

The samples are those of scrape mode's check families (exposition.CHECK_FAMILIES: success,
outcome, duration per phase, last run, TLS expiry and issuer, NTP offset, and whatever row is
added to that table later), with the same names and labels, so a dashboard reads both modes
alike; plus courierwatch_pop_info (1) for a courier result that names its POP (in scrape mode
a probe's POP). Each sample is taken at the result's `started_at` (milliseconds, rounded down)
instead of at a scrape. Counters (courierwatch_check_results_total) are not written:
count_over_time() of the outcome series counts the results themselves, whichever collector
wrote them and however often.

The samples depend on the result and its probe's site and id only (no collector label, no
arrival time), so the same result always makes the same bytes: a replayed batch, or a second
collector writing it again, lands on the same series at the same timestamp with the same value.

The output is entries of WriteRequest field 1 (a TimeSeries of one sample each), so chunks of
it join into one WriteRequest by concatenation. A series' label bytes are built once (sorted by
name, as the specification requires; a label with an empty value left out, as a scrape stores
it) and kept: per result only the values and the timestamp are encoded.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

from courierwatch.collector.exposition import (
    CHECK,
    FAMILIES,
    MEASURED_OFFSET,
    PHASES,
    Family,
    check_label_values,
)
from courierwatch.collector.state import CheckKey, ProbeKey, check_key
from courierwatch.common.results import outcome_label
from courierwatch.v1 import courierwatch_pb2 as pb

# Checks whose label bytes are kept per probe; beyond it that probe's start again (the bytes
# are the same when rebuilt, only slower to get). Far above what a probe has (the built-in
# catalog is 249 checks, max_targets_per_probe 2,000 targets): only a probe that makes up
# new label values hits it, and it pays for that alone. One cap over all probes would rebuild
# every probe's, all the time, once the fleet had more checks than the cap.
MAX_CACHED_CHECKS = 10_000

_DOUBLE = struct.Struct("<d").pack
_ONE = _DOUBLE(1.0)
_ZERO = _DOUBLE(0.0)
_OK = pb.OUTCOME_OK


def _family(name: str) -> Family:
    """A family of scrape mode's table: its name and labels are the remote-write series'."""
    return next(family for family in FAMILIES if family.name == name)


SUCCESS = _family("courierwatch_check_success")
OUTCOME = _family("courierwatch_check_outcome")
DURATION = _family("courierwatch_check_duration_seconds")
LAST_RUN = _family("courierwatch_check_last_run_timestamp_seconds")
NOT_AFTER = _family("courierwatch_tls_leaf_not_after_timestamp_seconds")
ISSUER = _family("courierwatch_tls_issuer_info")
NTP = _family("courierwatch_ntp_offset_seconds")
POP = _family("courierwatch_pop_info")
# Every family written, in the order of a result's samples (the tests hold it to the table).
WRITTEN = (SUCCESS, OUTCOME, DURATION, LAST_RUN, NOT_AFTER, ISSUER, NTP, POP)


def varint(value: int) -> bytes:
    """Protobuf base-128 varint; a negative int64 as its 64-bit two's complement."""
    value &= 0xFFFF_FFFF_FFFF_FFFF
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def encode_labels(pairs: Iterable[tuple[str, str]]) -> bytes:
    """TimeSeries.labels entries: sorted by name, a label with an empty value left out."""
    return b"".join(
        _field(1, _field(1, name.encode()) + _field(2, value.encode()))
        for name, value in sorted(pairs)
        if value
    )


# Sample.timestamp's tag and the first byte of its varint, by the low 7 bits (of a timestamp
# of at least 128 ms, so that more bytes follow).
_LOW = tuple(bytes((0x10, low | 0x80)) for low in range(128))
_MAX_CACHED_HIGHS = 65536  # varints of timestamp >> 7 (128 ms steps) kept: 2.3 hours


def timestamp_field(ms: int) -> bytes:
    """Sample.timestamp as encoded: its tag and varint."""
    return b"\x10" + varint(ms)


class _Check:
    """One check of one probe: the start of each of its series' entries, up to the value
    (or, for a series whose value follows from its labels, with the value), for one POP and
    one length of sample (the same for every timestamp from 1971 to 2109). Each is made the
    first time a result needs it, and only that of the latest outcome and issuer is kept: at
    a million checks the bytes of series a check never writes (the phases it has not, a
    flapping check's other outcome) were most of the collector's memory."""

    __slots__ = ("_labels", "code", "duration", "issuer", "issuer_head", "last_run", "ntp_head",
                 "outcome", "pop", "pop_head", "sample_length", "success", "until_head",
                 "verified_by")  # fmt: skip

    def __init__(self, labels: tuple[str, ...], pop: str, sample_length: int) -> None:
        self._labels = labels  # the values of CHECK.labels
        self.pop = pop
        self.sample_length = sample_length
        self.last_run = self._head(LAST_RUN)
        # By PHASES; one that does not run for this check never has a series.
        self.duration: list[bytes | None] = [None] * len(PHASES)
        self.until_head = self.ntp_head = self.pop_head = self.issuer_head = None
        self.code = -1  # no outcome yet: success and outcome are not set
        self.success = self.outcome = b""
        self.issuer = self.verified_by = None

    def _head(self, family: Family, **own: str) -> bytes:
        row = dict(zip(CHECK.labels, self._labels, strict=True), pop=self.pop, **own)
        pairs = [(name, row[name]) for name in family.labels]
        pairs.append(("__name__", family.name))
        label_bytes = encode_labels(pairs)
        # WriteRequest.timeseries tag and length, the labels, the sample's tag and length,
        # and Sample.value's tag.
        length = len(label_bytes) + 2 + self.sample_length
        return b"\x0a" + varint(length) + label_bytes + bytes((0x12, self.sample_length, 0x09))

    def phase(self, index: int) -> bytes:
        head = self.duration[index] = self._head(DURATION, phase=PHASES[index])
        return head

    def not_after(self) -> bytes:
        head = self.until_head = self._head(NOT_AFTER)
        return head

    def ntp(self) -> bytes:
        head = self.ntp_head = self._head(NTP)
        return head

    def pop_info(self) -> bytes:
        head = self.pop_head = self._head(POP) + _ONE
        return head

    def verdict(self, code: int) -> None:
        """Sets success and outcome: the series of `code`, each with its value."""
        self.success = self._head(SUCCESS) + (_ONE if code == _OK else _ZERO)
        self.outcome = self._head(OUTCOME, outcome=outcome_label(code)) + _ONE
        self.code = code

    def issued(self, issuer: str, verified_by: str) -> None:
        """Sets issuer_head: the issuer series, with its value."""
        self.issuer_head = self._head(ISSUER, issuer=issuer, verified_by=verified_by) + _ONE
        self.issuer, self.verified_by = issuer, verified_by


class Encoder:
    """Results to TimeSeries bytes, keeping each series' label bytes (the costly part)."""

    def __init__(self, max_cached_checks: int = MAX_CACHED_CHECKS) -> None:
        self._max = max_cached_checks  # per probe
        # By probe (site, probe id), then by check; a probe the state forgets is forget()ten.
        self._probes: dict[ProbeKey, dict[CheckKey, _Check]] = {}
        # The varint of a timestamp's upper bits: results of a batch are seconds apart,
        # and making a varint costs more than everything else of a sample.
        self._highs: dict[int, bytes] = {}

    def encode(
        self,
        site: str,
        probe_id: str,
        results: Sequence[pb.Result],
        keys: Sequence[CheckKey] | None = None,
    ) -> tuple[bytes, int]:
        """The TimeSeries entries of `results` of probe `probe_id` at `site`, and how many
        samples they are. `keys`: check_key() of each result, when the caller has them."""
        if keys is None:
            keys = [check_key(result) for result in results]
        checks = self._probes.get((site, probe_id))
        if checks is None:
            checks = self._probes[site, probe_id] = {}
        parts: list[bytes] = []
        samples = 0
        double = _DOUBLE
        highs = self._highs
        for result, key in zip(results, keys, strict=True):
            at = result.started_at
            seconds, nanos = at.seconds, at.nanos
            ms = seconds * 1000 + nanos // 1_000_000
            if ms >= 128:
                high = highs.get(ms >> 7) or self._high(ms >> 7)
                timestamp = _LOW[ms & 0x7F] + high
            else:
                timestamp = timestamp_field(ms)
            pop = result.pop
            check = checks.get(key)
            if check is None or check.pop != pop or check.sample_length != 9 + len(timestamp):
                check = self._new(checks, site, probe_id, key, pop, 9 + len(timestamp))
            code = result.outcome
            if code != check.code:
                check.verdict(code)
            # last_run as scrape mode's started(): the same float.
            parts += (check.success, timestamp, check.outcome, timestamp, check.last_run,
                      double(seconds + nanos / 1e9), timestamp)  # fmt: skip
            samples += 3
            # A phase that did not run has no series. It reads 0, and reading is cheaper
            # than HasField, which only 0 needs. Unrolled: this is the hot loop.
            phases = result.phases
            dns, connect, tls, first_byte, total = check.duration  # in the order of PHASES
            if (value := phases.dns) or phases.HasField("dns"):
                parts += dns or check.phase(0), double(value), timestamp
                samples += 1
            if (value := phases.connect) or phases.HasField("connect"):
                parts += connect or check.phase(1), double(value), timestamp
                samples += 1
            if (value := phases.tls) or phases.HasField("tls"):
                parts += tls or check.phase(2), double(value), timestamp
                samples += 1
            if (value := phases.first_byte) or phases.HasField("first_byte"):
                parts += first_byte or check.phase(3), double(value), timestamp
                samples += 1
            if (value := phases.total) or phases.HasField("total"):
                parts += total or check.phase(4), double(value), timestamp
                samples += 1
            if result.HasField("tls"):
                facts = result.tls
                if facts.HasField("not_after"):
                    parts += (check.until_head or check.not_after(),
                              double(facts.not_after.seconds), timestamp)  # fmt: skip
                    samples += 1
                if issuer := facts.issuer:
                    verified_by = facts.verified_by
                    if issuer != check.issuer or verified_by != check.verified_by:
                        check.issued(issuer, verified_by)
                    parts += check.issuer_head, timestamp
                    samples += 1
            if code in MEASURED_OFFSET and result.HasField("ntp"):
                parts += (check.ntp_head or check.ntp(), double(result.ntp.offset_seconds),
                          timestamp)  # fmt: skip
                samples += 1
            if pop and key[2] == "courier":  # key[2]: the check kind
                parts += check.pop_head or check.pop_info(), timestamp
                samples += 1
        return b"".join(parts), samples

    def _high(self, high: int) -> bytes:
        if len(self._highs) >= _MAX_CACHED_HIGHS:
            self._highs.clear()
        varint_ = self._highs[high] = varint(high)
        return varint_

    def _new(self, checks: dict[CheckKey, _Check], site: str, probe_id: str, key: CheckKey,
             pop: str, sample_length: int) -> _Check:  # fmt: skip
        if len(checks) >= self._max:
            checks.clear()
        labels = check_label_values(site, probe_id, key)
        check = checks[key] = _Check(labels, pop, sample_length)
        return check

    def forget(self, probes: Iterable[ProbeKey]) -> None:
        """Drop what is kept of these probes (site, probe id): the state forgot them."""
        for probe in probes:
            self._probes.pop(probe, None)

    def cached(self) -> int:
        """How many checks' label bytes are kept, over all probes."""
        return sum(map(len, self._probes.values()))
