"""What a tls check reads from a presented certificate, straight from its DER: subject and
issuer as RFC 4514 strings, written exactly as cryptography's `Name.rfc4514_string()` writes
them, and notAfter.

Three fields need no X.509 library: importing cryptography would cost every probe about
10 MB of memory (its own statically linked OpenSSL among it) for them. Nothing here verifies
anything; OpenSSL did that in the handshake. A certificate this cannot read is a ValueError.
"""

from __future__ import annotations

import calendar
import functools
from dataclasses import dataclass
from typing import Final

from google.protobuf.timestamp_pb2 import Timestamp

# cryptography's short names (x509.name._NAMEOID_TO_NAME); any other type is its dotted OID.
_SHORT: Final = {
    "2.5.4.3": "CN",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "2.5.4.6": "C",
    "2.5.4.9": "STREET",
    "0.9.2342.19200300.100.1.25": "DC",
    "0.9.2342.19200300.100.1.1": "UID",
}
_X500_UNIQUE_IDENTIFIER: Final = "2.5.4.45"  # the one type whose value may be a BIT STRING
_SEQUENCE, _SET, _OID, _VERSION = 0x30, 0x31, 0x06, 0xA0
_BIT_STRING, _BMP_STRING, _UNIVERSAL_STRING = 0x03, 0x1E, 0x1C
_UTC_TIME, _GENERALIZED_TIME = 0x17, 0x18
# RFC 4514 section 2.4, in cryptography's order (backslash first).
_ESCAPES: Final = (("\\", "\\\\"), ('"', '\\"'), ("+", "\\+"), (",", "\\,"), (";", "\\;"),
                   ("<", "\\<"), (">", "\\>"), ("\0", "\\00"))  # fmt: skip


@dataclass(frozen=True, slots=True)
class Certificate:
    subject: str  # RFC 4514
    issuer: str
    not_after: Timestamp


# An endpoint presents the same chain run after run: each certificate is read once.
@functools.lru_cache(maxsize=256)
def describe(der: bytes) -> Certificate:
    """Subject, issuer and notAfter of a DER certificate."""
    tag, start, _ = _element(der, 0)
    _expect(tag, _SEQUENCE, "a certificate")
    tag, at, tbs_end = _element(der, start)  # tbsCertificate
    _expect(tag, _SEQUENCE, "tbsCertificate")
    fields = []  # after the optional [0] version: serial, signature, issuer, validity, subject
    while at < tbs_end and len(fields) < 5:
        tag, content, after = _element(der, at)
        if tag != _VERSION or fields:
            fields.append((tag, content, after))
        at = after
    if len(fields) < 5:
        raise ValueError("a certificate without issuer, validity and subject")
    _, _, issuer, validity, subject = fields[:5]
    return Certificate(_name(der, *subject), _name(der, *issuer), _not_after(der, *validity))


def _name(der: bytes, tag: int, at: int, end: int) -> str:
    _expect(tag, _SEQUENCE, "a Name")
    rdns = []
    while at < end:
        tag, content, at = _element(der, at)
        _expect(tag, _SET, "a relative distinguished name")
        attributes = []
        while content < at:
            tag, inner, content = _element(der, content)
            _expect(tag, _SEQUENCE, "an attribute")
            tag, oid_at, value_at = _element(der, inner)
            _expect(tag, _OID, "an attribute type")
            oid = _dotted(der[oid_at:value_at])
            tag, value, value_end = _element(der, value_at)
            text = _escape(_value(oid, tag, der[value:value_end]))
            attributes.append(f"{_SHORT.get(oid, oid)}={text}")
        if not attributes:
            raise ValueError("an empty relative distinguished name")
        rdns.append("+".join(attributes))
    return ",".join(reversed(rdns))  # RFC 4514: the last RDN first


def _value(oid: str, tag: int, data: bytes) -> str | bytes:
    """An attribute's value as cryptography decodes it."""
    if tag == _BIT_STRING:
        if oid != _X500_UNIQUE_IDENTIFIER:
            raise ValueError(f"a BIT STRING value for attribute {oid}")
        return data
    if tag == _BMP_STRING:
        return data.decode("utf_16_be")
    if tag == _UNIVERSAL_STRING:
        return data.decode("utf_32_be")
    try:
        return data.decode("utf-8")  # every other string type, as its raw bytes
    except UnicodeDecodeError:
        raise ValueError(f"a value of attribute {oid} that is not UTF-8") from None


def _escape(value: str | bytes) -> str:
    """cryptography's x509.name._escape_dn_value."""
    if not value:
        return ""
    if isinstance(value, bytes):
        return "#" + value.hex()
    for plain, escaped in _ESCAPES:
        value = value.replace(plain, escaped)
    if value[0] == "#" or (value[0] == " " and len(value) > 1):
        value = "\\" + value
    if value[-1] == " ":
        value = value[:-1] + "\\ "
    return value


def _not_after(der: bytes, tag: int, at: int, end: int) -> Timestamp:
    _expect(tag, _SEQUENCE, "a validity")
    _, _, at = _element(der, at)  # notBefore
    tag, content, after = _element(der, at)
    text = der[content:after].decode("ascii", "replace")
    if tag == _UTC_TIME and len(text) == 13 and text[-1] == "Z" and text[:-1].isdigit():
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"  # RFC 5280 4.1.2.5.1
    elif not (tag == _GENERALIZED_TIME and len(text) == 15 and text[-1] == "Z"
              and text[:-1].isdigit()):  # fmt: skip
        raise ValueError(f"a notAfter that is no X.509 time: {text!r}")
    fields = (int(text[0:4]), int(text[4:6]), int(text[6:8]), int(text[8:10]), int(text[10:12]),
              int(text[12:14]))  # fmt: skip
    moment = Timestamp()
    moment.seconds = calendar.timegm((*fields, 0, 0, 0))
    return moment


def _dotted(data: bytes) -> str:
    arcs, value = [], 0
    for byte in data:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    if not arcs or data[-1] & 0x80:
        raise ValueError("an object identifier cut short")
    first = min(arcs[0] // 40, 2)
    return ".".join(map(str, (first, arcs[0] - 40 * first, *arcs[1:])))


def _element(der: bytes, at: int) -> tuple[int, int, int]:
    """The DER element at `at`: (tag, where its content starts, where it ends)."""
    if at + 2 > len(der):
        raise ValueError("a certificate cut short")
    tag, length = der[at], der[at + 1]
    if tag & 0x1F == 0x1F:
        raise ValueError("a multi-byte DER tag")
    at += 2
    if length & 0x80:
        size = length & 0x7F
        if not 0 < size <= 4:
            raise ValueError("a DER length that is not definite")
        length = int.from_bytes(der[at : at + size], "big")
        at += size
    if at + length > len(der):
        raise ValueError("a certificate cut short")
    return tag, at, at + length


def _expect(tag: int, wanted: int, what: str) -> None:
    if tag != wanted:
        raise ValueError(f"not {what} (DER tag {tag:#04x})")
