"""tcp: a TCP connection to the port opens; measures the connect time."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time

from courierwatch.probe.checks import dns
from courierwatch.probe.checks.base import CheckContext
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
    """Resolve, then connect to the first address, as a client without happy eyeballs would."""
    addresses = await dns.resolve(target, ctx, result)
    return await connect_to(addresses[0], target.port, result)


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), _CLOSE_SECONDS)


async def run(target: Target, ctx: CheckContext, result: pb.Result) -> None:
    _, writer = await connect(target, ctx, result)
    await close(writer)
