"""`courierwatch check`: every check once, printed."""

from __future__ import annotations

from courierwatch.probe import report
from courierwatch.probe.config import load_probe_config
from courierwatch.probe.daemon import build_context
from courierwatch.probe.scheduler import run_once
from courierwatch.v1 import courierwatch_pb2 as pb


async def check_once(config_path: str | None, *, as_json: bool) -> int:
    config = load_probe_config(config_path, require_identity=False)
    results = await run_once(config.targets, build_context(config), concurrency=config.concurrency)
    print(report.as_json(results) if as_json else report.as_table(results))
    return 0 if all(r.outcome == pb.OUTCOME_OK for r in results) else 1
