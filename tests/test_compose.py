"""The highly available compose stack (deploy/compose.ha.yaml) and its HAProxy config, checked
for how their parts fit together: there is no Docker engine to start them, so the test reads
them as Compose and HAProxy would, and loads the collectors' config with the real loader.
(The balancer itself, with real collectors behind it: test_ha.py.)"""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml
from promserver import ROOT, require

from courierwatch import pki
from courierwatch.collector.config import load_collector_config
from courierwatch.common.configfile import ConfigError

DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.ha.yaml"
HAPROXY = DEPLOY / "haproxy" / "haproxy.cfg"
COLLECTORS = ("collector1", "collector2")
OPERATOR_MADE = {"./pki/ca.pem", "./pki/collector.pem", "./pki/collector.key"}


def stack() -> dict:
    return yaml.safe_load(COMPOSE.read_text())  # anchors and merge keys resolved, as Compose


def services() -> dict[str, dict]:
    return stack()["services"]


def config(name: str) -> str:
    """The inline content of a config of the stack."""
    return stack()["configs"][name]["content"]


def bind_mounts(service: str) -> dict[str, str]:
    """Container path -> host path (relative to deploy/) of a service's bind mounts."""
    mounts = {}
    for volume in services()[service].get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            mounts[target] = source
    return mounts


def configs_of(service: str) -> dict[str, str]:
    """Container path -> config name."""
    return {c["target"]: c["source"] for c in services()[service].get("configs", [])}


def published(service: str) -> dict[int, str]:
    """Container port -> host address:port."""
    ports = {}
    for entry in services()[service].get("ports", []):
        *host, container = entry.split(":")
        ports[int(container)] = ":".join(host)
    return ports


def port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


@pytest.fixture
def collector_config(tmp_path):
    """The collectors' config as loaded in their containers, the certificate paths made real."""
    pki.create_ca(tmp_path, name="compose test CA", days=10)
    pki.issue_collector(tmp_path, ["collector.noc.example.net"], days=10)
    text = config("collector").replace("/etc/courierwatch/", f"{tmp_path}/")
    (tmp_path / "collector.yaml").write_text(text)
    return load_collector_config(str(tmp_path / "collector.yaml"))


