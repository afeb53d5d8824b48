"""The example configurations in deploy/ are valid as shipped."""

import io
import tarfile
from pathlib import Path

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
