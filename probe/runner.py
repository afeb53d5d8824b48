"""Runs one check on one target: times it, bounds it, and turns any failure into an outcome."""

from __future__ import annotations

import asyncio
import time

from courierwatch.common.addresses import is_ip
from courierwatch.probe.checks import CHECKS
from courierwatch.probe.checks.base import CheckContext
from courierwatch.probe.failures import CheckFailure, classify
from courierwatch.probe.targets import Target
from courierwatch.v1 import courierwatch_pb2 as pb


def new_result(target: Target) -> pb.Result:
    result = pb.Result(
        target=target.host,
        port=target.port,
        check=target.check,
        group=target.group,
        interval_seconds=target.interval,
        address_family=target.family,
        via=target.via,
    )
    result.started_at.FromNanoseconds(time.time_ns())  # GetCurrentTime goes through datetime
    return result


async def run_check(target: Target, ctx: CheckContext) -> pb.Result:
    """Never raises (but for cancellation) and never takes much longer than target.timeout."""
    check = CHECKS[target.check]
    result = new_result(target)
    started = time.perf_counter()
    try:
        async with asyncio.timeout(target.timeout):
            await check(target, ctx, result)
    except CheckFailure as failure:
        result.outcome, result.detail = failure.outcome, failure.detail
    except TimeoutError:
        result.outcome, result.detail = _timed_out(target, result)
    except Exception as error:  # an unexpected error is a finding about this target, not a crash
        result.outcome, result.detail = classify(error)
    else:
        result.outcome = pb.OUTCOME_OK
    result.phases.total = time.perf_counter() - started
    return result


def _timed_out(target: Target, result: pb.Result) -> tuple[pb.Outcome.ValueType, str]:
    """Which step the clock ran out in: DNS (ours; through a proxy there is none), or after."""
    if target.via == "proxy":
        if result.phases.HasField("connect"):
            return pb.OUTCOME_TIMEOUT, "no answer in time through the proxy"
        return pb.OUTCOME_TIMEOUT, "the proxy did not answer in time"
    # A name with no addresses yet: still in DNS. (Not phases.dns: a cached answer has none.)
    if not result.addresses and not is_ip(target.host):
        return pb.OUTCOME_DNS_TIMEOUT, "no DNS answer in time"
    return pb.OUTCOME_TIMEOUT, "no answer in time"
