"""The gRPC servicer: who is calling, may they report for that site, and applying their
batches in order, each committed before it is acknowledged.

Requests arrive as raw bytes and are parsed here, so that an oversized or malformed message
is refused with a clear status and counted, and ends only the stream that sent it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import AsyncIterator

import grpc
from cryptography import x509
from cryptography.x509.oid import NameOID
from google.protobuf.message import DecodeError

from courierwatch.collector.config import Limits
from courierwatch.collector.state import Applied, CheckKey, Probe, ProbeKey, State, check_key
from courierwatch.collector.store import Store
from courierwatch.v1 import courierwatch_pb2 as pb

log = logging.getLogger(__name__)

SERVICE = pb.DESCRIPTOR.services_by_name["Collector"].full_name


class Refused(Exception):
    def __init__(self, code: grpc.StatusCode, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason  # the label of courierwatch_collector_refused_total


class Ingest:
    def __init__(
        self,
        state: State,
        store: Store,
        *,
        authorization: dict[str, tuple[str, ...]],
        limits: Limits,
        require_identity: bool,
    ) -> None:
        self._state = state
        self._store = store
        self._authorization = authorization
        self._limits = limits
        self._require_identity = require_identity  # False only in the insecure mode
        self._locks: dict[ProbeKey, asyncio.Lock] = {}

    def handler(self) -> grpc.GenericRpcHandler:
        report = grpc.stream_stream_rpc_method_handler(
            self.report,
            request_deserializer=None,  # raw bytes: parsed (and refused) in report()
            response_serializer=pb.CollectorMessage.SerializeToString,
        )
        return grpc.method_handlers_generic_handler(SERVICE, {"Report": report})

    async def report(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.CollectorMessage]:
        probe: Probe | None = None
        try:
            hello = await self._hello(requests)
            self._authorize(hello, context)
            probe = self._state.connect(hello)
            log.info("probe %s/%s connected from %s", *probe.key, context.peer())
            yield pb.CollectorMessage(welcome=pb.Welcome(
                applied_through_seq=probe.applied_through, max_batch=self._limits.max_batch,
                max_message_bytes=self._limits.max_message_bytes,
            ))  # fmt: skip
            lock = self._locks.setdefault(probe.key, asyncio.Lock())
            async for raw in requests:
                async with lock:  # a reconnect may overlap the old stream briefly
                    change = self._apply(probe, raw)
                    # Not kept while the batch is committed (a thousand streams may wait on
                    # one commit) nor while the stream waits for its next message.
                    del raw
                    if change is not None:
                        await self._commit(probe, change)
                if change is not None:
                    yield pb.CollectorMessage(ack=pb.Ack(through_seq=change.through))
        except Refused as refusal:
            self._state.refused[refusal.reason] += 1
            who = f"{probe.site}/{probe.probe_id}" if probe else context.peer()
            log.warning("refused %s: %s", who, refusal)
            await context.abort(refusal.code, str(refusal))
        finally:
            if probe is not None:
                self._state.disconnect(probe)
                log.info("probe %s/%s disconnected", *probe.key)

    async def _commit(self, probe: Probe, change: Applied) -> None:
        try:
            await self._store.save(probe, change)
        except (sqlite3.Error, OSError) as error:
            # Memory is already ahead of the disk: acknowledging, or even welcoming a probe
            # with the in-memory sequence, would let probes delete what is not stored. Stop
            # at once (systemd restarts us); the restarted collector knows only what is on
            # disk, and the probes send the rest again.
            log.critical("cannot commit to the state store (%s): exiting", error)
            os._exit(75)  # EX_TEMPFAIL

    def _apply(self, probe: Probe, raw: bytes) -> Applied | None:
        """Parse, check and apply one message; what a batch changed, None for the rest."""
        message = self._parse(raw)
        if message.HasField("batch"):
            results = list(message.batch.results)  # each access would wrap anew
            return self._state.apply(probe, results, self._check_batch(probe, results))
        if message.HasField("health"):
            self._state.report_health(probe, message.health)
        return None

    async def _hello(self, requests: AsyncIterator[bytes]) -> pb.Hello:
        raw = await anext(requests, None)
        message = self._parse(raw) if raw is not None else None
        if message is None or not message.HasField("hello"):
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "no_hello",
                          "the first message must be Hello")  # fmt: skip
        hello = message.hello
        if not hello.site or not hello.probe_id:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "no_hello",
                          "Hello needs site and probe_id")  # fmt: skip
        self._check_labels(hello.site, hello.probe_id, hello.software_version,
                           *(g.id for g in hello.groups), *(g.title for g in hello.groups))
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

    def _authorize(self, hello: pb.Hello, context: grpc.aio.ServicerContext) -> None:
        """The certificate says who calls; the config (or the certificate) says for which site."""
        if not self._require_identity:
            return
        certificate = _peer_certificate(context)
        if certificate is None:
            raise Refused(grpc.StatusCode.UNAUTHENTICATED, "no_certificate",
                          "a client certificate is required")  # fmt: skip
        identity = _name(certificate, NameOID.COMMON_NAME)
        if identity != hello.probe_id:
            raise Refused(grpc.StatusCode.PERMISSION_DENIED, "identity_mismatch",
                          f"the certificate is for {identity!r}, "
                          f"not probe {hello.probe_id!r}")  # fmt: skip
        sites = self._authorization.get(identity)
        if sites is None:
            site = _name(certificate, NameOID.ORGANIZATIONAL_UNIT_NAME)
            sites = (site,) if site else ()
        if hello.site not in sites:
            raise Refused(grpc.StatusCode.PERMISSION_DENIED, "unauthorized_site",
                          f"{identity!r} may not report for site {hello.site!r}")  # fmt: skip

    def _check_batch(self, probe: Probe, results: list[pb.Result]) -> list[CheckKey]:
        """Refuse the batch if it breaks a limit; else the check key of each result."""
        limits = self._limits
        if len(results) > limits.max_batch:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "batch_too_long",
                          f"batch of {len(results)} results; "
                          f"the limit is {limits.max_batch}")  # fmt: skip
        keys = [check_key(result) for result in results]
        # A check already in the state passed these checks when it arrived.
        new = {key for key in keys if key not in probe.latest}
        for target, _, check, group, family, via in new:
            self._check_labels(target, check, group, family, via)
        self._check_labels(*{result.pop for result in results})
        if len(probe.latest) + len(new) > limits.max_targets_per_probe:
            raise Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, "too_many_targets",
                          f"more than {limits.max_targets_per_probe} distinct checks "
                          "from one probe")  # fmt: skip
        return keys

    def _check_labels(self, *values: str) -> None:
        longest = max(values, key=len, default="")
        if len(longest) > self._limits.max_label_length:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "label_too_long",
                          f"label value of {len(longest)} characters; the limit is "
                          f"{self._limits.max_label_length}")  # fmt: skip


def _peer_certificate(context: grpc.aio.ServicerContext) -> x509.Certificate | None:
    pems = context.auth_context().get("x509_pem_cert")
    return x509.load_pem_x509_certificate(pems[0]) if pems else None


def _name(certificate: x509.Certificate, oid: x509.ObjectIdentifier) -> str:
    attributes = certificate.subject.get_attributes_for_oid(oid)
    value = attributes[0].value if attributes else ""
    return value.decode() if isinstance(value, bytes) else value
