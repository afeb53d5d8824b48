"""dns: the name resolves to usable addresses; records the CNAME chain, the POP, the addresses.

"Usable" is judged in the resolve step (courierwatch.probe.checks.steps), before any kind
dials: a sinkhole or hijacked answer is a DNS finding (courierwatch.probe.sanity), and the probe
never connects to an address a filter made up.
"""

from __future__ import annotations

from courierwatch.probe.checks import steps
from courierwatch.probe.checks.base import CheckContext
from courierwatch.probe.targets import Target
from courierwatch.v1 import courierwatch_pb2 as pb


async def run(target: Target, ctx: CheckContext, result: pb.Result) -> None:
    await steps.resolve(target, ctx, result, fresh=True)  # measures the resolver, never the cache
