"""courier: an APNs courier as a device reaches it.

The target is the logical courier service on one port (courier.push.apple.com:5223 or :443).
Each run dials the next numbered courier (N-courier.push.apple.com, N from the target's numbers,
so over time every courier name is exercised) and shakes hands as apsd does: SNI
courier.push.apple.com, ALPN apns-security-v3, the chain verified against Apple Root CA. The
result keeps the logical name as its target (one series per port, not one per number), the
numbered host in dialled_host, and the POP its CNAME chain leads to. A hijacked answer is
dialled once (`dial_hijack`), so its finding says what a device gets there.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Final

from courierwatch.common.configfile import to_bool
from courierwatch.probe.checks import steps, tls
from courierwatch.probe.checks.base import CheckContext
from courierwatch.probe.checks.spec import KindSpec, Option
from courierwatch.probe.failures import CheckFailure
from courierwatch.v1 import courierwatch_pb2 as pb

if TYPE_CHECKING:
    from courierwatch.probe.targets import Target

# What a courier check offers and trusts unless told otherwise: what devices do.
ALPN: Final = "apns-security-v3"


DIAL_HIJACK: Final = Option(
    "dial_hijack",
    to_bool,
    "on a `dns_hijack` answer, dial the address once (TCP, then a TLS handshake whose "
    "certificate is read; never application data) so the detail says what a device gets there",
    "true or false",
    default=True,
    default_text="`true`",
)


async def run(target: Target, ctx: CheckContext, result: pb.Result) -> None:
    started = time.perf_counter()
    steps.dial_host(target, ctx, result)  # chosen first, so every step dials the same courier
    try:
        connection = await tls.handshake(target, ctx, result)
    except steps.UnusableAnswer as bad:
        if bad.outcome != pb.OUTCOME_DNS_HIJACK or not DIAL_HIJACK.of(target):
            raise
        # Half of what is left of the run, so the finding is still DNS's, never a timeout.
        seconds = (target.timeout - (time.perf_counter() - started)) / 2
        seen = await tls.what_answers(target, ctx, bad.address, target.alpn, seconds)
        raise CheckFailure(bad.outcome, f"{bad.detail}; {seen}") from None
    await connection.close()


SPEC: Final = KindSpec(
    name="courier",
    run=run,
    summary="an APNs courier shakes hands as apsd expects: the next `N-host`, its ALPN, Apple's CA",
    options=(
        tls.SNI,
        tls.ALPN.defaulting((ALPN,), text=f"`{ALPN}`"),
        tls.REQUIRE_ALPN,
        tls.ANCHORS.defaulting(
            facts=lambda facts: (facts.apple_root,), text="the bundled Apple Root CA"
        ),
        tls.EXPECT_ISSUER,
        steps.NUMBERS.defaulting(
            facts=lambda facts: facts.courier_numbers, text="`apple.courier_numbers`"
        ),
        DIAL_HIJACK,
    ),
    per_family=True,
    via_proxy=True,
    facts=tls.FACTS,
    refine=tls.required_alpn_is_offered,
)
