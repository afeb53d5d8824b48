"""promtool rule tests in remote-write shape, made from the scrape-shaped ones.

A test's input series are what Prometheus scrapes from collectors (`instance` labels, a sample
every scrape, a gap or a staleness marker where a series goes). remote_write() turns them into
what the collectors write instead (collector/remote/encode.py and current.py):

- no `instance` (no collector label); a probe's series written by the collector its stream is
  up on (probe_up 1), once more at the step its stream ends (probe_up 0), and by nobody after;
- a check's series only at its results' times: a sample where its value changes (or it comes
  back after a gap), nothing where it repeats, as an hourly check (or a rarer one) makes them;
- no staleness markers; the collectors' counters (courierwatch_check_results_total) not at all;
- what is scraped in both modes (`up`, the collectors' own families) left as it is.

The expected alerts keep their labels, less `instance` (that of a scraped collector: kept
where the alert names the scrape `job`); promql_expr_test cases, which name the scraped series,
are left out.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from courierwatch.collector.exposition import CHECK, COUNT, FAMILIES, PROBE

_PROBE = {family.name for family in FAMILIES if family.source is PROBE}
_CHECK = {family.name for family in FAMILIES if family.source is CHECK}
_NOT_WRITTEN = {family.name for family in FAMILIES if family.source is COUNT}
_SERIES = re.compile(r"^\s*([\w:]+)\s*(?:\{(.*)\})?\s*$", re.S)
_LABEL = re.compile(r'\s*(\w+)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')
_TERM = re.compile(r"^([-+]?[^-+x]+(?:e[-+]?\d+)?)(?:([-+])([^x]+))?(?:x(\d+))?$")

Value = float | str | None  # a number, "stale", or None: no sample at that step
ANY = "*"  # the writer of a probe that streams throughout, to whichever collector


def expand(values: str) -> list[Value]:
    """promtool's expanding notation (`1 0x3 1+2x2 _x4 stale`) as one value per step."""
    out: list[Value] = []
    for token in str(values).split():
        if token == "stale":
            out.append("stale")
            continue
        if token.startswith("_"):
            out.extend([None] * (int(token[2:]) if token.startswith("_x") else 1))
            continue
        match = _TERM.match(token)
        assert match, f"cannot read {token!r}"
        start, sign, step, times = match.groups()
        if times is None:
            out.append(float(start))
            continue
        increment = float(step or 0) * (-1 if sign == "-" else 1)
        out.extend(float(start) + increment * i for i in range(int(times) + 1))
    return out


def _spell(values: list[Value]) -> str:
    return " ".join("_" if v is None else v if isinstance(v, str) else repr(v) for v in values)


def parse_series(text: str) -> tuple[str, dict[str, str]]:
    match = _SERIES.match(text)
    assert match, f"cannot read the series {text!r}"
    name, body = match.groups()
    return name, dict(_LABEL.findall(body or ""))


def _spell_series(name: str, labels: dict[str, str]) -> str:
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def _written(test: dict[str, Any]) -> list[dict[str, str]]:
    """The input series of one test as the collectors write them."""
    parsed = [(*parse_series(s["series"]), expand(s["values"])) for s in test["input_series"]]
    steps = max((len(values) for *_, values in parsed), default=0)
    # (site, probe) -> instance -> probe_up per step
    up: dict[tuple[str, str], dict[str, list[Value]]] = {}
    for name, labels, values in parsed:
        if name == "courierwatch_probe_up":
            key = (labels.get("site", ""), labels.get("probe", ""))
            up.setdefault(key, {})[labels.get("instance", "")] = values

    def writer(key: tuple[str, str], step: int, probe_level: bool) -> str | None:
        """The instance whose collector writes this probe's series at `step`, if any."""
        ups = up.get(key)
        if ups is None:  # a test without probe_up: the probe streams throughout, to any
            return ANY
        for instance, values in sorted(ups.items()):
            if step < len(values) and values[step] == 1:
                return instance
        if probe_level and step > 0:  # the stream ended at this step: one last write
            for instance, values in sorted(ups.items()):
                if step < len(values) and values[step - 1] == 1:
                    return instance
        return None

    merged: dict[tuple[str, tuple[tuple[str, str], ...]], list[Value]] = {}
    kept: list[dict[str, str]] = []
    by_instance: dict[tuple[str, tuple[tuple[str, str], ...]], dict[str, list[Value]]] = {}
    for (name, labels, values), original in zip(parsed, test["input_series"], strict=True):
        if name in _NOT_WRITTEN:
            continue
        if name not in _PROBE and name not in _CHECK:
            kept.append(original)  # scraped in both modes
            continue
        own = tuple((k, v) for k, v in labels.items() if k not in ("instance", "job"))
        by_instance.setdefault((name, own), {})[labels.get("instance", "")] = values
    for (name, own), instances in by_instance.items():
        labels = dict(own)
        key = (labels.get("site", ""), labels.get("probe", ""))
        out: list[Value] = []
        for step in range(steps):
            instance = writer(key, step, name in _PROBE)
            if instance == ANY:
                present = [v[step] for _, v in sorted(instances.items()) if step < len(v)]
                value = next((v for v in present if v is not None), None)
            elif instance is not None and instance in instances:
                values = instances[instance]
                value = values[step] if step < len(values) else None
            else:
                value = None
            out.append(None if value == "stale" else value)
        if name in _CHECK:  # only at its results: where the value changes or comes back
            thinned: list[Value] = []
            last: Value = None
            for value in out:
                thinned.append(value if value is not None and value != last else None)
                last = value
            out = thinned
        merged[(name, own)] = out
    return kept + [{"series": _spell_series(name, dict(own)), "values": _spell(values)}
                   for (name, own), values in merged.items()]  # fmt: skip


def _alert_case(case: dict[str, Any]) -> dict[str, Any]:
    alerts = []
    for alert in case.get("exp_alerts") or []:
        labels = dict(alert["exp_labels"])
        if "job" not in labels:
            labels.pop("instance", None)
        alerts.append({**alert, "exp_labels": labels})
    return {**case, "exp_alerts": alerts}


def remote_write(source: Path, target_dir: Path) -> Path | None:
    """source (a scrape-shaped test file) in remote-write shape, written into target_dir with
    its rule files named absolutely; None for a file of written series already (no instance
    anywhere) or one without alert tests."""
    # Every scalar as its text, as promtool reads it (YAML 1.1 would read 0x30 as 48).
    document = yaml.load(source.read_text(), Loader=yaml.BaseLoader)
    if "instance=" not in source.read_text():
        return None
    tests = []
    for test in document["tests"]:
        cases = [_alert_case(case) for case in test.get("alert_rule_test", [])]
        if cases:
            tests.append({**{k: v for k, v in test.items()
                             if k not in ("promql_expr_test", "alert_rule_test")},
                          "input_series": _written(test), "alert_rule_test": cases})  # fmt: skip
    if not tests:
        return None
    document["tests"] = tests
    document["rule_files"] = [str((source.parent / f).resolve()) for f in document["rule_files"]]
    target = target_dir / source.name.replace(".test.yml", ".remote_write.test.yml")
    target.write_text(yaml.safe_dump(document, sort_keys=False, width=10_000))
    return target
