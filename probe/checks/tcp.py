"""tcp: a TCP connection to the port opens; measures the connect time.

Direct, or through the site's proxy for a target with via="proxy"; every other kind opens its
connection with the same step (courierwatch.probe.checks.steps), so both paths behave the same
for all of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from courierwatch.probe.checks import steps
from courierwatch.probe.checks.base import CheckContext
from courierwatch.probe.checks.spec import KindSpec
from courierwatch.v1 import courierwatch_pb2 as pb

if TYPE_CHECKING:
    from courierwatch.probe.targets import Target


async def run(target: Target, ctx: CheckContext, result: pb.Result) -> None:
    connection = await steps.connect(target, ctx, result)
    await connection.close()


SPEC: Final = KindSpec(
    name="tcp",
    run=run,
    summary="a TCP connection to the port opens",
    per_family=True,
    via_proxy=True,
    facts=steps.CONNECT_FACTS,
)
