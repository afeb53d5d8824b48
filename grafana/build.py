"""Builds the Grafana dashboards in grafana/dashboards/ from code: `python grafana/build.py`.

The JSON files are committed (Grafana provisioning reads them as they are); a test fails when
they differ from what this script builds, so edit this file and run it, never the JSON.
Queries read the recording rules in deploy/prometheus/rules/ where one exists, so the
dashboards, the alerts and the capacity numbers all agree.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
TAG = "courierwatch"

Json = dict[str, Any]

# Colours for "fraction of checks that succeed": red below 75 %, orange below 90 %.
RATIO_STEPS = [
    {"color": "red", "value": None},
    {"color": "orange", "value": 0.75},
    {"color": "green", "value": 0.9},
]
UP_DOWN = [
    {
        "type": "value",
        "options": {
            "0": {"text": "down", "color": "red", "index": 0},
            "1": {"text": "ok", "color": "green", "index": 1},
        },
    },
]


# The site state as site:courierwatch_site_state:severity numbers it (recording.yml), coloured
# as the status page colours it.
SITE_STATES = [
    {
        "type": "value",
        "options": {
            "-1": {"text": "probe offline", "color": "#8e8e93", "index": 0},
            "0": {"text": "ok", "color": "green", "index": 1},
            "1": {"text": "degraded", "color": "yellow", "index": 2},
            "2": {"text": "filtered", "color": "orange", "index": 3},
            "3": {"text": "intercepted", "color": "dark-orange", "index": 4},
            "4": {"text": "unreachable", "color": "red", "index": 5},
        },
    },
]
CAUSES_HELP = (
    "Each cause of the site state (common/sitestate.py), worst state first; the status page "
    "and /api/status add what was seen. unreachable: couriers_unreachable, or group_down of a "
    "critical group; intercepted: tls_inspection; filtered: dns_filter, dns_hijack; degraded: "
    "fallback_only, no_fallback, ipv6_broken, loss, clock_skew, provider_api_h2, proxy_path, "
    "group_down."
)


def target(expr: str, legend: str = "", *, table: bool = False, instant: bool = False) -> Json:
    """A Prometheus query; `table` ones are instant queries shown as rows of labels, and
    `instant` ones only the latest value (sort() and bottomk() rank only instant queries)."""
    return {
        "datasource": DATASOURCE,
        "expr": expr,
        "legendFormat": legend,
        "instant": table or instant,
        "range": not (table or instant),
        "format": "table" if table else "time_series",
    }


def panel(
    kind: str,
    title: str,
    *targets: Json,
    w: int = 12,
    h: int = 8,
    unit: str = "",
    description: str = "",
    ratio: bool = False,
    mappings: list[Json] | None = None,
    options: Json | None = None,
    transformations: list[Json] | None = None,
    overrides: list[Json] | None = None,
    interval: str = "",
) -> Json:
    defaults: Json = {"unit": "percentunit" if ratio else unit}
    if ratio:
        defaults |= {
            "min": 0,
            "max": 1,
            "thresholds": {"mode": "absolute", "steps": RATIO_STEPS},
            "color": {"mode": "thresholds"},
        }
    if mappings:
        defaults["mappings"] = mappings
    result: Json = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": [t | {"refId": chr(ord("A") + i)} for i, t in enumerate(targets)],
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": options or {},
        "gridPos": {"w": w, "h": h},
    }
    if transformations:
        result["transformations"] = transformations
    if interval:
        result["interval"] = interval
    return result


def stat(title: str, expr: str, **kwargs: Any) -> Json:
    options = {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "background"}
    return panel("stat", title, target(expr), w=6, h=4, options=options, **kwargs)


def label_stat(title: str, expr: str, legend: str) -> Json:
    """A stat that shows a label's value (state, POP), not a number."""
    options = {"reduceOptions": {"calcs": ["lastNotNull"]}, "textMode": "name", "colorMode": "none"}
    return panel("stat", title, target(expr, legend), w=6, h=4, options=options)


