"""The steps every connecting kind starts with: pick the host to dial, resolve it (judging the
answer), and open the connection, directly or through the site's proxy.

They live apart from the `dns` and `tcp` kinds so that a kind is only a kind: `dns` runs the
resolve step on its own, `tcp` the connect step, and tls, http, courier and ntp build on both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from courierwatch.probe import pop, sanity
from courierwatch.probe.checks.base import CheckContext
from courierwatch.probe.checks.spec import Option
from courierwatch.probe.failures import CheckFailure
from courierwatch.probe.net import tunnel
from courierwatch.probe.net.connection import Connection
from courierwatch.probe.rotation import numbered, parse_numbers
from courierwatch.v1 import courierwatch_pb2 as pb

if TYPE_CHECKING:  # targets derives expansion from the kinds, so the kinds only name its type
    from courierwatch.probe.net.proxy import ProxySettings
    from courierwatch.probe.targets import Target

# The option of kinds that dial numbered hosts (dial_host).
NUMBERS: Final = Option(
    "numbers",
    parse_numbers,
    "each run dials `N-host` for the next N; `host` stays the target's name (and SNI)",
    "`1-50`, `1-3,7` or a list",
    default=(),
)
# What the steps fill in, for the specs of the kinds built on them.
RESOLVE_FACTS: Final = ("dialled_host", "addresses", "cname_chain", "pop", "phases.dns")
CONNECT_FACTS: Final = (*RESOLVE_FACTS, "phases.connect", "peer_address")


class UnusableAnswer(CheckFailure):
    """The resolve step's finding: DNS answered an address a device cannot use (`address`)."""

    def __init__(self, finding: sanity.Finding) -> None:
        super().__init__(finding.outcome, finding.detail)
        self.address = finding.address


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
    device's resolver cache would, and then have no dns phase (courierwatch.probe.net.resolver);
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
    finding = sanity.judge(
        name, resolution.addresses, target.addresses, ctx.apple_ranges, resolution.cname_chain
    )
    if finding is not None:
        raise UnusableAnswer(finding)
    return resolution.addresses


async def connect_to(address: str, port: int, result: pb.Result) -> Connection:
    connection = await Connection.open(address, port)
    result.phases.connect = connection.connect_seconds
    result.peer_address = address
    return connection


async def connect(
    target: Target, ctx: CheckContext, result: pb.Result, *, tunnelled: bool = True
) -> Connection:
    """Resolve, then connect to the first address, as a client without happy eyeballs would;
    through the proxy, the proxy resolves and connects: a CONNECT tunnel, or with
    `tunnelled=False` (plain HTTP, asked in absolute form) the connection to the proxy itself."""
    if target.via == "proxy":
        proxy = proxy_of(ctx)
        host = dial_host(target, ctx, result)
        try:
            found = await ctx.resolver.resolve(proxy.host, target.timeout)  # the proxy's own name
        except CheckFailure as failure:
            raise CheckFailure(failure.outcome, f"proxy {proxy.name}: {failure.detail}") from None
        if not tunnelled:
            connection = await tunnel.to_proxy(proxy, found.addresses[0], result)
            result.phases.connect = connection.connect_seconds
            return connection
        return await tunnel.tunnel(proxy, found.addresses[0], host, target.port, result)
    addresses = await resolve(target, ctx, result)
    return await connect_to(addresses[0], target.port, result)


def proxy_of(ctx: CheckContext) -> ProxySettings:
    """The site's proxy, for a target via it (which only a config with a proxy has)."""
    if ctx.proxy is None:
        raise RuntimeError("a target via the proxy, but no proxy is configured")
    return ctx.proxy


async def reconnect(target: Target, ctx: CheckContext, result: pb.Result) -> Connection:
    """Another connection the way `connect` made the one in `result`, without asking DNS
    again; its timings go to a scratch result, not into the measurement."""
    scratch = pb.Result()
    if target.via == "proxy" and ctx.proxy is not None:
        host = result.dialled_host or target.host
        return await tunnel.tunnel(ctx.proxy, result.peer_address, host, target.port, scratch)
    return await connect_to(result.peer_address, target.port, scratch)
