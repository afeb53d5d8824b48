"""Reading Results the same way on both sides of the stream: the label of an outcome, and
what a set of courier results says about a site. The probe's report, the collector's
metrics and its status page all use these, so they cannot disagree."""

from __future__ import annotations

from collections.abc import Iterable

from courierwatch.v1 import courierwatch_pb2 as pb

FALLBACK_PORT = 443  # the courier port Apple documents as a fallback only


def outcome_label(outcome: int) -> str:
    """`refused` for OUTCOME_REFUSED; a number this build does not know is `unknown`."""
    try:
        name = pb.Outcome.Name(outcome)
    except ValueError:
        return "unknown"
    return name.removeprefix("OUTCOME_").lower()


def courier_state(results: Iterable[pb.Result]) -> str | None:
    """ok: a courier answers on its primary port (5223); degraded: only on the 443 fallback
    (Apple documents 443 only as a fallback, for years on Wi-Fi only); down: on neither.
    None when there is no courier result. Only the direct path counts: devices do not use
    the proxy path for APNs unless configured to."""
    primary: bool | None = None
    fallback: bool | None = None
    for result in results:
        if result.check != "courier" or result.via == "proxy":
            continue
        ok = result.outcome == pb.OUTCOME_OK
        if result.port == FALLBACK_PORT:
            fallback = bool(fallback) or ok
        else:
            primary = bool(primary) or ok
    if primary is None and fallback is None:
        return None
    if primary:
        return "ok"
    return "degraded" if fallback else "down"