def table(
    title: str,
    *targets: Json,
    columns: dict[str, str] | None = None,
    hide: tuple[str, ...] = (),
    sort: str = "",
    **kwargs: Any,
) -> Json:
    """Instant queries as one table (merged on their labels), `columns` renamed (a query's
    value column is "Value", or "Value #A" etc. with several), sorted ascending by `sort`."""
    merge = [{"id": "merge", "options": {}}] if len(targets) > 1 else []
    hidden = dict.fromkeys(("Time", "__name__", "job", *hide), True)
    organize = {"excludeByName": hidden, "renameByName": columns or {}}
    options = {"sortBy": [{"displayName": sort, "desc": False}]} if sort else {}
    return panel(
        "table",
        title,
        *targets,
        transformations=[*merge, {"id": "organize", "options": organize}],
        options=options,
        **kwargs,
    )


# Both modes (deploy/prometheus/rules/remote_write.yml): one series per probe for up and last
# seen, also for a probe no collector writes any more; a check family as scraped, or its
# latest written result within the hour (no instance label: remote write).
PROBE_UP = "probe:courierwatch_probe_up:max"
LAST_SEEN = "probe:courierwatch_probe_last_seen_timestamp_seconds:max"


def checks(family: str, selector: str) -> str:
    """The check family `family` (courierwatch_...) in both modes, `selector` applied."""
    return f'({family}{{instance!="", {selector}}} or check:{family}:latest{{{selector}}})'


def outcome_counts(title: str, selector: str, description: str) -> Json:
    """How many of the selected checks end in each outcome (ok included, so never empty)."""
    expr = f"count by (outcome) ({checks('courierwatch_check_outcome', selector)} == 1)"
    return table(
        title, target(expr, table=True), columns={"Value": "Checks"}, w=8, description=description
    )


def site_link(field: str = "site") -> Json:
    """Makes a table's site column open that site's dashboard."""
    return {
        "matcher": {"id": "byName", "options": field},
        "properties": [
            {
                "id": "links",
                "value": [
                    {
                        "title": "Site dashboard",
                        "url": "/d/courierwatch-site?var-site=${__value.raw}&${__url_time_range}",
                    }
                ],
            }
        ],
    }


def column_unit(field: str, unit: str) -> Json:
    """Gives one table column its own unit."""
    return {
        "matcher": {"id": "byName", "options": field},
        "properties": [{"id": "unit", "value": unit}],
    }


def variable(name: str, query: str, *, multi: bool, label: str = "") -> Json:
    """A variable listing the values of one label; multi ones offer All (as a regex)."""
    return {
        "type": "query",
        "name": name,
        "label": label or name,
        "datasource": DATASOURCE,
        "query": query,
        "definition": query,
        "refresh": 2,  # on time range change: sites come and go
        "sort": 1,
        "multi": multi,
        "includeAll": multi,
        "allValue": ".*" if multi else None,
        "current": {},
        "hide": 0,
    }


DATASOURCE_VARIABLE: Json = {
    "type": "datasource",
    "name": "datasource",
    "label": "Data source",
    "query": "prometheus",
    "current": {},
    "hide": 0,
}
SITES = variable("site", f"label_values({PROBE_UP}, site)", multi=True)
POPS = variable("pop", "label_values(courierwatch_pop_info, pop)", multi=True, label="POP")


def dashboard(
    uid: str,
    title: str,
    description: str,
    variables: list[Json],
    panels: list[Json],
    *,
    time_from: str = "now-6h",
) -> Json:
    """Lays the panels out left to right, top to bottom, on Grafana's 24-column grid."""
    x = y = row_height = 0
    for number, p in enumerate(panels, start=1):
        w, h = p["gridPos"]["w"], p["gridPos"]["h"]
        if x + w > 24:
            x, y, row_height = 0, y + row_height, 0
        p["gridPos"] = {"x": x, "y": y, "w": w, "h": h}
        p["id"] = number
        x, row_height = x + w, max(row_height, h)
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": [TAG],
        "timezone": "browser",
        "editable": False,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": time_from, "to": "now"},
        "templating": {"list": [DATASOURCE_VARIABLE, *variables]},
        "annotations": {"list": []},
        "links": [
            {
                "type": "dashboards",
                "tags": [TAG],
                "asDropdown": True,
                "title": "courierwatch",
                "includeVars": False,
                "keepTime": True,
            }
        ],
        "panels": panels,
    }


