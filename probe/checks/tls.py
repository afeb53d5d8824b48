"""tls: the handshake completes and the chain verifies for the server name; records TLS facts.

When verification fails, a second handshake that accepts any chain reads what the peer
presented, so the NOC sees whose certificate is in the path (an inspection proxy, say).
"""

from __future__ import annotations

import contextlib
import ssl
import time

from cryptography import x509

from courierwatch.probe.checks import tcp
from courierwatch.probe.checks.base import CheckContext
from courierwatch.probe.targets import Target
from courierwatch.v1 import courierwatch_pb2 as pb


async def handshake(
    target: Target, ctx: CheckContext, result: pb.Result, alpn: tuple[str, ...] | None = None
) -> tcp.Stream:
    """Connect and complete a verifying TLS handshake; the stream is then ready for data."""
    offered = target.alpn if alpn is None else alpn
    reader, writer = await tcp.connect(target, ctx, result)
    started = time.perf_counter()
    try:
        await writer.start_tls(
            ctx.trust.verifying(target.anchors, offered), server_hostname=target.server_name
        )
    except ssl.SSLCertVerificationError:
        writer.transport.abort()
        with contextlib.suppress(OSError, ssl.SSLError, EOFError):
            await _read_presented(target, ctx, result, offered)
        raise
    except BaseException:
        writer.transport.abort()
        raise
    result.phases.tls = time.perf_counter() - started
    _record(result.tls, writer.get_extra_info("ssl_object"), verified=True)
    return reader, writer


async def _read_presented(
    target: Target, ctx: CheckContext, result: pb.Result, alpn: tuple[str, ...]
) -> None:
    scratch = pb.Result()  # the second connection's timings are not the measurement
    _, writer = await tcp.connect_to(result.peer_address, target.port, scratch)
    try:
        await writer.start_tls(ctx.trust.inspecting(alpn), server_hostname=target.server_name)
        _record(result.tls, writer.get_extra_info("ssl_object"), verified=False)
    finally:
        writer.transport.abort()


def _record(facts: pb.TlsFacts, tls: ssl.SSLObject, *, verified: bool) -> None:
    facts.version = tls.version() or ""
    facts.alpn = tls.selected_alpn_protocol() or ""
    facts.verified = verified
    der = tls.getpeercert(binary_form=True)
    if der:
        leaf = x509.load_der_x509_certificate(der)
        facts.leaf_subject = leaf.subject.rfc4514_string()
        facts.issuer = leaf.issuer.rfc4514_string()
        facts.not_after.FromDatetime(leaf.not_valid_after_utc)


async def run(target: Target, ctx: CheckContext, result: pb.Result) -> None:
    _, writer = await handshake(target, ctx, result)
    await tcp.close(writer)
