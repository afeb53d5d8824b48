"""courier: an APNs courier as a device reaches it.

The target is the logical courier service on one port (courier.push.apple.com:5223 or :443).
Each run dials the next numbered courier (N-courier.push.apple.com, N from the target's numbers,
so over time every courier name is exercised) and shakes hands as apsd does: SNI
courier.push.apple.com, ALPN apns-security-v3, the chain verified against Apple Root CA. The
result keeps the logical name as its target (one series per port, not one per number), the
numbered host in dialled_host, and the POP its CNAME chain leads to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from courierwatch.probe.checks import steps, tls
from courierwatch.probe.checks.base import CheckContext
from courierwatch.probe.checks.spec import KindSpec
from courierwatch.v1 import courierwatch_pb2 as pb

if TYPE_CHECKING:
    from courierwatch.probe.targets import Target

# What a courier check offers and trusts unless told otherwise: what devices do.
ALPN: Final = "apns-security-v3"


async def run(target: Target, ctx: CheckContext, result: pb.Result) -> None:
    steps.dial_host(target, ctx, result)  # chosen first, so every step dials the same courier
    connection = await tls.handshake(target, ctx, result)
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
    ),
    per_family=True,
    via_proxy=True,
    facts=tls.FACTS,
    refine=tls.required_alpn_is_offered,
)
