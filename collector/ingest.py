"""The gRPC servicer: who is calling, may they report for that site, and applying their
batches in order, each committed before it is acknowledged.

Requests arrive as raw bytes and are parsed here, so that an oversized or malformed message
is refused with a clear status and counted, and ends only the stream that sent it. Every
limit is counted by reason (State.refused for what ends a stream, State.limited for what
is only cut).

One identity, one stream. A second stream for an identity that has one open is refused
(ALREADY_EXISTS, `duplicate_identity`), logged with both peers and shown as a finding; the
first one carries on. Replacing the first instead would hand the newcomer a Welcome with
the first one's sequence number: two probes with one identity (a cloned SD card) would then
take each other's numbers for acknowledgements and delete results never applied. Refused,
the second keeps its results spooled and retries. The cost falls on a probe whose old
stream died unnoticed (a path that went away): it is refused until that stream is closed
as idle (limits.idle_timeout) or by keepalive, about half a minute.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
from cryptography import x509
from cryptography.x509.oid import NameOID
from google.protobuf.message import DecodeError

from courierwatch.collector.config import Limits
from courierwatch.collector.remote.send import Closed, Delivery, RemoteWriter
from courierwatch.collector.state import Applied, CheckKey, Probe, ProbeKey, State, check_key
from courierwatch.collector.store import Store
from courierwatch.common import bounds
from courierwatch.v1 import courierwatch_pb2 as pb

log = logging.getLogger(__name__)

SERVICE = pb.DESCRIPTOR.services_by_name["Collector"].full_name
MAX_GROUPS = 256  # group facts in one Hello: the catalog has a dozen
# Remote-write mode: batches of one stream read ahead while earlier ones wait for the store
# (the writer's queue bounds their samples; this, their number).
MAX_UNSTORED_BATCHES = 256
MAX_SEQ = 2**63 - 1  # what the store (an SQLite INTEGER) holds; a probe counts from 1
# A probe's ack timeout when its Hello does not say (an older probe): the proto's stated
# default, as the probe's own (courierwatch.probe.config.ACK_TIMEOUT, not imported here: the
# collector depends on no probe module).
DEFAULT_ACK_TIMEOUT = 30.0
# Busy at a third of the probe's ack timeout, within these bounds: never more often than
# a probe (a hostile one too) could make it cost anything.
BUSY_EVERY = (0.25, 20.0)


class Refused(Exception):
    def __init__(self, code: grpc.StatusCode, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason  # the label of courierwatch_collector_refused_total


@dataclass(slots=True, eq=False)
class _Stream:
    """One open Report stream, and what ends it from outside (a reload that de-authorizes)."""

    probe: Probe
    identity: str | None  # the certificate's CN; None in the insecure mode
    certificate_site: str  # its OU: the site an unlisted identity may report for
    busy_every: float  # seconds between Busy messages while a batch is held
    revoked: Refused | None = None
    waiting: asyncio.Timeout | None = None  # while waiting for the probe's next message


@dataclass(slots=True)
class _Batch:
    """One batch as received (duplicates included), its check keys and what it changed."""

    results: list[pb.Result]
    keys: list[CheckKey]
    change: Applied


class Ingest:
    def __init__(
        self,
        state: State,
        store: Store,
        *,
        authorization: dict[str, tuple[str, ...]],
        limits: Limits,
        require_identity: bool,
        writer: RemoteWriter | None = None,
    ) -> None:
        """`writer`: remote-write mode, where a batch is acknowledged once the store has it."""
        self._state = state
        self._store = store
        self._writer = writer
        # Remote-write mode: per probe, the highest number this process acknowledged (so the
        # store has everything up to it): the most a Welcome may tell the probe to delete.
        self._stored: dict[ProbeKey, int] = {}
        self._authorization = authorization
        self._limits = limits
        self._require_identity = require_identity  # False only in the insecure mode
        self._streams: dict[ProbeKey, _Stream] = {}
        self._calls = 0  # Report calls in progress, welcomed or not
        self._turns = state.turns  # one batch per turn of the event loop (collector/turns.py)

    def handler(self) -> grpc.GenericRpcHandler:
        report = grpc.stream_stream_rpc_method_handler(
            self.report,
            request_deserializer=None,  # raw bytes: parsed (and refused) in report()
            response_serializer=pb.CollectorMessage.SerializeToString,
        )
        return grpc.method_handlers_generic_handler(SERVICE, {"Report": report})

    def reconfigure(self, authorization: dict[str, tuple[str, ...]], limits: Limits) -> None:
        """A reloaded configuration: streams it no longer authorizes end (after the batch in
        hand is acknowledged); the others carry on. New limits apply from the next message
        (what a Welcome announced, from the next stream)."""
        self._authorization, self._limits = authorization, limits
        for stream in self._streams.values():
            probe = stream.probe
            if stream.identity is None or probe.site in self._sites(stream):
                continue
            stream.revoked = Refused(
                grpc.StatusCode.PERMISSION_DENIED, "unauthorized_site",
                f"{stream.identity!r} may no longer report for site {probe.site!r} "
                "(configuration reloaded)",
            )  # fmt: skip
            if stream.waiting is not None:
                stream.waiting.reschedule(asyncio.get_running_loop().time())  # at once

    async def report(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.CollectorMessage]:
        stream: _Stream | None = None
        hello: pb.Hello | None = None
        peer = context.peer()
        self._calls += 1
        try:
            hello = await self._hello(requests)
            limits = self._limits
            # Counted from the start of each call, refused once its Hello is read (so that
            # the refusal is not lost in a reset of the stream the client is still writing).
            if self._calls > limits.max_streams:
                raise Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, "too_many_streams",
                              f"more than {limits.max_streams} streams open")  # fmt: skip
            identity, certificate_site = self._authorize(hello, context)
            stream = self._open(hello, identity, certificate_site, peer)
            probe = stream.probe
            log.info("probe %s/%s connected from %s", *probe.key, peer)
            yield pb.CollectorMessage(welcome=pb.Welcome(
                applied_through_seq=self._deletable(probe), max_batch=limits.max_batch,
                max_message_bytes=limits.max_message_bytes,
                max_string_bytes=limits.max_string_bytes,
                idle_timeout_seconds=limits.idle_timeout,
            ))  # fmt: skip
            answers = (self._acks_once_committed(requests, stream) if self._writer is None
                       else self._acks_once_stored(requests, stream, self._writer))  # fmt: skip
            async for message in answers:
                yield message
        except Refused as refusal:
            self._state.refused[refusal.reason] += 1
            who = f"{hello.site}/{hello.probe_id} from {peer}" if hello else peer
            log.warning("refused %s: %s", who, refusal)
            await context.abort(refusal.code, str(refusal))
        finally:
            self._calls -= 1
            if stream is not None:
                del self._streams[stream.probe.key]
                self._state.disconnect(stream.probe)
                log.info("probe %s/%s disconnected", *stream.probe.key)

    def _open(
        self, hello: pb.Hello, identity: str | None, certificate_site: str, peer: str
    ) -> _Stream:
        """Welcome the probe of `hello`, unless it has a stream open or the store cannot say
        what is applied of it."""
        key = (hello.site, hello.probe_id)
        live = self._state.live(key)
        if live is not None:
            self._state.note_duplicate(live, peer)
            log.warning("two probes use the identity %s of site %s? a stream from %s was "
                        "refused while one from %s is open", hello.probe_id, hello.site,
                        peer, live.peer)  # fmt: skip
            raise Refused(grpc.StatusCode.ALREADY_EXISTS, "duplicate_identity",
                          f"probe {hello.probe_id!r} of site {hello.site!r} already has a "
                          f"stream open, from {live.peer}")  # fmt: skip
        # A Welcome says what is applied, and the probe deletes up to it: only what is on disk.
        if self._store.problem or self._store.pending(key):
            raise Refused(grpc.StatusCode.UNAVAILABLE, "store_unavailable",
                          self._store.problem or "a batch of this probe is being committed")
        probe = self._state.connect(hello, peer)
        stream = self._streams[key] = _Stream(
            probe, identity, certificate_site, busy_every(hello.ack_timeout_seconds)
        )
        return stream

    async def _next(self, requests: AsyncIterator[bytes], stream: _Stream) -> bytes | None:
        """The stream's next message; None when the probe ends the stream."""
        if stream.revoked is not None:
            raise stream.revoked
        idle = self._limits.idle_timeout
        try:
            async with asyncio.timeout(idle) as stream.waiting:
                return await anext(requests, None)
        except TimeoutError:
            if stream.revoked is not None:
                raise stream.revoked from None
            raise Refused(grpc.StatusCode.DEADLINE_EXCEEDED, "idle",
                          f"neither a batch nor a health beat for {idle:g} s") from None
        finally:
            stream.waiting = None

    async def _commit(self, probe: Probe, change: Applied) -> None:
        try:
            await self._store.save(probe, change)
        except Exception as error:
            if self._store.closing:  # a store that failed until the end: we are stopping
                raise Refused(grpc.StatusCode.UNAVAILABLE, "store_unavailable",
                              "the collector is stopping") from error  # fmt: skip
            # Not the disk (the store retries that): memory is ahead of the disk, and
            # acknowledging would let probes delete what is not stored. Stop (systemd
            # restarts us); the restarted collector knows what is on disk, and the probes
            # send the rest again.
            log.critical("cannot commit to the state store (%s): exiting", error)
            os._exit(75)  # EX_TEMPFAIL

    def _deletable(self, probe: Probe) -> int:
        """What a Welcome tells the probe is applied (so it deletes up to it): in scrape mode
        what is committed; in remote-write mode no more than this process acknowledged, so a
        probe that comes back (or moves here from another collector) sends again whatever
        the store may not have. The store keeps one copy of what it gets twice."""
        if self._writer is None:
            return probe.applied_through
        return min(probe.applied_through, self._stored.get(probe.key, 0))

    async def _acks_once_committed(
        self, requests: AsyncIterator[bytes], stream: _Stream
    ) -> AsyncIterator[pb.CollectorMessage]:
        """Scrape mode: each batch applied in its turn, committed, then acknowledged; the next
        one read after that. A Busy every stream.busy_every while a batch waits for its turn."""
        probe = stream.probe
        clock = asyncio.get_running_loop().time
        while (raw := await self._next(requests, stream)) is not None:
            read_at = clock()
            ticket = self._turns.ask()
            try:
                while not await self._turns.wait(ticket, stream.busy_every):
                    # A probe that does not read would hold the yield (its flow-control
                    # window full), and with it a turn granted meanwhile: away, it is not.
                    self._turns.away(ticket)
                    try:
                        yield self._busy(read_at)
                    finally:
                        self._turns.back(ticket)
                change = self._apply(probe, raw)
            finally:
                self._turns.end(ticket)
            # Not kept while the batch is committed (a thousand streams may wait on one
            # commit) nor while the stream waits for its next message.
            del raw
            if change is not None:
                await self._commit(probe, change)
                yield pb.CollectorMessage(ack=pb.Ack(through_seq=change.through))

    async def _acks_once_stored(
        self, requests: AsyncIterator[bytes], stream: _Stream, writer: RemoteWriter
    ) -> AsyncIterator[pb.CollectorMessage]:
        """Remote-write mode: each batch is applied and committed as in scrape mode and its
        samples written; its Ack goes once the store has them, or refused them for good (the
        writer counts and logs that; acknowledged all the same, so that it never wedges the
        stream). Reading goes on meanwhile and the acks follow in order; a Busy every
        stream.busy_every while a batch read waits for its turn or the store. While the store
        is down the writer's full queue stops the reading (write() waits): the probe keeps
        the rest spooled. A writer closed first (the collector stopping) ends the stream
        with nothing more acknowledged."""
        probe = stream.probe
        clock = asyncio.get_running_loop().time
        every = stream.busy_every
        # Per batch, in order: the number it is acknowledged through, and its delivery;
        # None once reading ended.
        written: asyncio.Queue[tuple[int, Delivery] | None] = asyncio.Queue(MAX_UNSTORED_BATCHES)
        held: deque[float] = deque()  # loop time each batch not acknowledged yet was read

        async def read() -> None:
            try:
                while (raw := await self._next(requests, stream)) is not None:
                    held.append(clock())
                    async with self._turns.turn():
                        batch = self._apply_message(probe, raw)
                        del raw  # as in scrape mode: not kept while waiting
                        if batch is None or not batch.results:
                            held.pop()  # a health beat, or nothing to write
                            continue
                        # Every result, duplicates too: the state having seen a result does
                        # not say that the store has it. Through the batch's own last number,
                        # not the state's: what lies beyond may still be on its way to the store.
                        through = batch.results[-1].seq
                        encoded = writer.encoder.encode(probe.site, probe.probe_id,
                                                        batch.results, batch.keys)  # fmt: skip
                        change = batch.change
                        del batch
                    delivery = await writer.write_encoded(*encoded)
                    await self._commit(probe, change)
                    await written.put((through, delivery))
            finally:
                if not reader.cancelling():  # else nobody reads the queue any more
                    await written.put(None)

        reader = asyncio.create_task(read())
        try:
            while True:
                try:
                    async with asyncio.timeout(every):  # get() is safe to cancel
                        entry = await written.get()
                except TimeoutError:
                    if held:
                        yield self._busy(held[0])
                    continue
                if entry is None:
                    break
                through, delivery = entry
                while not delivery.done():  # waited on, never cancelled from here
                    await asyncio.wait((delivery,), timeout=every)
                    if not delivery.done():
                        yield self._busy(held[0])
                try:
                    delivery.result()  # None: stored; a Rejection: given up, counted, logged
                except Closed:
                    raise Refused(grpc.StatusCode.UNAVAILABLE, "store_unavailable",
                                  "the collector is stopping before the store had the "
                                  "results: send them again") from None  # fmt: skip
                self._stored[probe.key] = max(self._stored.get(probe.key, 0), through)
                held.popleft()
                yield pb.CollectorMessage(ack=pb.Ack(through_seq=through))
            await reader  # why reading ended: the probe closed its side, or a refusal
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    def _busy(self, held_since: float) -> pb.CollectorMessage:
        """A Busy for a batch held since `held_since` (loop time), counted."""
        self._state.busy_notices += 1
        waited = asyncio.get_running_loop().time() - held_since
        return pb.CollectorMessage(busy=pb.Busy(held_seconds=waited))

    def _apply(self, probe: Probe, raw: bytes) -> Applied | None:
        """Parse, check and apply one message; what a batch changed, None for the rest."""
        batch = self._apply_message(probe, raw)
        return None if batch is None else batch.change

    def _apply_message(self, probe: Probe, raw: bytes) -> _Batch | None:
        """Parse, check and apply one message; a batch with what it changed, None for the
        rest."""
        message = self._parse(raw)
        if message.HasField("batch"):
            results = list(message.batch.results)  # each access would wrap anew
            keys, sizes = self._check_batch(probe, results)
            return _Batch(results, keys, self._state.apply(probe, results, keys, sizes))
        if message.HasField("health"):
            self._state.report_health(probe, message.health)
        return None

    async def _hello(self, requests: AsyncIterator[bytes]) -> pb.Hello:
        idle = self._limits.idle_timeout
        try:
            async with asyncio.timeout(idle):
                raw = await anext(requests, None)
        except TimeoutError:
            raise Refused(grpc.StatusCode.DEADLINE_EXCEEDED, "idle",
                          f"no Hello in {idle:g} s") from None  # fmt: skip
        message = self._parse(raw) if raw is not None else None
        if message is None or not message.HasField("hello"):
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "no_hello",
                          "the first message must be Hello")  # fmt: skip
        hello = message.hello
        if not hello.site or not hello.probe_id:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "no_hello",
                          "Hello needs site and probe_id")  # fmt: skip
        if len(hello.groups) > MAX_GROUPS:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "too_many_groups",
                          f"{len(hello.groups)} groups; the limit is {MAX_GROUPS}")
        self._check_labels(hello.site, hello.probe_id, hello.software_version,
                           hello.config_digest, *(g.id for g in hello.groups),
                           *(g.title for g in hello.groups))  # fmt: skip
        if not hello.groups:
            log.warning("probe %s/%s sent no group facts (an older version): every group it "
                        "reports counts as critical", hello.site, hello.probe_id)
        return hello

    def _parse(self, raw: bytes) -> pb.ProbeMessage:
        if len(raw) > self._limits.max_message_bytes:
            raise Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, "oversized",
                          f"message of {len(raw)} bytes; the limit is "
                          f"{self._limits.max_message_bytes}")  # fmt: skip
        try:
            return pb.ProbeMessage.FromString(raw)
        except DecodeError:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "malformed",
                          "not a courierwatch.v1.ProbeMessage") from None  # fmt: skip

    def _authorize(
        self, hello: pb.Hello, context: grpc.aio.ServicerContext
    ) -> tuple[str | None, str]:
        """The certificate says who calls; the config (or the certificate) says for which
        site. Returns the certificate's identity and site (None, "" in the insecure mode)."""
        if not self._require_identity:
            return None, ""
        certificate = _peer_certificate(context)
        if certificate is None:
            raise Refused(grpc.StatusCode.UNAUTHENTICATED, "no_certificate",
                          "a client certificate is required")  # fmt: skip
        identity = _name(certificate, NameOID.COMMON_NAME)
        if identity != hello.probe_id:
            raise Refused(grpc.StatusCode.PERMISSION_DENIED, "identity_mismatch",
                          f"the certificate is for {identity!r}, "
                          f"not probe {hello.probe_id!r}")  # fmt: skip
        certificate_site = _name(certificate, NameOID.ORGANIZATIONAL_UNIT_NAME)
        if hello.site not in self._sites_of(identity, certificate_site):
            raise Refused(grpc.StatusCode.PERMISSION_DENIED, "unauthorized_site",
                          f"{identity!r} may not report for site {hello.site!r}")  # fmt: skip
        return identity, certificate_site

    def _sites(self, stream: _Stream) -> tuple[str, ...]:
        assert stream.identity is not None
        return self._sites_of(stream.identity, stream.certificate_site)

    def _sites_of(self, identity: str, certificate_site: str) -> tuple[str, ...]:
        sites = self._authorization.get(identity)
        if sites is None:
            sites = (certificate_site,) if certificate_site else ()
        return sites

    def _check_batch(
        self, probe: Probe, results: list[pb.Result]
    ) -> tuple[list[CheckKey], list[int]]:
        """Refuse the batch if it breaks a limit, else cut what is too long in it; the check
        key and the encoded size of each result."""
        limits = self._limits
        if len(results) > limits.max_batch:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "batch_too_long",
                          f"batch of {len(results)} results; "
                          f"the limit is {limits.max_batch}")  # fmt: skip
        if results and max(result.seq for result in results) > MAX_SEQ:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "seq_out_of_range",
                          f"a sequence number above {MAX_SEQ}")  # fmt: skip
        keys = [check_key(result) for result in results]
        # A check already in the state passed these checks when it arrived.
        latest = probe.latest
        new = {key for key in keys if key not in latest}
        for target, _, check, group, family, via in new:
            self._check_labels(target, check, group, family, via)
        self._check_labels(*{result.pop for result in results})
        if len(latest) + len(new) > limits.max_targets_per_probe:
            raise Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, "too_many_targets",
                          f"more than {limits.max_targets_per_probe} distinct checks "
                          "from one probe")  # fmt: skip
        max_bytes = limits.max_string_bytes
        sizes = [result.ByteSize() for result in results]
        cut = 0
        for index, result in enumerate(results):
            if _may_need_cut(result, sizes[index], max_bytes) and bounds.bound(result, max_bytes):
                cut += 1
                sizes[index] = result.ByteSize()
        if cut:
            self._state.limited["result_cut"] += cut
        # What the state would hold after the batch: each check's last result replaces its own.
        through = probe.applied_through
        last = {key: size for key, result, size in zip(keys, results, sizes, strict=True)
                if result.seq > through}  # fmt: skip
        before = probe.sizes
        growth = sum(size - before.get(key, 0) for key, size in last.items())
        held = probe.state_bytes + growth
        if held > limits.max_state_bytes_per_probe:
            raise Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, "state_too_large",
                          f"the latest results of one probe would take {held} bytes; "
                          f"the limit is {limits.max_state_bytes_per_probe}")  # fmt: skip
        return keys, sizes

    def _check_labels(self, *values: str) -> None:
        longest = max(values, key=len, default="")
        if len(longest) > self._limits.max_label_length:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "label_too_long",
                          f"label value of {len(longest)} characters; the limit is "
                          f"{self._limits.max_label_length}")  # fmt: skip


