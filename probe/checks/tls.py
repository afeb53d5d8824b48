"""tls: the handshake completes, the chain verifies for the server name and comes from whom the
endpoint's group expects; records TLS facts.

Apple's services refuse SSL inspection, so a re-signed chain is its own finding, named after
whoever signed it: a chain that verifies only against the site's own CAs, or one that verifies
against nothing and whose issuer is not the group's expected one (every catalog group names
its own: Apple's CAs, and the public CAs Apple uses where it uses them), or even a verifying one
from an unexpected issuer. What the peer presented is read from the failed handshake itself,
whatever the verdict; only where Python hides it does another handshake that accepts any chain
read it. A broken chain from an expected issuer (expired, unknown root) stays tls_untrusted, a
wrong name tls_name_mismatch.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from collections.abc import Collection, MutableMapping
from typing import TYPE_CHECKING, Any, Final

from courierwatch.common.certs import describe
from courierwatch.common.configfile import to_host, to_str
from courierwatch.common.results import outcome_label
from courierwatch.probe.checks import steps
from courierwatch.probe.checks.base import CheckContext
from courierwatch.probe.checks.spec import KindSpec, Option, OptionError
from courierwatch.probe.failures import HOSTNAME_MISMATCH, CheckFailure, classify
from courierwatch.probe.net.connection import Connection
from courierwatch.v1 import courierwatch_pb2 as pb

if TYPE_CHECKING:
    from courierwatch.probe.targets import Target

_DER: Final = 2  # _ssl.ENCODING_DER
# OpenSSL's reasons for a first record that is no TLS record at all (its version or length
# field is not one TLS can have): the port speaks another protocol (an HTTP banner, random
# bytes), which is no handshake that failed.
_NOT_TLS: Final = frozenset({"WRONG_VERSION_NUMBER", "PACKET_LENGTH_TOO_LONG"})
# What a second look at a failing peer may run into; none of it changes the finding.
_LOOK_ERRORS: Final = (OSError, ssl.SSLError, EOFError, CheckFailure)

_ALPN_ID: Final = to_str(re.compile(r"[!-~]{1,255}"), "a protocol id such as h2")

# What a verified handshake takes; http over TLS takes these too, courier all with its defaults.
SNI: Final = Option(
    "sni", to_host, "server name sent and verified", "a host name", default_text="the host"
)
ANCHORS: Final = Option(
    "anchors",
    None,
    "extra CAs a chain may verify against, beside `trust.anchors` and the system store",
    "list of PEM files",
    many=True,
    default=(),
)
EXPECT_ISSUER: Final = Option(
    "expect_issuer",
    to_str(re.compile(r".+"), "a non-empty name"),
    "an issuer of the presented chain must contain one of these (any case); "
    "a chain from anyone else is SSL inspection",
    "list of names",
    many=True,
    default=(),
    default_text="any issuer",
)
VERIFIED: Final = (SNI, ANCHORS, EXPECT_ISSUER)
ALPN: Final = Option(
    "alpn", _ALPN_ID, "protocols offered in the handshake", "list of protocol ids", many=True,
    default=(),
)  # fmt: skip
REQUIRE_ALPN: Final = Option(
    "require_alpn",
    _ALPN_ID,
    "the handshake must negotiate it, else a middlebox answered for the service; "
    "one of `alpn`, or without `alpn` the one protocol offered",
    "a protocol id",
)
FACTS: Final = (
    *steps.CONNECT_FACTS, "phases.tls", "tls.version", "tls.alpn", "tls.verified",
    "tls.verified_by", "tls.chain_subjects", "tls.leaf_subject", "tls.issuer", "tls.not_after",
)  # fmt: skip


def required_alpn_is_offered(
    values: MutableMapping[str, Any], written: Collection[str], port: int
) -> None:
    """require_alpn must be one of alpn; written alone, offering only it is the plain reading."""
    required, offered = values["require_alpn"], values["alpn"]
    if required is None or required in offered:
        return
    if "alpn" in written:
        raise OptionError("require_alpn", f"must be one of alpn ({', '.join(offered)})")
    values["alpn"] = (required,)


async def handshake(
    target: Target, ctx: CheckContext, result: pb.Result, alpn: tuple[str, ...] | None = None
) -> Connection:
    """Connect and complete a verifying TLS handshake; the connection is then ready for data."""
    offered = target.alpn if alpn is None else alpn
    connection = await steps.connect(target, ctx, result)
    started = connection.mark()
    try:
        await connection.start_tls(ctx.trust.verifying(target.anchors, offered), target.server_name)
        result.phases.tls = connection.since(started)
        issuers = _record(result.tls, _session(connection), "expected")
        if not _expected_issuer(target, issuers):
            raise _intercepted(f"verified, but issued by '{result.tls.issuer}'", target)
        _require_alpn(target, result.tls.alpn)
    except ssl.SSLCertVerificationError as error:
        failed = connection.tls_attempt
        issuers = [] if failed is None else _record(result.tls, failed, "")
        connection.abort()
        if error.verify_code != HOSTNAME_MISMATCH:
            await _explain(target, ctx, result, offered, issuers)
        raise
    except ssl.SSLError as error:
        connection.abort()
        if error.reason in _NOT_TLS:
            detail = f"the peer does not speak TLS ({error.reason})"
            raise CheckFailure(pb.OUTCOME_PROTOCOL_ERROR, detail) from None
        raise
    except BaseException:
        connection.abort()
        raise
    return connection


async def _explain(
    target: Target,
    ctx: CheckContext,
    result: pb.Result,
    alpn: tuple[str, ...],
    issuers: list[str],
) -> None:
    """Raise tls_intercepted if the failing chain is a re-signed one; else return (untrusted).

    `issuers`: those of the chain the failed handshake was presented (read before any verdict,
    so an inspection root the probe does not have is still named); only where Python hid that
    chain does a second handshake that accepts any chain read it."""
    if ctx.trust.has_site_anchors:
        try:
            await _look(target, ctx, result, ctx.trust.site_verifying(alpn), "site")
        except _LOOK_ERRORS:
            pass  # not the site's CA either
        else:
            raise _intercepted(f"re-signed by the site's CA '{result.tls.issuer}'", target)
    if not issuers:
        with contextlib.suppress(*_LOOK_ERRORS):
            issuers = await _look(target, ctx, result, ctx.trust.inspecting(alpn), "")
    if issuers and not _expected_issuer(target, issuers):
        raise _intercepted(f"presented by '{result.tls.issuer}'", target)


async def _look(
    target: Target, ctx: CheckContext, result: pb.Result, context: ssl.SSLContext, by: str
) -> list[str]:
    connection = await steps.reconnect(target, ctx, result)
    try:
        await connection.start_tls(context, target.server_name)
        return _record(result.tls, _session(connection), by)
    finally:
        connection.abort()


def _session(connection: Connection) -> ssl.SSLSocket:
    assert connection.tls is not None  # start_tls returned, so the handshake completed
    return connection.tls


def _intercepted(what: str, target: Target) -> CheckFailure:
    expected = f", not {' or '.join(target.expect_issuer)}" if target.expect_issuer else ""
    return CheckFailure(pb.OUTCOME_TLS_INTERCEPTED, f"{what}{expected}: SSL inspection")


def _expected_issuer(target: Target, issuers: list[str]) -> bool:
    if not target.expect_issuer:
        return True
    wanted = [name.casefold() for name in target.expect_issuer]
    return any(name in issuer.casefold() for issuer in issuers for name in wanted)


def _require_alpn(target: Target, negotiated: str) -> None:
    required = target.require_alpn
    if required is None or negotiated == required:
        return
    got = f"negotiated {negotiated}" if negotiated else "no protocol negotiated"
    raise CheckFailure(
        pb.OUTCOME_TLS_ALPN_MISMATCH,
        f"{got}, {required} required: a middlebox in the path answers for the service",
    )


def _record(facts: pb.TlsFacts, tls: ssl.SSLSocket, verified_by: str) -> list[str]:
    """Fill facts from the finished handshake; returns the issuers of the presented chain."""
    facts.version = tls.version() or ""
    facts.alpn = tls.selected_alpn_protocol() or ""
    facts.verified = verified_by == "expected"  # a site CA proves interception, not trust
    facts.verified_by = verified_by
    chain = [describe(der) for der in _presented(tls)]
    del facts.chain_subjects[:]
    facts.chain_subjects.extend(cert.subject for cert in chain)
    if chain:
        leaf = chain[0]
        facts.leaf_subject = leaf.subject
        facts.issuer = leaf.issuer
        facts.not_after.CopyFrom(leaf.not_after)
    return [cert.issuer for cert in chain]


def _presented(tls: ssl.SSLSocket) -> list[bytes]:
    """DER of the chain as the peer sent it, leaf first; just the leaf where Python hides it.

    Python 3.13 made this public (get_unverified_chain); 3.11 and 3.12 have it only on the
    private _sslobj, so it is used when present and never relied on.
    """
    inner: Any = getattr(tls, "_sslobj", None)
    with contextlib.suppress(AttributeError, TypeError, ValueError, ssl.SSLError):
        getter = getattr(tls, "get_unverified_chain", None) or inner.get_unverified_chain
        # 3.13's public method gives DER bytes, the private one certificate objects.
        chain = [c if isinstance(c, bytes) else c.public_bytes(_DER) for c in getter() or ()]
        if chain:
            return chain
    try:
        leaf = tls.getpeercert(binary_form=True)
    except ValueError:  # a failed handshake: Python shows nothing of it
        return []
    return [leaf] if leaf else []


async def what_answers(
    target: Target, ctx: CheckContext, address: str, alpn: tuple[str, ...], seconds: float
) -> str:
    """What a device that took a bad DNS answer would get at address:port, in words: the
    connect's failure, or what a TLS handshake there presents (read, never trusted). Only a
    handshake: no application data is ever sent to such an address. Within `seconds`."""
    where = f"dialled {address}:{target.port}"
    connected = False
    try:
        async with asyncio.timeout(seconds):
            connection = await Connection.open(address, target.port)
            connected = True
            try:
                await connection.start_tls(ctx.trust.inspecting(alpn), target.server_name)
                chain = [describe(der) for der in _presented(_session(connection))]
            finally:
                connection.abort()
    except (OSError, ssl.SSLError, TimeoutError) as error:
        outcome, reason = classify(error)
        if not connected:
            return f"{where}: {outcome_label(outcome)}"
        return f"{where}: it takes TCP but gives no TLS handshake ({reason})"
    if not chain:
        return f"{where}: it shakes hands without a certificate"
    leaf = chain[0]
    presented = f"{where}: it presents '{leaf.subject}' issued by '{leaf.issuer}'"
    if target.expect_issuer and _expected_issuer(target, [cert.issuer for cert in chain]):
        return f"{presented}, an issuer Apple uses (is apple.ranges out of date?)"
    return presented


async def run(target: Target, ctx: CheckContext, result: pb.Result) -> None:
    connection = await handshake(target, ctx, result)
    await connection.close()


SPEC: Final = KindSpec(
    name="tls",
    run=run,
    summary="the handshake completes and the chain verifies for the name, from the issuer expected",
    options=(SNI, ALPN, REQUIRE_ALPN, ANCHORS, EXPECT_ISSUER),
    per_family=True,
    via_proxy=True,
    facts=FACTS,
    refine=required_alpn_is_offered,
)
