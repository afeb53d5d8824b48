"""What the benchmark's probes send: realistic Results, and batches encoded once and re-sent
with new sequence numbers for the cost of one bytes.join.

A Result's seq is written as a fixed-width (over-long, still valid) varint of six 7-bit
groups: the low two carry the result's position in its batch, the high four the batch's
"round". seq = round << 14 | position. Every result of a batch shares the round, so a batch
is its template's pieces joined by the four round bytes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from courierwatch.v1 import courierwatch_pb2 as pb

POSITION_BITS = 14
MAX_BATCH = 1 << POSITION_BITS
MAX_ROUND = 1 << 28
MARKER_TARGET = "bench-marker.invalid"  # one check per probe whose started_at is a send time

_GROUPS = ("push", "device_management", "software_updates", "icloud", "app_store", "apple_account")
_HOSTS = (
    "courier.push.apple.com", "gdmf.apple.com", "mdmenrollment.apple.com", "swscan.apple.com",
    "gateway.icloud.com", "itunes.apple.com", "idmsa.apple.com", "deviceenrollment.apple.com",
)  # fmt: skip
_KINDS = ("dns", "tls", "tcp", "http", "tls", "dns", "tls", "http")
_FAILURES = (pb.OUTCOME_REFUSED, pb.OUTCOME_TIMEOUT, pb.OUTCOME_TLS_UNTRUSTED)


def results(count: int, started: float) -> list[pb.Result]:
    """`count` distinct checks (seq unset) shaped like the probe's: the catalog's mix of kinds,
    phases, TLS facts and CNAME chains, one in twenty failing."""
    made = []
    for i in range(count):
        kind = _KINDS[i % len(_KINDS)]
        group = _GROUPS[i % len(_GROUPS)]
        host = f"{i // len(_HOSTS) + 1}-{_HOSTS[i % len(_HOSTS)]}"
        port = {"dns": 53, "tcp": 5223, "tls": 443, "http": 443}[kind]
        r = pb.Result(target=host, port=port, check=kind, group=group, via="direct",
                      interval_seconds=30.0 if group == "push" else 60.0,
                      outcome=pb.OUTCOME_OK)  # fmt: skip
        r.started_at.FromNanoseconds(int(started * 1e9) + i * 1000)
        r.phases.dns = 0.0123 + i * 1e-6
        r.phases.total = 0.2345 + i * 1e-6
        if kind == "dns":
            r.addresses.extend(["17.57.146.20", "17.57.146.21", "2620:149:208:4300::6"])
            r.cname_chain.extend([f"{i}.courier-push-apple.com.akadns.net",
                                  "eu-central-courier-4.push-apple.com.akadns.net"])
            r.pop = "eu-central" if group == "push" else ""
        else:
            r.address_family = "ipv4"
            r.peer_address = "17.57.146.20"
            r.phases.connect = 0.0211 + i * 1e-6
        if kind in ("tls", "http"):
            r.phases.tls = 0.0456 + i * 1e-6
            r.tls.version, r.tls.alpn = "TLSv1.3", "h2" if kind == "http" else ""
            r.tls.leaf_subject = f"CN={host},O=Apple Inc.,L=Cupertino,ST=California,C=US"
            r.tls.issuer = "CN=Apple Public Server RSA CA 12 - G1,O=Apple Inc.,ST=California,C=US"
            r.tls.not_after.FromSeconds(1_800_000_000 + i)
            r.tls.verified, r.tls.verified_by = True, "expected"
            r.tls.chain_subjects.extend([r.tls.leaf_subject, r.tls.issuer])
        if kind == "http":
            r.phases.first_byte = 0.0789 + i * 1e-6
            r.http.status = 200
        if i % 20 == 19:
            r.outcome = _FAILURES[i % len(_FAILURES)]
            r.detail = "connection refused by 17.57.146.20:443"
        made.append(r)
    return made


def marker(seq: int, started: float) -> bytes:
    """A ProbeMessage with one result whose started_at is `started`. Appended to a batch's
    bytes it joins that batch: protobuf merges a repeated message field's occurrences."""
    result = pb.Result(seq=seq, target=MARKER_TARGET, port=1, check="tcp", group="bench",
                       outcome=pb.OUTCOME_OK, interval_seconds=30.0)  # fmt: skip
    result.started_at.FromNanoseconds(int(started * 1e9))
    return pb.ProbeMessage(batch=pb.ResultBatch(results=[result])).SerializeToString()


class BatchTemplate:
    """One ProbeMessage(batch=...) held as the pieces around each result's round bytes."""

    def __init__(self, batch: Sequence[pb.Result]) -> None:
        if not 0 < len(batch) < MAX_BATCH:
            raise ValueError(f"a batch holds 1 to {MAX_BATCH - 1} results")
        self.size = len(batch)
        # Each result: tag of seq (field 1, varint), 2 position bytes, 4 round bytes, the rest.
        rests = [r.SerializeToString() for r in batch]  # seq is 0, so absent
        lengths = [7 + len(rest) for rest in rests]
        payload = sum(1 + len(_varint(n)) + n for n in lengths)
        pieces = []
        piece = b"\x12" + _varint(payload)  # ProbeMessage.batch
        for position, (rest, length) in enumerate(zip(rests, lengths, strict=True)):
            low = bytes(((position & 0x7F) | 0x80, (position >> 7) | 0x80))
            pieces.append(piece + b"\x0a" + _varint(length) + b"\x08" + low)  # results, seq
            piece = rest
        pieces.append(piece)
        self._pieces = pieces

    def encode(self, round_: int) -> bytes:
        return round_bytes(round_).join(self._pieces)

    def last_seq(self, round_: int) -> int:
        return round_ << POSITION_BITS | (self.size - 1)


def round_bytes(round_: int) -> bytes:
    if not 0 <= round_ < MAX_ROUND:
        raise ValueError("round out of range")
    return bytes((
        (round_ & 0x7F) | 0x80, (round_ >> 7 & 0x7F) | 0x80, (round_ >> 14 & 0x7F) | 0x80,
        round_ >> 21,
    ))  # fmt: skip


def first_round(applied_through: int) -> int:
    """The first round whose every seq is above what the collector has applied."""
    return (applied_through >> POSITION_BITS) + 1


def templates(checks: Sequence[pb.Result], batch: int) -> list[BatchTemplate]:
    """Batches that, sent in turn, cycle through every check evenly."""
    flat = list(checks) * (math.lcm(len(checks), batch) // len(checks))
    return [BatchTemplate(flat[i : i + batch]) for i in range(0, len(flat), batch)]


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)