def fleet() -> Json:
    s = 'site=~"$site"'
    return dashboard(
        "courierwatch-fleet",
        "courierwatch: fleet",
        "Every site at a glance, worst first.",
        [SITES, POPS],
        [
            stat(
                "Sites without couriers",
                f"count(site:courierwatch_courier_success:max{{{s}}} == 0) or vector(0)",
                description="No courier answers on 5223 nor 443 while the site's probe is up.",
            ),
            stat(
                "Sites on the 443 fallback only",
                f'count(site_port:courierwatch_courier_success:max{{{s}, port="5223"}} == 0'
                ' and on (site) site_port:courierwatch_courier_success:max{port="443"} == 1)'
                " or vector(0)",
            ),
            stat(
                "Probes down",
                f"count({PROBE_UP}{{{s}}} == 0) or vector(0)",
                description="A probe down is the Pi or its path to the NOC, not Apple.",
            ),
            stat("Alerts firing", 'count(ALERTS{alertstate="firing"}) or vector(0)'),
            panel(
                "state-timeline",
                "Site state",
                target(f"site:courierwatch_site_state:severity{{{s}}}", "{{site}}"),
                w=12,
                h=10,
                mappings=SITE_STATES,
                description="The worst state of each site's probes, as the status page "
                "colours it; an offline probe counts only when none of the site reports.",
            ),
            table(
                "Causes now",
                target(f'site_cause:courierwatch_site_cause:max{{{s}, pop=~"$pop"}}', table=True),
                hide=("Value",),
                sort="state",
                w=12,
                h=10,
                overrides=[site_link()],
                description=CAUSES_HELP,
            ),
            table(
                "Sites, worst first",
                target(
                    f"min by (site) (site_group:courierwatch_check_success:ratio{{{s}}})",
                    table=True,
                ),
                target(f'site:courierwatch_courier_success:max{{{s}, pop=~"$pop"}}', table=True),
                target(f"site:courierwatch_check_success:ratio{{{s}}}", table=True),
                columns={"Value #A": "Worst group", "Value #B": "Couriers", "Value #C": "All"},
                sort="Worst group",
                w=12,
                h=12,
                overrides=[site_link()],
                description="Per site: the success ratio of its worst service group, couriers "
                "(100 % reachable, 0 % lost) and all checks; the worst site first.",
            ),
            panel(
                "bargauge",
                "Site and service group, worst 40",
                target(
                    f"sort(bottomk(40, site_group:courierwatch_check_success:ratio{{{s}}}))",
                    "{{site}} · {{group}}",
                    instant=True,
                ),
                w=12,
                h=12,
                ratio=True,
                options={
                    "orientation": "horizontal",
                    "displayMode": "basic",
                    "reduceOptions": {"calcs": ["lastNotNull"]},
                },
            ),
            table(
                "Success ratio by site and service group",
                target(f"site_group:courierwatch_check_success:ratio{{{s}}}", table=True),
                w=24,
                h=10,
                ratio=True,
                overrides=[site_link()],
            )
            | {
                "transformations": [
                    {
                        "id": "groupingToMatrix",
                        "options": {
                            "columnField": "group",
                            "rowField": "site",
                            "valueField": "Value",
                        },
                    }
                ],
            },
            panel(
                "state-timeline",
                "Courier reachability by site",
                target(
                    f'site:courierwatch_courier_success:max{{{s}, pop=~"$pop"}}',
                    "{{site}} ({{pop}})",
                ),
                w=24,
                h=10,
                mappings=UP_DOWN,
            ),
            panel(
                "timeseries",
                "Success ratio by service group, fleet mean",
                target(
                    f"avg by (group) (site_group:courierwatch_check_success:ratio{{{s}}})",
                    "{{group}}",
                ),
                ratio=True,
            ),
            table(
                "Probes",
                target(f"{PROBE_UP}{{{s}}}", table=True),
                target(f"time() - {LAST_SEEN}{{{s}}}", table=True),
                target(
                    f"max by (site, probe, version) (courierwatch_probe_info{{{s}}})", table=True
                ),
                columns={"Value #A": "Up", "Value #B": "Silent for"},
                hide=("Value #C",),
                sort="Up",
                overrides=[site_link(), column_unit("Silent for", "s")],
                description="Up (1) or down (0), time since last heard from, software version.",
            ),
            table(
                "Alerts firing",
                target('ALERTS{alertstate="firing"}', table=True),
                hide=("Value", "alertstate"),
                w=24,
            ),
        ],
    )


