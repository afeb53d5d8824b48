"""dns: the name resolves to usable addresses; records the CNAME chain, the POP, the addresses.

"Usable" is judged here, before any kind dials: a sinkhole or hijacked answer is a DNS finding
(courierwatch.probe.sanity), and the probe never connects to an address a filter made up.
"""

from __future__ import annotations

from courierwatch.probe import pop, sanity
from courierwatch.probe.checks.base import CheckContext, CheckFailure
from courierwatch.probe.rotation import numbered
from courierwatch.probe.targets import Target
from courierwatch.v1 import courierwatch_pb2 as pb


def dial_host(target: Target, ctx: CheckContext, result: pb.Result) -> str:
    """The host this run dials: the next numbered name of a logical target, else the host."""
    if target.numbers and not result.dialled_host:
        number = ctx.rotation.next(target.series, target.numbers)
        result.dialled_host = numbered(number, target.host)
    return result.dialled_host or target.host


async def resolve(
    target: Target, ctx: CheckContext, result: pb.Result, *, fresh: bool = False
) -> tuple[str, ...]:
    """Resolve the dialled host into the result; the first step of every other kind.

    Other kinds take the answer of the name's latest dns check while its TTL lasts, as a
    device's resolver cache would, and then have no dns phase (courierwatch.probe.resolver);
    a numbered name always asks, since naming each courier's POP is its point."""
    name = dial_host(target, ctx, result)
    resolution = await ctx.resolver.resolve(
        name, target.timeout, target.family, fresh=fresh or bool(target.numbers)
    )
    result.addresses.extend(resolution.addresses)
    if resolution.literal:
        return resolution.addresses  # an address literal: nothing was asked, nothing to judge
    if resolution.seconds is not None:  # None: answered without a query of its own
        result.phases.dns = resolution.seconds
    result.cname_chain.extend(resolution.cname_chain)
    result.pop = pop.extract(resolution.cname_chain, ctx.pop_pattern)
    finding = sanity.judge(name, resolution.addresses, target.addresses, ctx.apple_ranges)
    if finding is not None:
        raise CheckFailure(*finding)
    return resolution.addresses


async def run(target: Target, ctx: CheckContext, result: pb.Result) -> None:
    await resolve(target, ctx, result, fresh=True)  # measures the resolver, never the cache
