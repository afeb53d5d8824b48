"""One owner for a group's criticality: a config's own group ("mdm_vendor") is critical in the
readiness report, on the status page and in the alert rules alike, because all three read the
facts catalog.describe() gave the config (the probe sends them in its Hello)."""

from __future__ import annotations

import subprocess

import yaml
from prometheus_client.parser import text_string_to_metric_families
from promserver import RULES, require

from courierwatch.collector import status
from courierwatch.collector.exposition import Exposition
from courierwatch.collector.state import State
from courierwatch.probe import daemon
from courierwatch.probe.config import load_probe_config
from courierwatch.probe.oneshot import readiness
from courierwatch.v1 import courierwatch_pb2 as pb

NOW = 1_700_000_000.0
CONFIG = """
site: ams
probe_id: pi-1
catalog: {groups: [icloud]}
targets:
"""
# Five checks per group, one failing: 80 %, under the critical bar (90 %), over the warning
# bar (75 %). Only a critical group alerts at all.
HOSTS = [f"h{i}.vendor.example" for i in range(5)]


def config(tmp_path):
    text = CONFIG + "".join(
        f"  - {{host: {host}, port: 443, check: tcp, group: mdm_vendor}}\n" for host in HOSTS
    )
    path = tmp_path / "probe.yaml"
    path.write_text(text)
    return load_probe_config(str(path), require_identity=False, host_has_ipv6=lambda: False)


def results(groups: dict[str, list[str]]) -> list[pb.Result]:
    made = []
    for group, hosts in groups.items():
        for n, host in enumerate(hosts):
            ok = n != 0
            r = pb.Result(seq=len(made) + 1, target=host, port=443, check="tcp", group=group,
                          outcome=pb.OUTCOME_OK if ok else pb.OUTCOME_REFUSED,
                          interval_seconds=60, address_family="ipv4", via="direct")  # fmt: skip
            r.started_at.FromSeconds(int(NOW) - 5)
            made.append(r)
    return made


def fleet(tmp_path):
    probe_config = config(tmp_path)
    icloud = [f"i{i}.icloud.com" for i in range(5)]
    batch = results({"mdm_vendor": HOSTS, "icloud": icloud})
    return probe_config, batch


def test_the_config_describes_its_own_group_as_critical(tmp_path):
    probe_config, _ = fleet(tmp_path)
    facts = {g.id: g for g in probe_config.groups}
    assert facts["mdm_vendor"].critical and not facts["icloud"].critical


def test_critical_in_the_report(tmp_path):
    probe_config, batch = fleet(tmp_path)
    assessed = readiness.assess(batch, groups=probe_config.groups)
    by_id = {g.id: g for g in assessed.groups}
    assert by_id["mdm_vendor"].critical and not by_id["icloud"].critical
    assert not assessed.ready  # mdm_vendor fails; icloud alone would not matter


def collector_state(tmp_path) -> State:
    probe_config, batch = fleet(tmp_path)
    state = State(clock=lambda: NOW)
    probe = state.connect(daemon.hello(probe_config))
    state.apply(probe, batch)
    return state


def test_critical_on_the_status_page(tmp_path):
    (site,) = status.snapshot(collector_state(tmp_path))["sites"]
    findings = site["probes"][0]["findings"]
    # The critical group's failure is listed first, and marked, though "icloud" sorts first.
    assert [(f["group"], f["critical"]) for f in findings] == [
        ("mdm_vendor", True),
        ("icloud", False),
    ]


def test_critical_in_the_alert_rules(tmp_path):
    """The series a real collector exposes for this state, fed to the shipped rules:
    mdm_vendor at 80 % pages (critical bar 90 %), icloud at 80 % stays quiet (warning bar 75 %)."""
    promtool = require("promtool")
    text = Exposition(collector_state(tmp_path)).render().decode()
    wanted = {"courierwatch_group_info", "courierwatch_check_success", "courierwatch_probe_up"}
    series = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in wanted:
                named = {"instance": "c1", **sample.labels}
                labels = ",".join(f'{k}="{v}"' for k, v in named.items())
                series.append({"series": f"{sample.name}{{{labels}}}",
                               "values": f"{sample.value:g}x30"})  # fmt: skip
    assert any('group="mdm_vendor"' in s["series"] and 'critical="true"' in s["series"]
               for s in series if s["series"].startswith("courierwatch_group_info"))  # fmt: skip
    alert = "AppleServiceGroupDegraded"
    pages = {
        "exp_labels": {"severity": "critical", "site": "ams", "group": "mdm_vendor",
                       "pop": "unknown"},
        "exp_annotations": {
            "summary": "Apple service group mdm_vendor is degraded at site ams (POP unknown): "
            "fix what its failing checks name (see the description)",
            "description": "Only 80% of the mdm_vendor checks at site ams succeed. "
            "refused/reset: a firewall rejects the traffic; timeout/unreachable: it is dropped "
            "or has no route; dns_*: the site's resolver; tls_*: SSL inspection or trust; "
            "proxy_*: the site's proxy; http_bad_status: the Apple service itself.",
        },
    }
    test = {
        "rule_files": [str(path) for path in RULES],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": series,
            "alert_rule_test": [
                {"eval_time": "9m", "alertname": alert, "exp_alerts": []},
                {"eval_time": "12m", "alertname": alert, "exp_alerts": [pages]},
                # icloud is still at 80 % and never warns (75 %); mdm_vendor still pages.
                {"eval_time": "25m", "alertname": alert, "exp_alerts": [pages]},
            ],
        }],
    }  # fmt: skip
    path = tmp_path / "group_facts.test.yml"
    path.write_text(yaml.safe_dump(test))
    done = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
