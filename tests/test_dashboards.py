"""The Grafana dashboards: current with grafana/build.py, shaped like dashboards Grafana loads,
and every PromQL expression in them accepted by promtool. (A real Prometheus answers each of
them in test_rules.py.)"""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml
from promserver import ROOT, dashboard_queries, grafana_build, require

from courierwatch.collector.exposition import CHECK_FAMILIES

GRAFANA = ROOT / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
PANEL_TYPES = {"timeseries", "stat", "table", "bargauge", "state-timeline"}
# Grafana's own variables; every other $name must be a variable of the dashboard.
BUILTIN_VARIABLES = {"__rate_interval", "__interval", "__range"}


def committed() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def test_committed_dashboards_are_what_build_py_makes():
    rendered = grafana_build().render()
    on_disk = {p.name: p.read_text() for p in DASHBOARDS.glob("*.json")}
    assert on_disk == rendered, "stale dashboards: run `python grafana/build.py` and commit"


def test_dashboards_are_valid_grafana_dashboards():
    dashboards = committed()
    assert set(dashboards) == {
        "courierwatch-fleet.json",
        "courierwatch-site.json",
        "courierwatch-pop.json",
        "courierwatch-capacity.json",
    }
    assert len({d["uid"] for d in dashboards.values()}) == len(dashboards)
    for name, d in dashboards.items():
        assert name == f"{d['uid']}.json" and len(d["uid"]) <= 40  # Grafana's uid limit
        assert d["title"] and isinstance(d["schemaVersion"], int) and d["time"]["from"]
        variables = {v["name"]: v for v in d["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        assert {"site", "pop"} & set(variables), f"{name}: no site or POP variable"
        ids = [p["id"] for p in d["panels"]]
        assert len(set(ids)) == len(ids), name
        cells: set[tuple[int, int]] = set()
        for panel in d["panels"]:
            where = f"{name} / {panel['title']}"
            assert panel["type"] in PANEL_TYPES, where
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, where
            grid = panel["gridPos"]
            assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, where
            mine = {
                (x, y)
                for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])
            }
            assert not mine & cells, f"{where} overlaps another panel"
            cells |= mine
            assert panel["targets"], where
            ref_ids = [t["refId"] for t in panel["targets"]]
            assert len(set(ref_ids)) == len(ref_ids), where
            for target in panel["targets"]:
                assert target["expr"].strip(), where
                used = set(re.findall(r"\$\{?(\w+)", target["expr"]))
                assert used <= set(variables) | BUILTIN_VARIABLES, f"{where}: {used}"


def test_dashboards_offer_site_and_pop_variables():
    variables = {
        d["uid"]: {v["name"] for v in d["templating"]["list"]} for d in committed().values()
    }
    assert {"site", "pop"} <= variables["courierwatch-fleet"]
    assert {"site", "probe"} <= variables["courierwatch-site"]
    assert "pop" in variables["courierwatch-pop"]
    assert "site" in variables["courierwatch-capacity"]


@pytest.mark.integration
def test_every_query_parses_in_promtool(tmp_path):
    """Each query, its variables filled in, as a recording rule: `promtool check rules`
    parses all of them with Prometheus' own parser."""
    promtool = require("promtool")
    queries = list(dashboard_queries(site="ams", pop="eu-central", probe="pi-ams-1"))
    assert len(queries) > 40
    rules = {
        "groups": [
            {
                "name": "dashboards",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": expr}
                    for i, (_, expr) in enumerate(queries)
                ],
            }
        ]
    }
    path = tmp_path / "dashboards.rules.yml"
    path.write_text(yaml.safe_dump(rules))
    done = subprocess.run(
        [promtool, "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(queries)} rules found" in done.stdout


def test_provisioning_points_grafana_at_prometheus_and_the_dashboards():
    sources = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yaml").read_text())
    (source,) = sources["datasources"]
    assert source["type"] == "prometheus" and source["url"].startswith("http://")
    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/courierwatch.yaml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")


def test_every_query_reads_checks_and_probes_as_both_modes_write_them():
    """A check family is read as scraped (`instance!=""`) or as its latest written result
    (check:*:latest, remote_write.yml): an hourly check has no sample in the 5-minute lookback.
    Whether a probe is up, as probe:courierwatch_probe_up:max: a probe no collector writes
    any more has no series of its own."""
    checks = [family.name for family in CHECK_FAMILIES]
    queries = list(dashboard_queries(site="ams", pop="eu-central", probe="pi-ams-1"))
    reading = 0
    for uid, expr in queries:
        for name in checks:
            for match in re.finditer(rf"(?<![\w:]){name}\{{([^}}]*)\}}", expr):
                scraped = 'instance!="", '
                assert match.group(1).startswith(scraped), (uid, expr)
                selector = match.group(1).removeprefix(scraped)
                assert f"check:{name}:latest{{{selector}}}" in expr, (uid, expr)
                reading += 1
        probe_up = r"(?<![\w:])courierwatch_probe_(up|last_seen_timestamp_seconds)(?![\w:])"
        assert not re.search(probe_up, expr), (uid, expr)
    assert reading >= 8
