"""`courierwatch pki`: the fleet's small certificate authority.

One CA signs the collector's server certificate and each probe's client certificate. A
probe's certificate names its identity (CN = probe id) and its site (OU), which is what the
collector authorizes by default; enrolling a Raspberry Pi is one bundle: CA, certificate,
key and a probe.yaml that points at them by relative path, so it works wherever unpacked.
Keys are EC P-256: quick to make and to handshake with on a Pi.
"""

from __future__ import annotations

import datetime
import io
import ipaddress
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT, CA_KEY = "ca.pem", "ca.key"
COLLECTOR_CERT, COLLECTOR_KEY = "collector.pem", "collector.key"


class PkiError(Exception):
    """A problem the operator can fix (missing CA, existing files); one line."""


@dataclass(frozen=True, slots=True)
class Issued:
    cert_pem: bytes
    key_pem: bytes


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _write(path: Path, data: bytes, *, secret: bool = False, force: bool = False) -> None:
    if path.exists() and not force:
        raise PkiError(f"{path} exists; not overwriting it (use --force to replace)")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Keys are created unreadable to others from the start, not chmod-ed afterwards.
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    mode = 0o600 if secret else 0o644
    with os.fdopen(os.open(path, flags, mode), "wb") as out:
        os.fchmod(out.fileno(), mode)  # an existing file (--force) keeps its mode otherwise
        out.write(data)


def create_ca(directory: Path, *, name: str, days: int, force: bool = False) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "courierwatch"),
        x509.NameAttribute(NameOID.COMMON_NAME, name),
    ])  # fmt: skip
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    _write(directory / CA_KEY, _key_pem(key), secret=True, force=force)
    _write(directory / CA_CERT, cert.public_bytes(serialization.Encoding.PEM), force=force)
    return directory / CA_CERT


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
        key = serialization.load_pem_private_key((directory / CA_KEY).read_bytes(), None)
    except FileNotFoundError as error:
        raise PkiError(f"no fleet CA in {directory}: run `courierwatch pki init` first "
                       f"({error.filename} is missing)") from None  # fmt: skip
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{directory / CA_KEY}: not an EC key made by `courierwatch pki init`")
    return cert, key


def _issue(
    directory: Path,
    subject: x509.Name,
    names: list[x509.GeneralName],
    usage: x509.ObjectIdentifier,
    days: int,
) -> Issued:
    ca_cert, ca_key = _load_ca(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(min(now + datetime.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def issue_collector(directory: Path, hosts: list[str], *, days: int, force: bool = False) -> Path:
    """The collector's server certificate, valid for each name or address probes dial."""
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    subject = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "courierwatch"),
        x509.NameAttribute(NameOID.COMMON_NAME, hosts[0]),
    ])  # fmt: skip
    issued = _issue(directory, subject, names, ExtendedKeyUsageOID.SERVER_AUTH, days)
    _write(directory / COLLECTOR_KEY, issued.key_pem, secret=True, force=force)
    _write(directory / COLLECTOR_CERT, issued.cert_pem, force=force)
    return directory / COLLECTOR_CERT


# As the probe's config requires: these become label values and file names.
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


def probe_bundle(
    directory: Path, *, site: str, probe_id: str, collectors: list[str], days: int
) -> bytes:
    """A .tar.gz with ca.pem, probe.pem, probe.key and a probe.yaml that uses them."""
    for what, value in (("site", site), ("probe id", probe_id)):
        if not _NAME.fullmatch(value) or value in (".", ".."):
            raise PkiError(f"{what} {value!r}: use 1 to 64 characters from A-Z a-z 0-9 . _ -")
    subject = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "courierwatch"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, site),
        x509.NameAttribute(NameOID.COMMON_NAME, probe_id),
    ])  # fmt: skip
    san = [x509.DNSName(f"{probe_id}.{site}.probe.courierwatch.invalid")]
    issued = _issue(directory, subject, san, ExtendedKeyUsageOID.CLIENT_AUTH, days)
    config = {
        "site": site,
        "probe_id": probe_id,
        "collectors": collectors,
        "transport": {"ca": CA_CERT, "cert": "probe.pem", "key": "probe.key"},
    }
    files = {
        CA_CERT: ((directory / CA_CERT).read_bytes(), 0o644),
        "probe.pem": (issued.cert_pem, 0o644),
        "probe.key": (issued.key_pem, 0o600),
        "probe.yaml": (yaml.safe_dump(config, sort_keys=False).encode(), 0o644),
    }
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, (data, mode) in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, int(_now().timestamp())
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def write_bundle(path: Path, bundle: bytes, *, force: bool = False) -> None:
    _write(path, bundle, secret=True, force=force)  # it holds the probe's private key