def test_the_stack_has_its_services_and_its_files_exist():
    assert set(services()) == {"haproxy", *COLLECTORS, "victoriametrics", "vmalert",
                               "alertmanager", "grafana"}  # fmt: skip
    declared = set(stack()["volumes"])
    used = set()
    for name, service in services().items():
        for source in bind_mounts(name).values():
            if source not in OPERATOR_MADE:
                assert (DEPLOY / source).exists(), f"{name}: {source}"
        used |= {v.split(":")[0] for v in service.get("volumes", []) if not v.startswith(".")}
        assert set(configs_of(name).values()) <= set(stack()["configs"]), name
        for dependency in service.get("depends_on", []):
            assert dependency in services(), f"{name}: {dependency}"
    assert used == declared  # every named volume declared, none left over
    for name in COLLECTORS:
        build = services()[name]["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).is_file()


def test_collectors_are_alike_but_keep_their_own_state(collector_config):
    first, second = (services()[name] for name in COLLECTORS)
    assert first["command"] == second["command"] == [
        "collector", "--config", "/etc/courierwatch/collector.yaml",
    ]  # fmt: skip
    states = set()
    transport = collector_config.transport
    for name in COLLECTORS:
        assert configs_of(name) == {"/etc/courierwatch/collector.yaml": "collector"}
        mounts = bind_mounts(name)
        for path in (transport.ca, transport.cert, transport.key):
            pem = path.rsplit("/", 1)[1]
            assert mounts[f"/etc/courierwatch/{pem}"] == f"./pki/{pem}"
        (state,) = [v for v in services()[name]["volumes"] if v.endswith(":/var/lib/courierwatch")]
        states.add(state)
        # Their status pages, on loopback only; probes reach them through HAProxy only.
        assert published(name)[port(collector_config.http_listen)].startswith("127.0.0.1:")
        assert port(collector_config.grpc_listen) not in published(name)
    assert collector_config.state_dir == "/var/lib/courierwatch"
    assert len(states) == 2


def test_haproxy_sends_probes_to_both_collectors_and_checks_their_health(collector_config):
    haproxy = services()["haproxy"]
    assert bind_mounts("haproxy") == {
        "/usr/local/etc/haproxy/haproxy.cfg": "./haproxy/haproxy.cfg"
    }
    env = haproxy["environment"]
    # Every variable the config reads is set by the stack.
    assert set(re.findall(r"\$\{(\w+)-", HAPROXY.read_text())) == set(env)
    assert [env[f"COURIERWATCH_COLLECTOR{n}"] for n in (1, 2)] == [
        f"{name}:{port(collector_config.grpc_listen)}" for name in COLLECTORS
    ]
    assert int(env["COURIERWATCH_HEALTH_PORT"]) == port(collector_config.http_listen)
    assert published("haproxy")[port(env["COURIERWATCH_LISTEN"])] == "9475"  # what probes dial
    assert published("haproxy")[port(env["COURIERWATCH_HAPROXY_STATS"])].startswith("127.0.0.1:")


def test_collectors_write_to_victoria_metrics_which_grafana_reads(collector_config):
    vm = services()["victoriametrics"]
    flags = dict(arg.lstrip("-").split("=", 1) for arg in vm["command"])
    assert flags["dedup.minScrapeInterval"] == "1ms"  # a replay is stored once
    vm_port = 8428  # its -httpListenAddr default
    assert "httpListenAddr" not in flags and vm_port in published("victoriametrics")
    assert collector_config.remote_write is not None
    assert collector_config.remote_write.url == f"http://victoriametrics:{vm_port}/api/v1/write"

    # It scrapes the collectors' own health, but not what they write: stored once.
    assert configs_of("victoriametrics") == {flags["promscrape.config"]: "scrape"}
    (job,) = yaml.safe_load(config("scrape"))["scrape_configs"]
    assert job["static_configs"][0]["targets"] == [
        f"{name}:{port(collector_config.http_listen)}" for name in COLLECTORS
    ]
    # (A remote-writing collector's /metrics has nothing else: test_remote_e2e.py.)
    assert "metric_relabel_configs" not in job

    # Grafana: VictoriaMetrics as the default Prometheus-type source; the shipped dashboards.
    grafana = services()["grafana"]
    ((target, name),) = configs_of("grafana").items()
    assert target.startswith("/etc/grafana/provisioning/datasources/")
    (source,) = yaml.safe_load(config(name))["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"] is True
    assert source["url"] == f"http://victoriametrics:{vm_port}"
    mounts = bind_mounts("grafana")
    provider_dir = DEPLOY / mounts["/etc/grafana/provisioning/dashboards"]
    provider = yaml.safe_load((provider_dir / "courierwatch.yaml").read_text())
    dashboards = provider["providers"][0]["options"]["path"]
    assert (DEPLOY / mounts[dashboards] / "courierwatch-fleet.json").is_file()
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(dashboards + "/")


def test_vmalert_evaluates_the_shipped_rules_on_the_store_and_alerts_alertmanager():
    vmalert = services()["vmalert"]
    flags = dict(arg.lstrip("-").split("=", 1) for arg in vmalert["command"])
    store = "http://victoriametrics:8428"
    assert flags["datasource.url"] == flags["remoteWrite.url"] == flags["remoteRead.url"] == store
    assert flags["notifier.url"] == "http://alertmanager:9093"
    rules = flags["rule"].rsplit("/", 1)[0]
    assert (DEPLOY / bind_mounts("vmalert")[rules]).resolve() == DEPLOY / "prometheus" / "rules"
    assert bind_mounts("alertmanager") == {
        "/etc/alertmanager/alertmanager.yml": "./alertmanager/alertmanager.yml"
    }


@pytest.mark.integration
def test_vmalert_accepts_the_shipped_rules(tmp_path):
    """Debian's vmalert parses every shipped rule (MetricsQL is a superset of PromQL, but a
    dialect: a rule it refused would leave the HA stack without that alert)."""
    binary = require("vmalert")
    rules = str(DEPLOY / "prometheus" / "rules" / "*.yml")
    done = subprocess.run([binary, "-dryRun", f"-rule={rules}"], capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    (tmp_path / "bad.yml").write_text(
        "groups:\n  - name: x\n    rules:\n      - record: a\n        expr: sum(x) by\n"
    )
    refused = subprocess.run([binary, "-dryRun", f"-rule={tmp_path / 'bad.yml'}"],
                             capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert refused.returncode != 0  # the dry run does check what it reads


@pytest.mark.integration
def test_haproxy_accepts_its_config():
    """`haproxy -c` with the stack's names (which do not resolve here) and with addresses."""
    binary = require("haproxy")
    loopback = {"COURIERWATCH_COLLECTOR1": "127.0.0.1:1", "COURIERWATCH_COLLECTOR2": "127.0.0.1:2",
                "COURIERWATCH_LISTEN": "127.0.0.1:9475"}  # fmt: skip
    for env in ({}, loopback):
        done = subprocess.run([binary, "-c", "-f", str(HAPROXY)], capture_output=True,
                              text=True, env=env, timeout=30, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "ALERT" not in done.stderr


# --- The collector config's remote_write section -------------------------------------------


def remote_write_config(tmp_path, section: str):
    (tmp_path / "collector.yaml").write_text(
        "transport: {insecure: true}\n" + section  # line 2 on: the section
    )
    return load_collector_config(str(tmp_path / "collector.yaml"), insecure=True)


def test_scrape_mode_is_the_default(tmp_path):
    assert remote_write_config(tmp_path, "").remote_write is None
    assert remote_write_config(tmp_path, "remote_write:\n").remote_write is None


def test_remote_write_reads_the_store_and_the_sender_limits(tmp_path):
    config = remote_write_config(tmp_path, (
        "remote_write:\n"
        "  url: https://mimir.noc.example.net/api/v1/push\n"
        "  headers: {X-Scope-OrgID: noc}\n"
        "  max_queued_samples: 100000\n"
        "  max_request_samples: 10000\n"
        "  concurrency: 2\n"
        "  timeout: 10s\n"
    ))  # fmt: skip
    rw = config.remote_write
    assert rw is not None
    assert (rw.url, rw.headers) == ("https://mimir.noc.example.net/api/v1/push",
                                    {"X-Scope-OrgID": "noc"})  # fmt: skip
    assert (rw.max_queued_samples, rw.max_request_samples, rw.concurrency, rw.timeout) == (
        100_000, 10_000, 2, 10.0)


@pytest.mark.parametrize(("section", "line", "field", "says"), [
    ("remote_write:\n  urls: http://vm:8428/api/v1/write\n", 3, "remote_write", "unknown key"),
    ("remote_write: {max_queued_samples: 5000}\n", 2, "remote_write.url", "is required"),
    ("remote_write:\n  url: vm:8428/api/v1/write\n", 3, "remote_write.url", "http:// or https://"),
    ("remote_write:\n  url: http://vm/w\n  max_queued_samples: 1000\n", 4,
     "remote_write.max_queued_samples", "at least max_request_samples"),
    ("remote_write:\n  url: http://vm/w\n  headers: {Content-Encoding: gzip}\n", 4,
     "remote_write.headers.Content-Encoding", "set by the remote-write protocol"),
    ("remote_write:\n  url: http://vm/w\n  concurrency: 0\n", 4, "remote_write.concurrency", ""),
])  # fmt: skip
def test_remote_write_errors_name_file_line_and_field(tmp_path, section, line, field, says):
    with pytest.raises(ConfigError) as error:
        remote_write_config(tmp_path, section)
    assert str(error.value).startswith(f"{tmp_path / 'collector.yaml'}:{line}: {field}: ")
    assert says in str(error.value) and "\n" not in str(error.value)
