"""Printing one run of the checks for a person (a table) or for a program (JSON)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from google.protobuf.json_format import MessageToDict

from courierwatch.v1 import courierwatch_pb2 as pb

_WIDTH = 80


def outcome_name(outcome: int) -> str:
    try:
        return pb.Outcome.Name(outcome).removeprefix("OUTCOME_").lower()
    except ValueError:
        return "unknown"


def as_json(results: Sequence[pb.Result]) -> str:
    rows = []
    for result in results:
        row = MessageToDict(result, preserving_proto_field_name=True)
        row["outcome"] = outcome_name(result.outcome)
        row.pop("seq", None)  # numbering belongs to the stream, not to a one-off run
        rows.append(row)
    return json.dumps({"results": rows}, indent=2)


def as_table(results: Sequence[pb.Result]) -> str:
    """One line per check, grouped by service group, failures explained; fits 80 columns."""
    lines = [f"{'TARGET':<38} {'CHECK':<5} {'OUTCOME':<16} {'MS':>6}  DETAIL"]
    group = None
    for result in sorted(results, key=lambda r: (r.group, r.target, r.port, r.check)):
        if result.group != group:
            group = result.group
            lines.append(f"[{group}]")
        target = _clip(f"{result.target}:{result.port}", 38)
        millis = f"{result.phases.total * 1000:.0f}"
        line = f"{target:<38} {result.check:<5} {outcome_name(result.outcome):<16} {millis:>6}  "
        lines.append(_clip(line + result.detail, _WIDTH).rstrip())
    failed = sum(r.outcome != pb.OUTCOME_OK for r in results)
    lines.append(f"{len(results)} checks, {len(results) - failed} ok, {failed} failed")
    return "\n".join(lines)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
