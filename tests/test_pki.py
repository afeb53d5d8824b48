"""The fleet CA: what `courierwatch pki` makes, and how it refuses to clobber."""

import io
import stat
import subprocess
import sys
import tarfile

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from courierwatch import pki


@pytest.fixture
def fleet(tmp_path):
    pki.create_ca(tmp_path, name="test CA", days=10)
    return tmp_path


def test_the_ca_key_is_private_from_the_start(fleet):
    assert stat.S_IMODE((fleet / "ca.key").stat().st_mode) == 0o600
    ca = x509.load_pem_x509_certificate((fleet / "ca.pem").read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_collector_certificate_names_every_host(fleet):
    pki.issue_collector(fleet, ["collector.noc.example", "192.0.2.10"], days=10)
    cert = x509.load_pem_x509_certificate((fleet / "collector.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["collector.noc.example"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["192.0.2.10"]
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_probe_bundle_is_all_a_pi_needs(fleet):
    bundle = pki.probe_bundle(fleet, site="ams-office", probe_id="pi-ams-1",
                              collectors=["collector.noc.example:9475"], days=10)
    with tarfile.open(fileobj=io.BytesIO(bundle)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert set(members) == {"ca.pem", "probe.pem", "probe.key", "probe.yaml"}
        assert members["probe.key"].mode == 0o600
        cert = x509.load_pem_x509_certificate(tar.extractfile("probe.pem").read())
        config = yaml.safe_load(tar.extractfile("probe.yaml"))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "pi-ams-1"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == \
        "ams-office"
    assert config == {
        "site": "ams-office", "probe_id": "pi-ams-1",
        "collectors": ["collector.noc.example:9475"],
        "transport": {"ca": "ca.pem", "cert": "probe.pem", "key": "probe.key"},
    }


def test_existing_files_are_not_overwritten(fleet):
    with pytest.raises(pki.PkiError, match="exists"):
        pki.create_ca(fleet, name="again", days=10)


def cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "courierwatch", "pki", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def test_cli_enrolls_a_probe_in_three_commands(tmp_path):
    assert cli("init", "--dir", "ca", cwd=tmp_path).returncode == 0
    assert cli("collector", "--dir", "ca", "--host", "127.0.0.1", cwd=tmp_path).returncode == 0
    done = cli("probe", "--dir", "ca", "--site", "ams", "--probe-id", "pi-1",
               "--collector", "127.0.0.1:9475", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "ca" / "pi-1.tar.gz").exists()


def test_cli_without_a_ca_says_what_to_do_in_one_line(tmp_path):
    done = cli("probe", "--dir", "nowhere", "--site", "ams", "--probe-id", "pi-1",
               "--collector", "127.0.0.1:9475", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith(
        "courierwatch: no fleet CA in nowhere: run `courierwatch pki init`"
    )
    assert len(done.stderr.splitlines()) == 1


@pytest.mark.parametrize("probe_id", ["pi/../../evil", "pi 1", "", ".."])
def test_probe_ids_that_cannot_be_labels_or_file_names_are_refused(fleet, probe_id):
    with pytest.raises(pki.PkiError, match="probe id"):
        pki.probe_bundle(fleet, site="ams", probe_id=probe_id, collectors=["c:1"], days=10)


def test_force_makes_an_existing_key_file_private(fleet):
    (fleet / "ca.key").chmod(0o644)
    pki.create_ca(fleet, name="again", days=10, force=True)
    assert stat.S_IMODE((fleet / "ca.key").stat().st_mode) == 0o600