def busy_every(ack_timeout: float) -> float:
    """Seconds between Busy messages to a probe whose ack timeout is `ack_timeout` (0 or
    nonsense: the default)."""
    if not (math.isfinite(ack_timeout) and ack_timeout > 0):
        ack_timeout = DEFAULT_ACK_TIMEOUT
    low, high = BUSY_EVERY
    return min(high, max(low, ack_timeout / 3))


def _may_need_cut(result: pb.Result, size: int, max_bytes: int) -> bool:
    """False when bounds.bound() would find nothing to cut, at a fifth of its cost: no string
    is longer than the whole result (`size`, its ByteSize()), and no list is longer than
    bounds.MAX_LIST. Most results are a few hundred bytes, under max_bytes."""
    return (size > max_bytes or len(result.cname_chain) > bounds.MAX_LIST
            or len(result.addresses) > bounds.MAX_LIST
            or len(result.tls.chain_subjects) > bounds.MAX_LIST)  # fmt: skip


def _peer_certificate(context: grpc.aio.ServicerContext) -> x509.Certificate | None:
    pems = context.auth_context().get("x509_pem_cert")
    return x509.load_pem_x509_certificate(pems[0]) if pems else None


def _name(certificate: x509.Certificate, oid: x509.ObjectIdentifier) -> str:
    attributes = certificate.subject.get_attributes_for_oid(oid)
    value = attributes[0].value if attributes else ""
    return value.decode() if isinstance(value, bytes) else value
