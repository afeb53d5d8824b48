"""Printing one run of the checks: the readiness report for a person (80 columns) or a program.

JSON schema "courierwatch.check/1" (keys are only ever added; a consumer ignores unknown ones):

    schema            "courierwatch.check/1"
    site, probe       who ran it
    ready             true when every critical service group works (the exit status says 0)
    elapsed_seconds   the whole run; slowest_seconds: its slowest check
    checks, ok, failed  counts of results
    push              {state: ok|degraded|down|unknown, summary, pops: [POP, ...],
                       proxy: ""|ok|<outcome through the proxy>}
    time              [{target, family, outcome, offset_seconds, stratum, detail}]  (ntp checks)
    groups            [{id, title, critical, ok, checks, failed,
                        failures: [{target, port, check, family, via, dialled_host, outcome,
                                    detail, action}]}]
    actions           every distinct action item, critical groups first
    results           every result (the Result message as JSON, outcome as its label name)
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from typing import Any

from google.protobuf.json_format import MessageToDict

from courierwatch.common.results import outcome_label
from courierwatch.probe.oneshot.readiness import Failure, GroupStatus, Readiness, merge
from courierwatch.v1 import courierwatch_pb2 as pb

__all__ = ["as_table", "readiness_json", "readiness_text"]

_WIDTH = 80
_DETAIL_LINES = 2  # the rest is in --json
_SHOWN = 3  # failures listed per action in a group; --json and --all have every one
SCHEMA = "courierwatch.check/1"


def readiness_json(readiness: Readiness) -> str:
    push = readiness.push
    document = {
        "schema": SCHEMA,
        "site": readiness.site,
        "probe": readiness.probe,
        "ready": readiness.ready,
        "elapsed_seconds": round(readiness.elapsed, 3),
        "slowest_seconds": round(_slowest(readiness.results), 3),
        "checks": len(readiness.results),
        "ok": len(readiness.results) - readiness.failed,
        "failed": readiness.failed,
        "push": {
            "state": push.state,
            "summary": push.summary,
            "pops": list(push.pops),
            "proxy": push.proxy,
        },
        "time": [
            {
                "target": r.target,
                "family": r.address_family,
                "outcome": outcome_label(r.outcome),
                "offset_seconds": r.ntp.offset_seconds if r.outcome == pb.OUTCOME_OK else None,
                "stratum": r.ntp.stratum,
                "detail": r.detail,
            }
            for r in readiness.clocks
        ],
        "groups": [_group_json(group) for group in readiness.groups],
        "actions": list(readiness.actions),
        "results": _rows(readiness.results),
    }
    return json.dumps(document, indent=2)


def _group_json(group: GroupStatus) -> dict[str, Any]:
    return {
        "id": group.id,
        "title": group.title,
        "critical": group.critical,
        "ok": group.ok,
        "checks": group.checks,
        "failed": len(group.failures),
        "failures": [
            {
                "target": f.result.target,
                "port": f.result.port,
                "check": f.result.check,
                "family": f.result.address_family,
                "via": f.result.via,
                "dialled_host": f.result.dialled_host,
                "outcome": outcome_label(f.result.outcome),
                "detail": f.result.detail,
                "action": f.action.text,
            }
            for f in group.failures
        ],
    }


def readiness_text(readiness: Readiness) -> str:
    """Push and time first, then each service group with its failures, each under its action
    item, then the to-do list and the verdict; every line fits 80 columns."""
    results = readiness.results
    lines = [
        _clip(f"Apple readiness of site {readiness.site}, probe {readiness.probe}"),
        f"{len(results)} checks in {readiness.elapsed:.1f} s "
        f"(all at once; the slowest took {_slowest(results):.1f} s)",
        "",
        *_push_lines(readiness),
        *_time_lines(readiness.clocks),
        "",
    ]
    for group in readiness.groups:
        mark = "ok" if group.ok else "FAIL"
        counts = f"{group.checks - len(group.failures)}/{group.checks} ok"
        critical = "critical" if group.critical else ""
        lines.append(f"{mark:<5}{_clip(group.title, 50):<50} {critical:<9}{counts:>10}".rstrip())
        lines.extend(_failure_lines(group.failures))
    if readiness.actions:
        lines += ["", "To do:"]
        for number, item in enumerate(readiness.actions, 1):
            lines.extend(_wrap(item, f"{number:>3}. ", "     "))
    failing = [g.id for g in readiness.groups if g.critical and not g.ok]
    verdict = (
        "READY: every critical service works"
        if readiness.ready
        else f"NOT READY: critical services fail: {', '.join(failing)}"
    )
    lines += ["", *_wrap(verdict, "", "  ")]
    lines.append(
        f"{len(results)} checks, {len(results) - readiness.failed} ok, {readiness.failed} failed"
    )
    return "\n".join(lines)


def _push_lines(readiness: Readiness) -> list[str]:
    push = readiness.push
    lines = _wrap(f"Push (APNs couriers): {push.state.upper()}, {push.summary}", "", "  ")
    details = [f"POP {', '.join(push.pops) or 'not seen'}"]
    if push.proxy:
        details.append(f"through the proxy: {push.proxy}")
    return [*lines, *_wrap("; ".join(details), "  ", "  ")]


def _time_lines(clocks: Sequence[pb.Result]) -> list[str]:
    lines = []
    for result in clocks:
        where = result.target + _tags(result)
        if result.outcome == pb.OUTCOME_OK:
            what = f"offset {result.ntp.offset_seconds:+.3f} s, stratum {result.ntp.stratum}"
        else:
            what = f"{outcome_label(result.outcome)}: {result.detail}"
        lines.append(_clip(f"Time: {where} {what}"))
    return lines


def _failure_lines(failures: Sequence[Failure]) -> list[str]:
    """Failures gathered under the action that fixes them, the first few shown (what, then
    why), so a site where everything fails still reads as a handful of to-dos."""
    by_fix: dict[str, list[Failure]] = {}
    for failure in failures:
        by_fix.setdefault(failure.action.template, []).append(failure)
    lines = []
    for members in by_fix.values():
        for failure in members[:_SHOWN]:
            r = failure.result
            what = f"{r.target}:{r.port} {r.check}{_tags(r)}: {outcome_label(r.outcome)}"
            lines.append(_clip(f"  x  {what}"))
            lines.extend(_wrap(r.detail, " " * 7, " " * 7)[:_DETAIL_LINES] if r.detail else [])
        if len(members) > _SHOWN:
            lines.append(f"     (and {len(members) - _SHOWN} more like these)")
        (fix,) = merge(f.action for f in members)
        lines.extend(_wrap(fix, "     -> ", " " * 8))
    return lines


def _tags(result: pb.Result) -> str:
    tags = [t for t in (result.address_family, "proxy" if result.via == "proxy" else "") if t]
    return f" [{', '.join(tags)}]" if tags else ""


def _slowest(results: Sequence[pb.Result]) -> float:
    return max((r.phases.total for r in results), default=0.0)


def _wrap(text: str, first: str, rest: str) -> list[str]:
    return textwrap.wrap(text, _WIDTH, initial_indent=first, subsequent_indent=rest) or [first]


def _rows(results: Sequence[pb.Result]) -> list[dict[str, Any]]:
    rows = []
    for result in results:
        row = MessageToDict(result, preserving_proto_field_name=True)
        row["outcome"] = outcome_label(result.outcome)
        row.pop("seq", None)  # numbering belongs to the stream, not to a one-off run
        rows.append(row)
    return rows


def as_table(results: Sequence[pb.Result]) -> str:
    """Every check on one line, grouped by service group (the report's --all appendix)."""
    lines = [f"{'TARGET':<38} {'CHECK':<7} {'OUTCOME':<16} {'MS':>6}  DETAIL"]
    group = None
    for result in sorted(results, key=lambda r: (r.group, r.target, r.port, r.check)):
        if result.group != group:
            group = result.group
            lines.append(f"[{group}]")
        target = _clip(f"{result.target}:{result.port}{_tags(result)}", 38)
        millis = f"{result.phases.total * 1000:.0f}"
        line = f"{target:<38} {result.check:<7} {outcome_label(result.outcome):<16} {millis:>6}  "
        lines.append(_clip(line + result.detail, _WIDTH).rstrip())
    failed = sum(r.outcome != pb.OUTCOME_OK for r in results)
    lines.append(f"{len(results)} checks, {len(results) - failed} ok, {failed} failed")
    return "\n".join(lines)


def _clip(text: str, width: int = _WIDTH) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
