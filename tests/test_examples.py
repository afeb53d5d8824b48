"""The example configurations in deploy/ are valid as shipped."""

import io
import re
import tarfile
from pathlib import Path

import pytest

from courierwatch import pki
from courierwatch.collector.config import load_collector_config
from courierwatch.probe.config import load_probe_config

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def installed(tmp_path, name: str) -> str:
    """The example with its /etc/courierwatch files present under tmp_path."""
    if not (tmp_path / "ca.pem").exists():
        pki.create_ca(tmp_path, name="example CA", days=10)
        pki.issue_collector(tmp_path, ["collector.noc.example.net"], days=10)
        (tmp_path / "fleet-ca.pem").write_bytes((tmp_path / "ca.pem").read_bytes())
        bundle = pki.probe_bundle(tmp_path, site="ams-office", probe_id="pi-ams-1",
                                  collectors=["c:1"], days=10)
        with tarfile.open(fileobj=io.BytesIO(bundle)) as tar:
            tar.extractall(tmp_path, members=[tar.getmember("probe.pem"),
                                              tar.getmember("probe.key")], filter="data")
    text = (DEPLOY / name).read_text().replace("/etc/courierwatch/", f"{tmp_path}/")
    (tmp_path / name).write_text(text)
    return str(tmp_path / name)


def test_probe_example(tmp_path):
    config = load_probe_config(installed(tmp_path, "probe.example.yaml"))
    assert config.site == "ams-office"
    assert len(config.collectors) == 2
    assert any(t.group == "mdm_server" for t in config.targets)
    assert all(t.interval == 30 for t in config.targets if t.group == "push")


def test_collector_example(tmp_path):
    config = load_collector_config(installed(tmp_path, "collector.example.yaml"))
    assert config.grpc_listen == "0.0.0.0:9475"
    assert config.forget_after == 30 * 86400


def uncommented(path: str) -> str:
    """The example with its commented-out keys written in: they document real keys."""
    text = Path(path).read_text()
    Path(path).write_text(re.sub(r"(?m)^( *)# ( *[a-z_]+:)", r"\1\2", text))
    return path


@pytest.fixture(scope="module")
def installed_once(tmp_path_factory):
    """One directory with the examples' files for the tests below (the PKI takes seconds)."""
    return tmp_path_factory.mktemp("examples")


def test_probe_example_with_its_commented_keys(installed_once):
    path = uncommented(installed(installed_once, "probe.example.yaml"))
    for name in ("extra-root.pem", "inspection-root.pem"):  # named by commented keys
        (installed_once / name).write_bytes((installed_once / "ca.pem").read_bytes())
    config = load_probe_config(path)
    assert {t.group for t in config.targets} == {
        "push", "push_provider", "device_setup", "device_management", "mdm_server",
    }
    assert not any(t.host == "humb.apple.com" for t in config.targets)  # catalog.exclude
    assert config.nameservers == ("192.0.2.53",) and config.proxy is not None
    assert config.families_reason.startswith(("IPv6 too: ", "IPv4 only: "))  # auto, with why
    assert config.spool_max_age == 48 * 3600


def test_collector_example_with_its_commented_keys(installed_once):
    config = load_collector_config(uncommented(installed(installed_once, "collector.example.yaml")))
    assert config.min_stale == 60
