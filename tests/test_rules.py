"""The shipped Prometheus rules and Alertmanager config: promtool and amtool accept them, every
alert is unit-tested firing and quiet in both modes (scrape, and remote write: the tests'
series in the shape collectors write them, tests/written_series.py), the inhibition really
matches, and a real Prometheus fires the courier alert for a blocked site only."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest
import yaml
from aiohttp import web
from promserver import (
    ROOT,
    RULES,
    alertmanager,
    fast_rules,
    prometheus,
    require,
)
from test_status_page import Fleet, collector_http
from written_series import remote_write

from courierwatch.collector.exposition import COLLECTOR, FAMILIES
from courierwatch.collector.remote.telemetry import Telemetry

PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
RULE_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.test.yml"))
ALERTMANAGER = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
# Alerts about one place must name it; CollectorDown is about the collector itself.
NAMES_PLACE = re.compile(r"\$labels\.(site|pop|instance)\b")


def run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"{' '.join(argv)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def alert_rules() -> list[dict]:
    return [
        rule
        for path in RULES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


MODES = ("scrape", "remote_write")


def rule_test_files(mode: str, tmp: Path) -> list[Path]:
    """The promtool test files of a mode: the shipped ones (scrape-shaped, and
    remote_write.test.yml of written series); for remote_write, those in written shape
    (made in `tmp`) and the one already written so."""
    if mode == "scrape":
        return RULE_TESTS
    made = {path: remote_write(path, tmp) for path in RULE_TESTS}
    return [written or path for path, written in made.items()
            if written is not None or "instance=" not in path.read_text()]  # fmt: skip


def rule_tests(files: list[Path] = RULE_TESTS) -> list[dict]:
    return [
        case
        for path in files
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]


@pytest.mark.integration
def test_promtool_accepts_the_rules_and_the_scrape_config():
    promtool = require("promtool")
    run(promtool, "check", "rules", *map(str, RULES))
    out = run(promtool, "check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))
    assert f"{len(RULES)} rule files found" in out


@pytest.mark.integration
@pytest.mark.parametrize("mode", MODES)
def test_promtool_unit_tests_pass(mode, tmp_path):
    promtool = require("promtool")
    files = rule_test_files(mode, tmp_path)
    assert len(files) == len(RULE_TESTS)  # each file has its remote-write twin
    run(promtool, "test", "rules", *map(str, files))


@pytest.mark.parametrize("mode", MODES)
def test_every_alert_is_tested_firing_and_quiet(mode, tmp_path):
    cases = rule_tests(rule_test_files(mode, tmp_path))
    firing = {c["alertname"] for c in cases if c.get("exp_alerts")}
    quiet = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    names = {rule["alert"] for rule in alert_rules()}
    assert names - firing == set(), "alerts without a firing test"
    assert names - quiet == set(), "alerts without a test where they stay quiet"
    assert {
        "CourierReachabilityLost",
        "Courier5223Blocked",
        "ProbeDown",
        "TLSInterception",
        "DNSFilteringOrHijack",
        "AppleServiceGroupDegraded",
        "LatencyAboveBaseline",
        "PopWideIncident",
        # One per cause of the site state (common/sitestate.py).
        "CourierNoFallback",
        "ProxyPath",
        "Ipv6Broken",
        "ProviderApiNoH2",
        "PathLoss",
        "ClockSkew",
    } <= names


def seconds(duration: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)([smh])", duration))


def test_an_inhibiting_alert_fires_no_later_than_what_it_inhibits():
    """Otherwise the wrong page goes out first, and is only then silenced."""
    durations: dict[str, list[int]] = {}
    for rule in alert_rules():
        durations.setdefault(rule["alert"], []).append(seconds(rule.get("for", "0s")))
    config = yaml.safe_load(ALERTMANAGER.read_text())
    for rule in config["inhibit_rules"]:
        for source in alertnames(rule["source_matchers"]):
            for target in alertnames(rule["target_matchers"]):
                assert max(durations[source]) <= min(durations[target]), (source, target)


def test_the_outage_alert_reads_only_the_couriers_unreachable_cause():
    (lost,) = [r for r in alert_rules() if r["alert"] == "CourierReachabilityLost"]
    assert lost["expr"].strip() == "site:courierwatch_couriers_unreachable:ratio == 1"
    recording = {
        rule["record"]: rule["expr"]
        for path in RULES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "record" in rule
    }
    ratio = recording["site:courierwatch_couriers_unreachable:ratio"]
    assert re.findall(r'cause="(\w+)"', ratio) == ["couriers_unreachable"]


def test_every_alert_explains_itself():
    for rule in alert_rules():
        annotations = rule["annotations"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert NAMES_PLACE.search(annotations["summary"]), rule["alert"]
        assert NAMES_PLACE.search(annotations["description"]), rule["alert"]


def alertnames(matchers: list[str]) -> set[str]:
    """The alert names an Alertmanager matcher list selects (= or =~ on alertname)."""
    names = {rule["alert"] for rule in alert_rules()}
    for matcher in matchers:
        m = re.fullmatch(r'alertname(=~?)"(.*)"', matcher)
        if m:
            op, value = m.groups()
            return {n for n in names if (re.fullmatch(value, n) if op == "=~" else n == value)}
    raise AssertionError(f"no alertname matcher in {matchers}")


def test_inhibit_rules_name_real_alerts_that_carry_the_equal_labels():
    """The inhibition only works if source and target alerts both carry the `equal` labels:
    checked against the labels the unit tests expect each alert to fire with."""
    fired: dict[str, list[dict]] = {}
    for case in rule_tests():
        for alert in case.get("exp_alerts") or []:
            fired.setdefault(case["alertname"], []).append(alert["exp_labels"])
    config = yaml.safe_load(ALERTMANAGER.read_text())
    assert config["inhibit_rules"]
    for rule in config["inhibit_rules"]:
        for side in ("source_matchers", "target_matchers"):
            names = alertnames(rule[side])
            assert names, f"{side} {rule[side]} matches no alert"
            for name in names:
                for labels in fired[name]:
                    missing = set(rule["equal"]) - set(labels)
                    assert not missing, f"{name} fires without {missing}"


async def test_a_remote_writing_collector_serves_only_its_own_families_for_the_scrape():
    """What it writes is not on /metrics (stored twice otherwise), so prometheus.yml drops
    nothing; the collector's own families and the writer's stay."""
    assert "metric_relabel_configs" not in (PROMETHEUS_DIR / "prometheus.yml").read_text()
    async with (
        collector_http(Fleet().state, remote_write=Telemetry(1000)) as url,
        aiohttp.ClientSession() as session,
        session.get(url + "/metrics") as response,
    ):
        text = await response.text()
    # Family (HELP) and sample names, and the table's, without a counter's _total.
    found = re.findall(r"(?m)^(?:# HELP )?(\w+)[{ ]", text)
    names = {name.removesuffix("_total") for name in found}
    written = {f.name.removesuffix("_total") for f in FAMILIES if f.source is not COLLECTOR}
    own = {f.name.removesuffix("_total") for f in FAMILIES if f.source is COLLECTOR}
    assert names & written == set()
    assert own <= names and "courierwatch_remote_write_queue_samples" in names


@pytest.mark.integration
def test_amtool_accepts_the_alertmanager_config_and_routes_by_severity():
    amtool = require("amtool")
    run(amtool, "check-config", str(ALERTMANAGER))
    config = f"--config.file={ALERTMANAGER}"
    for severity, receiver in (("critical", "noc-pager"), ("warning", "noc-tickets")):
        out = run(amtool, "config", "routes", "test", config, "alertname=X", f"severity={severity}")
        assert out.split()[0] == receiver


def alert(name: str, severity: str = "critical", **labels: str) -> dict:
    return {"labels": {"alertname": name, "severity": severity, **labels}}


async def assert_alertmanager_states(tmp_path, alerts: list[dict], expected: dict[str, str]):
    """Posts `alerts` to a real Alertmanager running the shipped config (its receivers pointed
    at a closed port on loopback); each ends in the expected state, keyed alertname/site/group
    ("active" or "suppressed")."""
    tmp_path.mkdir(exist_ok=True)  # a test may run several, each in a folder of its own
    config = yaml.safe_load(ALERTMANAGER.read_text())
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = "http://127.0.0.1:9/"
    (tmp_path / "am.yml").write_text(yaml.safe_dump(config))

    async with alertmanager(tmp_path / "am.yml", tmp_path) as am:
        await am.post(alerts)

        async def states() -> dict[str, str]:
            return {
                "/".join([a["labels"]["alertname"], a["labels"].get("site", ""),
                          a["labels"].get("group", "")]).rstrip("/"): a["status"]["state"]
                for a in await am.alerts()
            }  # fmt: skip

        seen: dict[str, str] = {}

        async def inhibited() -> bool:
            nonlocal seen
            seen = await states()
            return seen == expected

        try:  # Alertmanager applies inhibitions asynchronously
            await am.wait_for(inhibited, 10, "inhibitions applied")
        except AssertionError:
            assert seen == expected


@pytest.mark.integration
async def test_alertmanager_inhibits_a_pop_s_sites_during_a_pop_incident(tmp_path):
    await assert_alertmanager_states(
        tmp_path,
        [
            alert("PopWideIncident", pop="eu-central"),
            alert("CourierReachabilityLost", site="a", pop="eu-central"),
            alert("Courier5223Blocked", site="b", pop="eu-central", port="5223"),
            alert("CourierReachabilityLost", site="d", pop="us-ne"),
            alert("AppleServiceGroupDegraded", site="d", group="push"),
            alert("AppleServiceGroupDegraded", site="e", group="push"),
        ],
        {
            "PopWideIncident": "active",
            "CourierReachabilityLost/a": "suppressed",
            "Courier5223Blocked/b": "suppressed",
            "CourierReachabilityLost/d": "active",  # another POP
            "AppleServiceGroupDegraded/d/push": "suppressed",  # said by the courier alert
            "AppleServiceGroupDegraded/e/push": "active",
        },
    )


@pytest.mark.integration
async def test_alertmanager_holds_back_probe_down_while_the_store_takes_no_writes(tmp_path):
    stalled = {"job": "courierwatch", "instance": "c2:9474"}
    await assert_alertmanager_states(
        tmp_path / "stalled",
        [
            alert("RemoteWriteStalled", "warning", **stalled),
            alert("ProbeDown", "warning", site="a", probe="pi-a"),
            alert("ProbeDown", "warning", site="b", probe="pi-b"),
        ],
        {"RemoteWriteStalled": "active", "ProbeDown/a": "suppressed", "ProbeDown/b": "suppressed"},
    )
    # A full core delays results but the probes' state still reaches the store: no hold.
    await assert_alertmanager_states(
        tmp_path / "saturated",
        [
            alert("CollectorSaturated", "warning", **stalled),
            alert("ProbeDown", "warning", site="a", probe="pi-a"),
        ],
        {"CollectorSaturated": "active", "ProbeDown/a": "active"},
    )


@pytest.mark.integration
async def test_alertmanager_inhibits_courier_and_group_alerts_while_filtering_or_interception_holds(
    tmp_path,
):
    cause = {"pop": "eu-central"}
    sinkhole = {"cause": "dns_filter", **cause}
    await assert_alertmanager_states(
        tmp_path,
        [
            # f: a Pi-hole sinks the courier names (and device_setup's); filtering holds.
            alert("DNSFilteringOrHijack", site="f", group="push", **sinkhole),
            alert("DNSFilteringOrHijack", site="f", group="device_setup", **sinkhole),
            alert("CourierReachabilityLost", site="f", **cause),
            alert("AppleServiceGroupDegraded", site="f", group="push"),
            alert("AppleServiceGroupDegraded", site="f", group="device_setup"),
            alert("AppleServiceGroupDegraded", "warning", site="f", group="icloud"),  # its own
            # i: an inspection box re-signs the couriers; 5223 fails there too.
            alert("TLSInterception", site="i", group="push", cause="tls_inspection", **cause),
            alert("Courier5223Blocked", "warning", site="i", **cause),
            alert("CourierNoFallback", "warning", site="i", **cause),
            # o: a real outage, no filter: it pages.
            alert("CourierReachabilityLost", site="o", pop="us-ne"),
        ],
        {
            "DNSFilteringOrHijack/f/push": "active",
            "DNSFilteringOrHijack/f/device_setup": "active",
            "CourierReachabilityLost/f": "suppressed",
            "AppleServiceGroupDegraded/f/push": "suppressed",
            "AppleServiceGroupDegraded/f/device_setup": "suppressed",
            "AppleServiceGroupDegraded/f/icloud": "active",
            "TLSInterception/i/push": "active",
            "Courier5223Blocked/i": "suppressed",
            "CourierNoFallback/i": "suppressed",
            "CourierReachabilityLost/o": "active",
        },
    )


# --- The shipped rules in a real Prometheus ---------------------------------------------------


def exposition(now: float) -> str:
    """A collector's /metrics for two sites on one POP: "healthy", and "blocked" whose
    couriers are refused; every series the dashboards read, as the metrics contract names it."""
    lines = []

    def add(name: str, value: float, **labels: str) -> None:
        text = ",".join(f'{k}="{v}"' for k, v in labels.items())
        lines.append(f"{name}{{{text}}} {value}")

    for site, ok in (("healthy", True), ("blocked", False)):
        probe = {"site": site, "probe": f"pi-{site}"}
        add("courierwatch_probe_up", 1, **probe)
        add("courierwatch_probe_last_seen_timestamp_seconds", now, **probe)
        add("courierwatch_probe_info", 1, **probe, version="0.1.0", config_digest="abc")
        for metric, value in (
            ("results_applied_total", 100),
            ("results_duplicate_total", 0),
            ("spool_depth", 0),
            ("spool_bytes", 0),
            ("spool_dropped_total", 0),
            ("loop_lag_seconds", 0.01),
            ("oldest_pending_seconds", 0),
        ):
            add(f"courierwatch_probe_{metric}", value, **probe)
        add("courierwatch_pop_info", 1, **probe, pop="eu-central")
        add("courierwatch_pop_changes_total", 1, **probe)
        add("courierwatch_pop_last_change_timestamp_seconds", now - 3600, **probe)
        add("courierwatch_courier_state", 1, **probe, state="ok" if ok else "down")
        # The site state the collector computes from the checks below.
        for state in ("ok", "degraded", "filtered", "intercepted", "unreachable", "probe_offline"):
            add("courierwatch_site_state", int(state == ("ok" if ok else "unreachable")),
                **probe, state=state)  # fmt: skip
        causes = [] if ok else [
            ("unreachable", "couriers_unreachable", "push"),
            ("intercepted", "tls_inspection", "device_setup"),
            ("filtered", "dns_filter", "software_updates"),
        ]  # fmt: skip
        for state, cause, group in causes:
            add("courierwatch_site_cause", 1, **probe, state=state, cause=cause, group=group)
        for port in ("5223", "443"):
            add("courierwatch_path_loss_ratio", 0.0, **probe, port=port)
            add("courierwatch_path_jitter_seconds", 0.002, **probe, port=port)
        for group, critical in (("push", "true"), ("software_updates", "false"),
                                ("device_setup", "true")):  # fmt: skip
            add("courierwatch_group_info", 1, **probe, group=group, title=group, critical=critical)
        add("courierwatch_ntp_offset_seconds", 0.002, **probe, target="time.apple.com")
        checks = [
            (
                "courier.push.apple.com",
                "5223",
                "courier",
                "push",
                "eu-central",
                "ok" if ok else "refused",
            ),
            (
                "courier.push.apple.com",
                "443",
                "courier",
                "push",
                "eu-central",
                "ok" if ok else "timeout",
            ),
            ("mesu.apple.com", "53", "dns", "software_updates", "", "ok" if ok else "dns_sinkhole"),
            (
                "deviceenrollment.apple.com",
                "443",
                "tls",
                "device_setup",
                "",
                "ok" if ok else "tls_intercepted",
            ),
        ]
        for target, port, check, group, pop, outcome in checks:
            check_labels = {
                **probe,
                "target": target,
                "port": port,
                "check": check,
                "group": group,
                "family": "ipv4",
                "via": "direct",
            }
            add("courierwatch_check_success", int(outcome == "ok"), **check_labels, pop=pop)
            add("courierwatch_check_outcome", 1, **check_labels, pop=pop, outcome=outcome)
            add("courierwatch_check_results_total", 10, **check_labels, outcome=outcome)
            add("courierwatch_check_last_run_timestamp_seconds", now, **check_labels)
            for phase, seconds in (
                ("dns", 0.004),
                ("connect", 0.02),
                ("tls", 0.05),
                ("total", 0.08),
            ):
                add(
                    "courierwatch_check_duration_seconds",
                    seconds,
                    **check_labels,
                    pop=pop,
                    phase=phase,
                )
            if check != "dns":
                add(
                    "courierwatch_tls_leaf_not_after_timestamp_seconds",
                    now + 86400 * 90,
                    **check_labels,
                )
                issuer = "CN=Apple Server Authentication CA" if ok else "CN=Inspection CA"
                add(
                    "courierwatch_tls_issuer_info",
                    1,
                    **check_labels,
                    issuer=issuer,
                    verified_by="expected" if ok else "",
                )
    add("courierwatch_collector_refused_total", 0, reason="unknown_site")
    return "\n".join(lines) + "\n"


@pytest.mark.integration
async def test_real_prometheus_fires_courier_lost_for_the_blocked_site_only(tmp_path):
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=exposition(time.time()), content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    collector = f"127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with prometheus([collector], tmp_path, rule_files=fast_rules(tmp_path)) as prom:

            async def lost() -> list[dict]:
                return [
                    a
                    for a in await prom.alerts()
                    if a["labels"]["alertname"] == "CourierReachabilityLost"
                    and a["state"] == "firing"
                ]

            fired = await prom.wait_for(lost, 15, "CourierReachabilityLost firing")
            assert [(a["labels"]["site"], a["labels"]["pop"]) for a in fired] == [
                ("blocked", "eu-central")
            ]
            summary = fired[0]["annotations"]["summary"]
            assert "Site blocked (POP eu-central) cannot reach" in summary
            assert "5223 refused" in fired[0]["annotations"]["description"]

            # Every dashboard query evaluates, and returns data for the blocked site.
            await prom.assert_dashboards_have_data(
                10, site="blocked", pop="eu-central", probe="pi-blocked"
            )
            states = {a["labels"]["site"] for a in await lost()}
            assert states == {"blocked"}  # and still not the healthy site
            # The site's other causes page by their own names, with the POP.
            firing = {
                (a["labels"]["alertname"], a["labels"].get("group"), a["labels"].get("pop"))
                for a in await prom.alerts()
                if a["state"] == "firing" and a["labels"].get("site") == "blocked"
            }
            assert {
                ("TLSInterception", "device_setup", "eu-central"),
                ("DNSFilteringOrHijack", "software_updates", "eu-central"),
            } <= firing
    finally:
        await runner.cleanup()


def test_fast_rules_only_shorten_durations(tmp_path):
    for original, fast in zip(RULES, fast_rules(tmp_path), strict=True):
        a, b = yaml.safe_load(original.read_text()), yaml.safe_load(fast.read_text())
        for group_a, group_b in zip(a["groups"], b["groups"], strict=True):
            assert "interval" not in group_b
            for rule_a, rule_b in zip(group_a["rules"], group_b["rules"], strict=True):
                assert {k: v for k, v in rule_a.items() if k != "for"} == {
                    k: v for k, v in rule_b.items() if k != "for"
                }
                assert rule_b.get("for", "1s") == "1s"