def site() -> Json:
    s = 'site="$site", probe=~"$probe"'
    site_variable = variable("site", f"label_values({PROBE_UP}, site)", multi=False)
    probe_variable = variable(
        "probe", f'label_values({PROBE_UP}{{site="$site"}}, probe)', multi=True
    )
    health = [
        ("Spool depth (results not yet acknowledged)", "courierwatch_probe_spool_depth", ""),
        ("Spool size", "courierwatch_probe_spool_bytes", "bytes"),
        ("Oldest unacknowledged result", "courierwatch_probe_oldest_pending_seconds", "s"),
        ("Scheduler lag", "courierwatch_probe_loop_lag_seconds", "s"),
    ]
    return dashboard(
        "courierwatch-site",
        "courierwatch: site",
        "One site: couriers by port and POP, latency, DNS and TLS findings, probe health.",
        [site_variable, probe_variable],
        [
            label_stat(
                "Courier state",
                f"max by (state) (courierwatch_courier_state{{{s}}} == 1)",
                "{{state}}",
            ),
            label_stat("POP", f"max by (pop) (courierwatch_pop_info{{{s}}})", "{{pop}}"),
            label_stat(
                "Site state", f"max by (state) (courierwatch_site_state{{{s}}} == 1)", "{{state}}"
            ),
            stat("Causes", f"count(courierwatch_site_cause{{{s}}}) or vector(0)"),
            panel(
                "state-timeline",
                "Site state",
                target('site:courierwatch_site_state:severity{site="$site"}', "{{site}}"),
                w=12,
                h=6,
                mappings=SITE_STATES,
                description="The worst state of the site's probes, as on the status page.",
            ),
            table(
                "Causes",
                target(f"courierwatch_site_cause{{{s}}} == 1", table=True),
                hide=("Value", "instance"),
                w=12,
                h=6,
                description=CAUSES_HELP,
            ),
            panel(
                "timeseries",
                "Path loss by port",
                target(f"courierwatch_path_loss_ratio{{{s}}}", "{{probe}} {{port}}"),
                unit="percentunit",
                description="Share of the recent direct connects that failed or needed a SYN "
                "retransmission (>= 0.9 s). The loss cause starts at 10 % and ends below 3 %.",
            ),
            panel(
                "timeseries",
                "Connect jitter by port",
                target(f"courierwatch_path_jitter_seconds{{{s}}}", "{{probe}} {{port}}"),
                unit="s",
                description="Mean absolute difference of consecutive connect times of a check.",
            ),
            stat(
                "Checks succeeding",
                'site:courierwatch_check_success:ratio{site="$site"}',
                ratio=True,
            ),
            stat("Probes up", f"sum({PROBE_UP}{{{s}}})"),
            panel(
                "state-timeline",
                "Couriers by port and POP",
                target(
                    "max by (port, family, via, pop) "
                    + checks("courierwatch_check_success", f'{s}, check="courier"'),
                    "{{port}} {{family}} {{via}} → {{pop}}",
                ),
                w=24,
                h=8,
                mappings=UP_DOWN,
            ),
            panel(
                "timeseries",
                "Courier latency by phase",
                target(
                    "max by (port, phase) "
                    + checks("courierwatch_check_duration_seconds", f'{s}, check="courier"'),
                    "{{port}} {{phase}}",
                ),
                unit="s",
            ),
            panel(
                "timeseries",
                "Latency percentiles by phase, all checks",
                target(
                    'site_phase:courierwatch_check_duration_seconds:quantile{site="$site"}',
                    "{{phase}} p{{quantile}}",
                ),
                unit="s",
            ),
            panel(
                "timeseries",
                "Success ratio by service group",
                target('site_group:courierwatch_check_success:ratio{site="$site"}', "{{group}}"),
                ratio=True,
            ),
            table(
                "Failing checks",
                target(
                    checks("courierwatch_check_outcome", f'{s}, outcome!="ok"') + " == 1",
                    table=True,
                ),
                hide=("Value", "instance"),
            ),
            outcome_counts(
                "DNS answers by outcome",
                f'{s}, check="dns"',
                "dns_sinkhole: a DNS filter blocks the name; dns_hijack: rewritten to a "
                "private or unexpected address.",
            ),
            outcome_counts(
                "TLS handshakes by outcome",
                f'{s}, check=~"tls|courier"',
                "tls_intercepted: SSL inspection at the site.",
            ),
            table(
                "Certificate issuers",
                target(
                    f"count by (issuer, verified_by) {checks('courierwatch_tls_issuer_info', s)}",
                    table=True,
                ),
                columns={"Value": "Checks"},
                w=8,
                description="Issuers of the certificates the endpoints presented; an "
                "unknown one next to tls_intercepted names the inspecting box.",
            ),
            table(
                "Certificates expiring first",
                target(
                    f"bottomk(10, min by (target, port) "
                    f"{checks('courierwatch_tls_leaf_not_after_timestamp_seconds', s)} - time())",
                    table=True,
                ),
                columns={"Value": "Expires in"},
                unit="s",
            ),
            panel(
                "timeseries",
                "Time since last heard from",
                target(f"time() - {LAST_SEEN}{{{s}}}", "{{probe}}"),
                unit="s",
            ),
            *(
                panel("timeseries", title, target(f"{metric}{{{s}}}", "{{probe}}"), w=6, unit=unit)
                for title, metric, unit in health
            ),
            panel(
                "timeseries",
                "Results applied and dropped per second",
                target(
                    f"rate(courierwatch_probe_results_applied_total{{{s}}}[$__rate_interval])",
                    "{{probe}} applied",
                ),
                target(
                    f"rate(courierwatch_probe_spool_dropped_total{{{s}}}[$__rate_interval])",
                    "{{probe}} dropped",
                ),
                unit="ops",
            ),
            panel(
                "timeseries",
                "NTP offset (Apple time servers)",
                target(checks("courierwatch_ntp_offset_seconds", s), "{{probe}} {{target}}"),
                unit="s",
            ),
        ],
    )


