"""tcp: a TCP connection to the port opens; measures the connect time.

Direct, or through the site's proxy for a target with via="proxy"; every other kind opens its
connection here, so both paths behave the same for all of them.
"""

from __future__ import annotations

from courierwatch.probe.checks import dns, tunnel
from courierwatch.probe.checks.base import CheckContext, CheckFailure
from courierwatch.probe.checks.connection import Connection
from courierwatch.probe.targets import Target
from courierwatch.v1 import courierwatch_pb2 as pb


async def connect_to(address: str, port: int, result: pb.Result) -> Connection:
    connection = await Connection.open(address, port)
    result.phases.connect = connection.connect_seconds
    result.peer_address = address
    return connection


async def connect(target: Target, ctx: CheckContext, result: pb.Result) -> Connection:
    """Resolve, then connect to the first address, as a client without happy eyeballs would;
    through the proxy, the proxy resolves and connects."""
    if target.via == "proxy":
        proxy = ctx.proxy
        if proxy is None:
            raise RuntimeError("a target via the proxy, but no proxy is configured")
        host = dns.dial_host(target, ctx, result)
        try:
            found = await ctx.resolver.resolve(proxy.host, target.timeout)  # the proxy's own name
        except CheckFailure as failure:
            raise CheckFailure(failure.outcome, f"proxy {proxy.name}: {failure.detail}") from None
        return await tunnel.tunnel(proxy, found.addresses[0], host, target.port, result)
    addresses = await dns.resolve(target, ctx, result)
    return await connect_to(addresses[0], target.port, result)


async def reconnect(target: Target, ctx: CheckContext, result: pb.Result) -> Connection:
    """Another connection the way `connect` made the one in `result`, without asking DNS
    again; its timings go to a scratch result, not into the measurement."""
    scratch = pb.Result()
    if target.via == "proxy" and ctx.proxy is not None:
        host = result.dialled_host or target.host
        return await tunnel.tunnel(ctx.proxy, result.peer_address, host, target.port, scratch)
    return await connect_to(result.peer_address, target.port, scratch)


async def run(target: Target, ctx: CheckContext, result: pb.Result) -> None:
    connection = await connect(target, ctx, result)
    await connection.close()
