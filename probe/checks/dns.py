"""dns: the name resolves to usable addresses; records the CNAME chain, the POP, the addresses.

"Usable" is judged in the resolve step (courierwatch.probe.checks.steps), before any kind
dials: a sinkhole or hijacked answer is a DNS finding (courierwatch.probe.sanity), and the probe
never connects to an address a filter made up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from courierwatch.probe.checks import steps
from courierwatch.probe.checks.base import CheckContext
from courierwatch.probe.checks.spec import KindSpec
from courierwatch.v1 import courierwatch_pb2 as pb

if TYPE_CHECKING:
    from courierwatch.probe.targets import Target

# A dns target still needs a port for its key (host, port, check); 53 is where the question goes.
PORT: Final = 53


async def run(target: Target, ctx: CheckContext, result: pb.Result) -> None:
    await steps.resolve(target, ctx, result, fresh=True)  # measures the resolver, never the cache


# A name is checked once, whatever path its users take: not per family, not through the proxy.
SPEC: Final = KindSpec(
    name="dns",
    run=run,
    summary="the name resolves to usable addresses (never a sinkhole); names the POP",
    options=(steps.NUMBERS,),
    default_port=PORT,
    facts=steps.RESOLVE_FACTS,
)
