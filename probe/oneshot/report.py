"""Printing one run of the checks: the readiness report for a person (80 columns) or a program.

JSON schema "courierwatch.check/1" (keys are only ever added; a consumer ignores unknown ones):

    schema            "courierwatch.check/1"
    site, probe       who ran it
    ready             true when no critical service group is down, the site state has no
                      unreachable, filtered or intercepted cause, and no clock is off beyond its
                      critical threshold (the exit status says 0)
    blockers          why it is not ready, one phrase each ([] when ready)
    site_state        {state: ok|degraded|filtered|intercepted|unreachable,
                       causes: [{state, cause, group, detail, actions: [...]}]}: the site state
                      and its causes, worst first, as common.sitestate decides them for the
                      collector too, each with the actions that clear it ("site" stays the
                      site's name)
    elapsed_seconds   the whole run; slowest_seconds: its slowest check
    checks, ok, failed  counts of results
    push              {state: ok|degraded|down|unknown, summary, pops: [POP, ...],
                       proxy: ""|ok|<first failing outcome through the proxy>}
    proxy             {address: ""|host:port (proxy.url),
                       couriers: [{port, outcome: ok|<outcome>}]}  (the couriers through it,
                      port by port: ok when any check on the port worked)
    time              [{target, family, outcome, offset_seconds, stratum, critical, detail}]
                      (ntp checks; offset_seconds also for clock_skew, null when unmeasured;
                      critical: a skew beyond the target's critical_offset)
    groups            [{id, title, critical, ok, down, checks, failed,
                        failures: [{target, port, check, family, via, dialled_host, outcome,
                                    detail, action}]}]
                      (ok: nothing failed; down: a failure other than a clock skew short of
                      critical, which only degrades)
    actions           every distinct action item, critical groups first, then those only a
                      site cause asks for (such as giving devices the proxy)
    results           every result (the Result message as JSON, outcome as its label name)
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from typing import Any

from google.protobuf.json_format import MessageToDict

from courierwatch.common.results import outcome_label
from courierwatch.probe.oneshot.readiness import (
    Clock,
    Failure,
    GroupStatus,
    Readiness,
    SiteCause,
    merge,
)
from courierwatch.v1 import courierwatch_pb2 as pb

__all__ = ["as_table", "readiness_json", "readiness_text"]

_WIDTH = 80
_DETAIL_LINES = 2  # the rest is in --json
_SHOWN = 3  # failures listed per action in a group, fixes per site cause; --json has all
_CAUSES = 8  # site causes printed (worst first); the groups below and --json have every one
SCHEMA = "courierwatch.check/1"
_MEASURED = frozenset({pb.OUTCOME_OK, pb.OUTCOME_CLOCK_SKEW})  # ntp outcomes with an offset


def readiness_json(readiness: Readiness) -> str:
    push = readiness.push
    document = {
        "schema": SCHEMA,
        "site": readiness.site,
        "probe": readiness.probe,
        "ready": readiness.ready,
        "blockers": list(readiness.blockers),
        "site_state": {
            "state": readiness.state.state,
            "causes": [_cause_json(cause) for cause in readiness.causes],
        },
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
        "proxy": {
            "address": readiness.proxy,
            "couriers": [{"port": port, "outcome": got} for port, got in push.proxy_ports],
        },
        "time": [
            {
                "target": c.result.target,
                "family": c.result.address_family,
                "outcome": outcome_label(c.result.outcome),
                "offset_seconds": (
                    c.result.ntp.offset_seconds if c.result.outcome in _MEASURED else None
                ),
                "stratum": c.result.ntp.stratum,
                "critical": c.critical,
                "detail": c.result.detail,
            }
            for c in readiness.clocks
        ],
        "groups": [_group_json(group) for group in readiness.groups],
        "actions": list(readiness.actions),
        "results": _rows(readiness.results),
    }
    return json.dumps(document, indent=2)


def _cause_json(site_cause: SiteCause) -> dict[str, Any]:
    cause = site_cause.cause
    return {
        "state": cause.state,
        "cause": cause.cause,
        "group": cause.group,
        "detail": cause.detail,
        "actions": site_cause.fixes,
    }


def _group_json(group: GroupStatus) -> dict[str, Any]:
    return {
        "id": group.id,
        "title": group.title,
        "critical": group.critical,
        "ok": group.ok,
        "down": group.down,
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
    """The site state with each cause's fix, push and time, then each service group with its
    failures, each under its action item, then the to-do list and the verdict; every line fits
    80 columns."""
    results = readiness.results
    lines = [
        _clip(f"Apple readiness of site {readiness.site}, probe {readiness.probe}"),
        f"{len(results)} checks in {readiness.elapsed:.1f} s "
        f"(all at once; the slowest took {_slowest(results):.1f} s)",
        "",
        *_site_lines(readiness),
        *_push_lines(readiness),
        *_time_lines(readiness.clocks),
        "",
    ]
    for group in readiness.groups:
        mark = "ok" if group.ok else "FAIL" if group.down else "warn"
        counts = f"{group.checks - len(group.failures)}/{group.checks} ok"
        critical = "critical" if group.critical else ""
        lines.append(f"{mark:<5}{_clip(group.title, 50):<50} {critical:<9}{counts:>10}".rstrip())
        lines.extend(_failure_lines(group.failures))
    if readiness.actions:
        lines += ["", "To do:"]
        for number, item in enumerate(readiness.actions, 1):
            lines.extend(_wrap(item, f"{number:>3}. ", "     "))
    verdict = (
        "READY: every critical service works"
        if readiness.ready
        else f"NOT READY: {'; '.join(readiness.blockers)}"
    )
    lines += ["", *_wrap(verdict, "", "  ")]
    lines.append(
        f"{len(results)} checks, {len(results) - readiness.failed} ok, {readiness.failed} failed"
    )
    return "\n".join(lines)


def _site_lines(readiness: Readiness) -> list[str]:
    """`Site: STATE — cause (group): detail`, the worst first, each with its fixes."""
    if not readiness.causes:
        return [f"Site: {readiness.state.state.upper()}"]
    lines = []
    for number, site_cause in enumerate(readiness.causes[:_CAUSES]):
        cause = site_cause.cause
        group = f" ({cause.group})" if cause.group else ""
        what = f"{cause.state.upper()} — {cause.cause}{group}"
        text = f"{what}: {cause.detail}" if cause.detail else what
        lines.extend(_wrap(text, "  and " if number else "Site: ", " " * 6)[: _DETAIL_LINES + 1])
        fixes = site_cause.fixes
        for fix in fixes[:_SHOWN]:
            lines.extend(_wrap(fix, "   -> ", " " * 6))
        if len(fixes) > _SHOWN:
            lines.append(f"      (and {len(fixes) - _SHOWN} more in the to-do list)")
    if len(readiness.causes) > _CAUSES:
        lines.append(f"  (and {len(readiness.causes) - _CAUSES} more causes, in the groups below)")
    return lines


def _push_lines(readiness: Readiness) -> list[str]:
    push = readiness.push
    lines = _wrap(f"Push (APNs couriers): {push.state.upper()}, {push.summary}", "", "  ")
    lines.extend(_wrap(f"POP {', '.join(push.pops) or 'not seen'}", "  ", "  "))
    if push.proxy_ports:
        where = f"the proxy {readiness.proxy}" if readiness.proxy else "the proxy"
        ports = ", ".join(f"{port} {got}" for port, got in push.proxy_ports)
        lines.extend(_wrap(f"Through {where}: {ports}", "  ", "    "))
    return lines


def _time_lines(clocks: Sequence[Clock]) -> list[str]:
    lines = []
    for clock in clocks:
        result = clock.result
        where = result.target + _tags(result)
        if result.outcome in _MEASURED:
            what = f"offset {result.ntp.offset_seconds:+.3f} s, stratum {result.ntp.stratum}"
            if result.outcome == pb.OUTCOME_CLOCK_SKEW:
                what += ": clock_skew" + (", critical" if clock.critical else "")
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
