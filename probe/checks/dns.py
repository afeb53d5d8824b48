"""dns: the name resolves to at least one address; records the CNAME chain and the addresses."""

from __future__ import annotations

from courierwatch.probe.checks.base import CheckContext
from courierwatch.probe.targets import Target
from courierwatch.v1 import courierwatch_pb2 as pb


async def resolve(target: Target, ctx: CheckContext, result: pb.Result) -> tuple[str, ...]:
    """Resolve the target's host into the result; the first step of every other kind."""
    resolution = await ctx.resolver.resolve(target.host, target.timeout)
    if resolution.seconds is not None:
        result.phases.dns = resolution.seconds
    result.addresses.extend(resolution.addresses)
    result.cname_chain.extend(resolution.cname_chain)
    return resolution.addresses


async def run(target: Target, ctx: CheckContext, result: pb.Result) -> None:
    await resolve(target, ctx, result)