def pop() -> Json:
    p = 'pop=~"$pop"'
    return dashboard(
        "courierwatch-pop",
        "courierwatch: POPs",
        "Which sites land on which Akamai POP, latency by POP, POP moves.",
        [POPS],
        [
            table(
                "Sites by POP",
                target(f"max by (pop, site, probe) (courierwatch_pop_info{{{p}}})", table=True),
                hide=("Value",),
                overrides=[site_link()],
            ),
            panel(
                "state-timeline",
                "Site state by POP",
                target(
                    "site:courierwatch_site_state:severity"
                    f" * on (site) group_left (pop) site:courierwatch_pop:current{{{p}}}",
                    "{{pop}} · {{site}}",
                ),
                mappings=SITE_STATES,
            ),
            table(
                "Causes by POP",
                target(
                    f"count by (pop, state, cause) (site_cause:courierwatch_site_cause:max{{{p}}})",
                    table=True,
                ),
                columns={"Value": "Sites"},
                sort="pop",
                description=CAUSES_HELP,
            ),
            panel(
                "bargauge",
                "Sites per POP",
                target(
                    f"count by (pop) (site:courierwatch_pop:current{{{p}}})",
                    "{{pop}}",
                    instant=True,
                ),
                options={"orientation": "horizontal", "reduceOptions": {"calcs": ["lastNotNull"]}},
            ),
            panel(
                "timeseries",
                "Sites failing on 5223, by POP",
                target(
                    f"pop:courierwatch_sites_courier_failing:count{{{p}}}"
                    f" or 0 * pop:courierwatch_sites:count{{{p}}}",
                    "{{pop}}",
                ),
                description="PopWideIncident fires when at least 2 sites, and at least half "
                "of a POP's sites, fail together.",
            ),
            panel(
                "timeseries",
                "Courier reachability by POP (share of sites)",
                target(f"avg by (pop) (site:courierwatch_courier_success:max{{{p}}})", "{{pop}}"),
                ratio=True,
            ),
            panel(
                "timeseries",
                "Courier connect time by POP",
                target(
                    f"pop_phase:courierwatch_courier_duration_seconds:quantile"
                    f'{{{p}, phase="connect"}}',
                    "{{pop}} p{{quantile}}",
                ),
                unit="s",
            ),
            panel(
                "timeseries",
                "Courier TLS handshake time by POP",
                target(
                    f'pop_phase:courierwatch_courier_duration_seconds:quantile{{{p}, phase="tls"}}',
                    "{{pop}} p{{quantile}}",
                ),
                unit="s",
            ),
            panel(
                "state-timeline",
                "POP of each site over time",
                target(f"max by (site, pop) (courierwatch_pop_info{{{p}}})", "{{site}} → {{pop}}"),
                w=24,
            ),
            panel(
                "timeseries",
                "POP moves",
                target(
                    "sum by (site, probe) (increase(courierwatch_pop_changes_total"
                    "[$__rate_interval]))"
                    f" and on (site, probe) courierwatch_pop_info{{{p}}}",
                    "{{site}} {{probe}}",
                ),
            ),
            table(
                "Last POP move",
                # A probe that never moved has no timestamp: 0 there, shown as "never".
                target(
                    "(max by (site, probe) (courierwatch_pop_last_change_timestamp_seconds)"
                    " or on (site, probe)"
                    " 0 * max by (site, probe) (courierwatch_pop_changes_total))"
                    f" and on (site, probe) courierwatch_pop_info{{{p}}}",
                    table=True,
                ),
                columns={"Value": "Last move"},
                unit="dateTimeFromNow",
                mappings=[{"type": "value", "options": {"0": {"text": "never", "index": 0}}}],
                overrides=[site_link()],
            ),
        ],
    )


