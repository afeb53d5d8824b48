"""What a NOC installs from deploy/: least-privilege systemd units, the Raspberry Pi installer,
and a compose stack whose files fit together. (Rules and dashboards: test_rules.py and
test_dashboards.py.)"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml
from promserver import JOB, ROOT, require

from courierwatch import pki
from courierwatch.collector.config import load_collector_config
from courierwatch.probe.config import load_probe_config

DEPLOY = ROOT / "deploy"
UNITS = DEPLOY / "systemd"
INSTALLER = DEPLOY / "install-probe.sh"
COMPOSE = DEPLOY / "compose.yaml"


def unit(name: str) -> dict[str, dict[str, list[str]]]:
    """A unit file as systemd reads it: sections of keys, each key with all its values
    (keys like SystemCallFilter= may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in (UNITS / name).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
        else:
            key, _, value = line.partition("=")
            current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.mark.parametrize("role", ["probe", "collector"])
def test_units_run_with_least_privilege(role):
    service = unit(f"courierwatch-{role}.service")["Service"]

    def one(key: str) -> str:
        (value,) = service[key]
        return value

    assert one("User") == "courierwatch" and one("Group") == "courierwatch"
    assert one("StateDirectory") == "courierwatch"  # the only writable place
    assert "ReadWritePaths" not in service
    assert one("ProtectSystem") == "strict"
    assert one("CapabilityBoundingSet") == "" and one("AmbientCapabilities") == ""
    for key in (
        "NoNewPrivileges",
        "PrivateTmp",
        "ProtectHome",
        "PrivateDevices",
        "RestrictSUIDSGID",
        "ProtectKernelTunables",
        "ProtectControlGroups",
    ):
        assert one(key) == "yes", key
    assert set(one("RestrictAddressFamilies").split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert service["SystemCallFilter"][0] == "@system-service"
    # Any death systemctl did not ask for, even by SIGHUP or with status 0, is restarted...
    assert one("Restart") == "always"
    assert one("RestartPreventExitStatus") == "2"  # ...but a config error: restarting cannot help
    assert one("ExecStart").split()[1:] == [role, "--config", f"/etc/courierwatch/{role}.yaml"]
    # A reload checks the file first (a bad one fails the reload), then asks by SIGHUP.
    check, signal = service["ExecReload"]
    assert check.split() == [one("ExecStart").split()[0], role, "--check-config",
                             "--config", f"/etc/courierwatch/{role}.yaml"]  # fmt: skip
    assert signal == "/bin/kill -HUP $MAINPID"


@pytest.mark.parametrize("role", ["probe", "collector"])
@pytest.mark.parametrize("line", ["ExecStart", "ExecReload"])
def test_the_units_command_line_is_one_courierwatch_accepts(role, line, tmp_path):
    """ExecStart's and the check of ExecReload's arguments reach the config loader (not an
    argparse usage error)."""
    argv = unit(f"courierwatch-{role}.service")["Service"][line][0].split()[1:]
    missing = str(tmp_path / f"{role}.yaml")
    argv[argv.index("--config") + 1] = missing
    done = subprocess.run(
        [sys.executable, "-m", "courierwatch", *argv],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert missing in done.stderr and "usage:" not in done.stderr


@pytest.mark.integration
def test_systemd_analyze_verifies_the_units_and_rates_them_safe(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    copies = []
    for source in sorted(UNITS.glob("*.service")):
        # verify checks that ExecStart exists: point it at a binary that does.
        copy = tmp_path / source.name
        copy.write_text(
            source.read_text().replace("/opt/courierwatch/venv/bin/courierwatch", "/bin/true")
        )
        copies.append(str(copy))
    verify = subprocess.run(
        [analyze, "verify", *copies], capture_output=True, text=True, timeout=60, check=False
    )
    # Unknown or misspelt settings are only warnings (exit status 0): none is allowed.
    assert verify.returncode == 0 and verify.stderr == "", verify.stderr
    # Exposure on systemd's 0-10 scale at most 2.0 ("OK"); the threshold is in tenths.
    security = subprocess.run(
        [analyze, "security", "--offline=true", "--threshold=20", *copies],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert security.returncode == 0, security.stdout[-2000:]


@pytest.mark.integration
def test_installer_is_clean_bash():
    subprocess.run(["bash", "-n", str(INSTALLER)], check=True, timeout=30)
    shellcheck = require("shellcheck")
    done = subprocess.run(
        [shellcheck, str(INSTALLER)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout


def installer_setting(name: str) -> str:
    (value,) = re.findall(rf"^{name}=(\S+)$", INSTALLER.read_text(), re.M)
    return value


def test_installer_installs_the_shipped_unit_where_it_reads_its_config():
    unit_name = installer_setting("UNIT")
    exec_start = unit(unit_name)["Service"]["ExecStart"][0].split()
    assert exec_start[0] == f"{installer_setting('PREFIX')}/venv/bin/courierwatch"
    assert exec_start[-1] == f"{installer_setting('CONFIG_DIR')}/probe.yaml"
    assert unit(unit_name)["Service"]["User"] == [installer_setting("SERVICE_USER")]


@pytest.fixture
def bundle(tmp_path) -> Path:
    """A probe bundle as `courierwatch pki probe` makes it."""
    ca = tmp_path / "pki"
    pki.create_ca(ca, name="test fleet CA", days=30)
    path = tmp_path / "pi-ams-1.tar.gz"
    path.write_bytes(
        pki.probe_bundle(
            ca, site="ams-office", probe_id="pi-ams-1", collectors=["127.0.0.1:9475"], days=30
        )
    )
    return path


def check_bundle(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(INSTALLER), "--check", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_installer_accepts_a_pki_bundle_whose_config_loads_where_installed(bundle, tmp_path):
    done = check_bundle(bundle)
    assert done.returncode == 0, done.stderr
    assert "ams-office" in done.stdout
    # Installed side by side in one folder, as in /etc/courierwatch, the config loads.
    etc = tmp_path / "etc"
    etc.mkdir()
    with tarfile.open(bundle) as tar:
        tar.extractall(etc, filter="data")
    config = load_probe_config(str(etc / "probe.yaml"))
    assert config.site == "ams-office" and config.transport.key == str(etc / "probe.key")


def test_installer_refuses_a_bundle_without_the_key(bundle, tmp_path):
    broken = tmp_path / "broken.tar.gz"
    with tarfile.open(bundle) as source, tarfile.open(broken, "w:gz") as target:
        for member in source.getmembers():
            if member.name != "probe.key":
                target.addfile(member, source.extractfile(member))
    done = check_bundle(broken)
    assert done.returncode == 1
    assert "no probe.key" in done.stderr


# --- The compose stack ------------------------------------------------------------------------

# Made by the operator with `courierwatch pki` (deploy/README.md), never committed.
OPERATOR_MADE = {"./pki/ca.pem", "./pki/collector.pem", "./pki/collector.key"}


def services() -> dict[str, dict]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def mounts(service: str) -> dict[str, str]:
    """Container path -> host path of a service's bind mounts (relative to deploy/)."""
    result = {}
    for volume in services()[service].get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            result[target] = source
    return result


def test_compose_stack_has_the_four_services_and_its_files_exist():
    assert set(services()) == {"collector", "prometheus", "alertmanager", "grafana"}
    build = services()["collector"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).is_file()
    for name in services():
        for source in mounts(name).values():
            if source not in OPERATOR_MADE:
                assert (DEPLOY / source).exists(), f"{name}: {source}"
    # The image build must never take the fleet CA's key along.
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert "deploy/pki" in ignored and "**/*.key" in ignored


def test_compose_files_point_at_each_other(tmp_path):
    collector = mounts("collector")
    config_host = DEPLOY / collector["/etc/courierwatch/collector.yaml"]
    # The collector's config, with the mounted certificate paths made real, loads.
    for pem in ("ca.pem", "collector.pem", "collector.key"):
        assert f"./pki/{pem}" == collector[f"/etc/courierwatch/{pem}"]
    pki.create_ca(tmp_path, name="compose test CA", days=10)  # what `pki init` puts there
    pki.issue_collector(tmp_path, ["collector.noc.example.net"], days=10)
    text = config_host.read_text().replace("/etc/courierwatch/", f"{tmp_path}/")
    (tmp_path / "collector.yaml").write_text(text)
    config = load_collector_config(str(tmp_path / "collector.yaml"))
    volumes = services()["collector"]["volumes"]
    assert f"collector-state:{config.state_dir}" in volumes
    http_port = config.http_listen.rsplit(":", 1)[1]

    # Prometheus scrapes that port of the collector service and sends to Alertmanager.
    prometheus_dir = DEPLOY / mounts("prometheus")["/etc/prometheus"]
    scrape = yaml.safe_load((prometheus_dir / "prometheus.yml").read_text())
    (job,) = [j for j in scrape["scrape_configs"] if j["job_name"] == JOB]
    assert job["static_configs"][0]["targets"] == [f"collector:{http_port}"]
    (am,) = scrape["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert am.split(":")[0] == "alertmanager"
    assert f'job="{JOB}"' in (prometheus_dir / "rules" / "alerts.yml").read_text()

    # Grafana finds its provisioning, the dashboards where the provider looks, and Prometheus.
    grafana = mounts("grafana")
    provisioning = DEPLOY / grafana["/etc/grafana/provisioning"]
    provider = yaml.safe_load((provisioning / "dashboards" / "courierwatch.yaml").read_text())
    dashboards_path = provider["providers"][0]["options"]["path"]
    assert (DEPLOY / grafana[dashboards_path] / "courierwatch-fleet.json").is_file()
    source = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())
    assert source["datasources"][0]["url"] == "http://prometheus:9090"
    home = services()["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(dashboards_path + "/")


def test_deploy_readme_names_files_that_exist():
    """Paths relative to deploy/ or to the repository."""
    text = (DEPLOY / "README.md").read_text()
    named = set(re.findall(r"`((?:\.\./)?[\w./-]+\.(?:ya?ml|sh|service|json|py))`", text))
    assert named
    for path in named:
        if "*" not in path and "/" in path and not path.startswith("/"):  # not installed ones
            assert (DEPLOY / path).exists() or (ROOT / path).exists(), path
