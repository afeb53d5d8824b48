"""The tls check's certificate facts, read without cryptography, as cryptography reads them."""

import datetime
import re
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID
from google.protobuf.timestamp_pb2 import Timestamp

from courierwatch.common.certs import describe
from fakeapple.pki import TestPKI

SYSTEM_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
BIT_STRING = _ASN1Type.BitString
_PEM = re.compile(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", re.S)


def _as_cryptography_says(der: bytes) -> tuple[str, str, Timestamp]:
    cert = x509.load_der_x509_certificate(der)
    not_after = Timestamp()
    not_after.FromDatetime(cert.not_valid_after_utc)
    return cert.subject.rfc4514_string(), cert.issuer.rfc4514_string(), not_after


def _same(der: bytes) -> None:
    mine = describe(der)
    assert (mine.subject, mine.issuer, mine.not_after) == _as_cryptography_says(der)


def _self_signed(name: x509.Name, not_after: datetime.datetime) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    issuer = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Issuer, Inc.")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC))
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


@pytest.mark.skipif(not SYSTEM_BUNDLE.exists(), reason="no system CA bundle here")
# A root or two has a serial number of 0, which cryptography reads with a warning.
@pytest.mark.filterwarnings("ignore:Parsed a serial number")
def test_every_system_root_reads_as_cryptography_reads_it():
    blocks = _PEM.findall(SYSTEM_BUNDLE.read_text())
    assert len(blocks) > 50
    for block in blocks:
        _same(ssl.PEM_cert_to_DER_cert(block))


def test_the_fake_apples_chains_read_as_cryptography_reads_them():
    with TestPKI() as pki:
        leaves = (pki.issue("gateway.push.apple.com"), pki.issue_inspected("api.push.apple.com"))
        pems = [blob.bytes() for leaf in leaves for blob in leaf.cert_chain_pems]
        pems.append(pki.ca.cert_pem.bytes())
    for pem in pems:
        _same(ssl.PEM_cert_to_DER_cert(pem.decode()))


@pytest.mark.parametrize(
    "not_after",
    [
        datetime.datetime(2049, 12, 31, 23, 59, 59, tzinfo=datetime.UTC),  # UTCTime
        datetime.datetime(2050, 1, 1, tzinfo=datetime.UTC),  # GeneralizedTime from 2050 on
        datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC),  # "no well-defined end"
    ],
)
def test_names_that_need_escaping_and_odd_string_types(not_after):
    name = x509.Name(
        [
            x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COUNTRY_NAME, "US")]),
            x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "com")]),
            x509.RelativeDistinguishedName(  # multi-valued: joined with +
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, 'A, "B" + <C>; D\\E'),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "#1 "),
                ]
            ),
            x509.RelativeDistinguishedName(
                [x509.NameAttribute(NameOID.LOCALITY_NAME, "Zürich", _ASN1Type.BMPString)]
            ),
            x509.RelativeDistinguishedName(
                [x509.NameAttribute(NameOID.STREET_ADDRESS, "1 €", _ASN1Type.UniversalString)]
            ),
            x509.RelativeDistinguishedName(
                [x509.NameAttribute(NameOID.EMAIL_ADDRESS, "ca@example.com")]  # dotted OID
            ),
            x509.RelativeDistinguishedName(
                [x509.NameAttribute(NameOID.JURISDICTION_COUNTRY_NAME, "US")]
            ),
            x509.RelativeDistinguishedName(
                [x509.NameAttribute(NameOID.X500_UNIQUE_IDENTIFIER, b"\x00\xab", BIT_STRING)]
            ),
            x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.USER_ID, " x")]),
            x509.RelativeDistinguishedName(
                [x509.NameAttribute(NameOID.COMMON_NAME, "*.bench.apple.com")]
            ),
        ]
    )
    der = _self_signed(name, not_after)
    _same(der)
    assert describe(der).subject.startswith("CN=*.bench.apple.com,UID=\\ x,2.5.4.45=#00ab,")


@pytest.mark.parametrize(
    "der",
    [b"", b"\x30", b"\x30\x05\x30\x03\x02\x01\x01", b"\x04\x00", b"\x30\x84\xff\xff\xff\xff"],
)
def test_what_is_no_certificate_is_a_value_error(der):
    with pytest.raises(ValueError):
        describe(der)