def capacity() -> Json:
    s = 'site=~"$site"'
    return dashboard(
        "courierwatch-capacity",
        "courierwatch: capacity planning",
        "Months-long trends by site, and what courierwatch itself costs.",
        [SITES],
        [
            panel(
                "timeseries",
                "Success ratio by site, daily mean",
                target(
                    f"avg_over_time(site:courierwatch_check_success:ratio{{{s}}}[1d])", "{{site}}"
                ),
                ratio=True,
                interval="1h",
            ),
            panel(
                "timeseries",
                "Courier reachability by site, daily mean",
                target(
                    f"avg_over_time(site:courierwatch_courier_success:max{{{s}}}[1d])", "{{site}}"
                ),
                ratio=True,
                interval="1h",
            ),
            panel(
                "timeseries",
                "Courier connect time p90 by site, daily",
                target(
                    f"max by (site) (quantile_over_time(0.9, "
                    f"site_pop_phase:courierwatch_courier_duration_seconds:quantile"
                    f'{{{s}, phase="connect", quantile="0.9"}}[1d]))',
                    "{{site}}",
                ),
                unit="s",
                interval="1h",
            ),
            panel(
                "timeseries",
                "Courier connect time p50 by site, 7-day median",
                target(
                    f"site:courierwatch_courier_connect_seconds:p50_median7d{{{s}}}", "{{site}}"
                ),
                unit="s",
                interval="1h",
            ),
            panel(
                "timeseries",
                "Checks per second",
                # The collectors' counters, or (remote write) the written results, counted.
                target(
                    "sum(rate(courierwatch_check_results_total[$__rate_interval]))"
                    " or sum(site:courierwatch_check_results_written:rate5m)",
                    "fleet",
                ),
                target(f"site:courierwatch_check_results:rate5m{{{s}}}", "{{site}}"),
                unit="ops",
            ),
            panel(
                "timeseries",
                "Series",
                target(
                    'sum by (instance) (scrape_samples_scraped{job="courierwatch"})',
                    "collector {{instance}}",
                ),
                target("prometheus_tsdb_head_series", "Prometheus head"),
                description="Samples per collector scrape, and all series Prometheus holds.",
            ),
            stat("Sites", f"count(count by (site) ({PROBE_UP}))"),
            stat("Probes", f"count({PROBE_UP})"),
            stat(
                "Largest spool backlog", f"max(courierwatch_probe_spool_depth{{{s}}}) or vector(0)"
            ),
            stat(
                "Probe streams refused per second",
                "sum(rate(courierwatch_collector_refused_total[$__rate_interval])) or vector(0)",
                unit="ops",
            ),
        ],
        time_from="now-90d",
    )


def dashboards() -> dict[str, Json]:
    """Every dashboard by file name."""
    built = [fleet(), site(), pop(), capacity()]
    return {f"{d['uid']}.json": d for d in built}


def render() -> dict[str, str]:
    return {
        name: json.dumps(d, indent=2, ensure_ascii=False) + "\n" for name, d in dashboards().items()
    }


def expressions(d: Json) -> Iterator[str]:
    """Every PromQL expression of a dashboard: panel targets and variable queries."""
    for p in d["panels"]:
        for t in p["targets"]:
            yield t["expr"]
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            yield v["query"]


def main() -> int:
    OUT.mkdir(exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text)
    print(f"wrote {len(render())} dashboards to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
