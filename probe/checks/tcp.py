"""tcp: a TCP connection to the port opens; measures the connect time.

Direct, or through the site's proxy for a target with via="proxy"; every other kind opens its
connection here, so both paths behave the same for all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time

from courierwatch.probe.checks import dns, tunnel
from courierwatch.probe.checks.base import CheckContext, CheckFailure
from courierwatch.probe.targets import Target
from courierwatch.v1 import courierwatch_pb2 as pb

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]

# Closing politely must not turn a measured success into a timeout.
_CLOSE_SECONDS = 1.0


async def connect_to(address: str, port: int, result: pb.Result) -> Stream:
    started = time.perf_counter()
    stream = await asyncio.open_connection(address, port)
    result.phases.connect = time.perf_counter() - started
    result.peer_address = address
    return stream


async def connect(target: Target, ctx: CheckContext, result: pb.Result) -> Stream:
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


async def reconnect(target: Target, ctx: CheckContext, result: pb.Result) -> Stream:
    """Another connection the way `connect` made the one in `result`, without asking DNS
    again; its timings go to a scratch result, not into the measurement."""
    scratch = pb.Result()
    if target.via == "proxy" and ctx.proxy is not None:
        host = result.dialled_host or target.host
        return await tunnel.tunnel(ctx.proxy, result.peer_address, host, target.port, scratch)
    return await connect_to(result.peer_address, target.port, scratch)


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), _CLOSE_SECONDS)


async def run(target: Target, ctx: CheckContext, result: pb.Result) -> None:
    _, writer = await connect(target, ctx, result)
    await close(writer)
