"""The probe's DNS wire format (courierwatch.probe.net.dnswire) on its own: replies built with
dnspython's message API read the same as dnspython reads them, and every malformed reply is
refused, not misread."""

from __future__ import annotations

import dataclasses
import io
import struct
from collections.abc import Callable, Sequence

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rrset
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from courierwatch.probe.net import dnswire
from courierwatch.probe.net.dnswire import AAAA, CNAME, A, Question

COURIER = "36-courier.push.apple.com"
EDGE = "pop-eur-benelux-courier.push-apple.com.akadns.net"
COURIER_CHAIN = [
    (COURIER, 1800, "CNAME", ["36.courier-push-apple.com.akadns.net."]),
    ("36.courier-push-apple.com.akadns.net", 60, "CNAME", [f"{EDGE}."]),
    (EDGE, 20, "A", ["17.252.44.7", "17.252.44.38", "17.252.44.161"]),
]
SOA = ("push.apple.com", 300, "SOA", ["ns1.apple.com. hostmaster.apple.com. 1 3600 600 86400 60"])

Rrset = tuple[str, int, str, list[str]]


def reply(
    asked: Question,
    answer: Sequence[Rrset] = (),
    *,
    rcode: dns.rcode.Rcode = dns.rcode.NOERROR,
    authority: Sequence[Rrset] = (),
    additional: Sequence[Rrset] = (),
    compress: bool = True,
) -> bytes:
    """A response to `asked` built with dnspython, its question echoed as the query spelt it."""
    response = dns.message.make_response(dns.message.from_wire(asked.wire))
    response.flags |= dns.flags.RA
    response.set_rcode(rcode)
    for section, rrsets in (
        (response.answer, answer),
        (response.authority, authority),
        (response.additional, additional),
    ):
        for owner, ttl, rdtype, values in rrsets:
            owner_name = dns.name.from_text(owner)  # absolute: a str owner would stay relative
            section.append(dns.rrset.from_text_list(owner_name, ttl, "IN", rdtype, values))
    return response.to_wire(want_shuffle=False) if compress else _uncompressed(response)


def _uncompressed(response: dns.message.Message) -> bytes:
    """The same message with every name written out in full (no compression pointers)."""
    sections = (response.answer, response.authority, response.additional)
    counts = [sum(len(rrset) for rrset in section) for section in sections]
    out = io.BytesIO()
    out.write(struct.pack("!HHHHHH", response.id, response.flags, 1, *counts))
    asked = response.question[0]
    out.write(asked.name.to_wire() + struct.pack("!HH", asked.rdtype, asked.rdclass))
    for section in sections:
        for rrset in section:
            rrset.to_wire(out, want_shuffle=False)  # without a compression table: names in full
    return out.getvalue()


def dnspython_reads(wire: bytes) -> tuple[int, tuple[str, ...], tuple[str, ...], int | None]:
    """(rcode, addresses, CNAME targets followed, minimum TTL if there are addresses)."""
    message = dns.message.from_wire(wire)
    chained = message.resolve_chaining()
    addresses = tuple(rdata.to_text() for rdata in chained.answer or ())
    chain = tuple(rrset[0].target.to_text(omit_final_dot=True) for rrset in chained.cnames)
    return message.rcode(), addresses, chain, chained.minimum_ttl if addresses else None


def we_read(
    wire: bytes, asked: Question
) -> tuple[int, tuple[str, ...], tuple[str, ...], int | None]:
    parsed = dnswire.parse(wire, asked)
    answer = dnswire.follow(parsed.records, asked)
    return parsed.rcode, answer.addresses, answer.chain, answer.ttl if answer.addresses else None


# --- agreement with dnspython ----------------------------------------------------------------

CORPUS: dict[str, tuple[str, int, Callable[[Question], bytes]]] = {
    "courier chain, three A": (COURIER, A, lambda q: reply(q, COURIER_CHAIN)),
    "courier chain, no compression": (
        COURIER,
        A,
        lambda q: reply(q, COURIER_CHAIN, compress=False),
    ),
    "courier chain, the edge first in the section": (
        COURIER,
        A,
        lambda q: reply(q, COURIER_CHAIN[::-1]),
    ),
    "courier chain, mixed case asked": (
        "36-Courier.PUSH.apple.Com",
        A,
        lambda q: reply(
            q, [("36-Courier.PUSH.apple.Com", *COURIER_CHAIN[0][1:]), *COURIER_CHAIN[1:]]
        ),
    ),
    "mixed case owners and targets": (
        COURIER,
        A,
        lambda q: reply(
            q,
            [
                (
                    "36-COURIER.push.apple.com",
                    300,
                    "CNAME",
                    ["36.Courier-Push-Apple.com.AKADNS.net."],
                ),
                (
                    "36.courier-push-apple.com.akadns.net",
                    30,
                    "CNAME",
                    ["Pop-EUR-Central-Courier.push-apple.com.akadns.net."],
                ),
                ("pop-eur-central-courier.PUSH-apple.com.akadns.net", 40, "A", ["17.57.146.52"]),
            ],
        ),
    ),
    "least TTL in the middle of the chain": (
        COURIER,
        A,
        lambda q: reply(
            q,
            [
                (COURIER, 1800, "CNAME", ["36.courier-push-apple.com.akadns.net."]),
                ("36.courier-push-apple.com.akadns.net", 7, "CNAME", [f"{EDGE}."]),
                (EDGE, 60, "A", ["17.252.44.7"]),
            ],
        ),
    ),
    "AAAA, several": (
        "api.push.apple.com",
        AAAA,
        lambda q: reply(
            q,
            [
                ("api.push.apple.com", 300, "CNAME", ["api-vs.push-apple.com.akadns.net."]),
                (
                    "api-vs.push-apple.com.akadns.net",
                    30,
                    "AAAA",
                    ["2620:149:208:4302::6", "2620:149:208:4303::a", "2a01:b740:a42:100::b"],
                ),
            ],
        ),
    ),
    "A with no chain": (
        "gdmf.apple.com",
        A,
        lambda q: reply(q, [("gdmf.apple.com", 3600, "A", ["17.253.83.144"])]),
    ),
    "answers of other types left out": (
        "gdmf.apple.com",
        A,
        lambda q: reply(
            q,
            [
                ("gdmf.apple.com", 60, "AAAA", ["2620:149:a44::1"]),
                ("gdmf.apple.com", 60, "TXT", ['"v=x"']),
                ("gdmf.apple.com", 90, "A", ["17.253.83.144"]),
            ],
        ),
    ),
    "authority and additional sections read past": (
        "gdmf.apple.com",
        A,
        lambda q: reply(
            q,
            [("gdmf.apple.com", 60, "A", ["17.253.83.144"])],
            authority=[("apple.com", 3600, "NS", ["a.ns.apple.com.", "b.ns.apple.com."])],
            additional=[
                ("a.ns.apple.com", 3600, "A", ["17.253.200.1"]),
                ("b.ns.apple.com", 3600, "AAAA", ["2620:149:ae0::53"]),
            ],
        ),
    ),
    "NXDOMAIN with SOA": (
        "nosuch.apple.com",
        A,
        lambda q: reply(q, rcode=dns.rcode.NXDOMAIN, authority=[SOA]),
    ),
    "NXDOMAIN at the end of a chain": (
        "alias.apple.com",
        A,
        lambda q: reply(
            q,
            [("alias.apple.com", 60, "CNAME", ["gone.apple.com."])],
            rcode=dns.rcode.NXDOMAIN,
            authority=[SOA],
        ),
    ),
    "NODATA with SOA": ("captive.apple.com", AAAA, lambda q: reply(q, authority=[SOA])),
    "NODATA at the end of a chain": (
        COURIER,
        AAAA,
        lambda q: reply(q, COURIER_CHAIN[:2], authority=[SOA]),
    ),
    "a label with escapes": (
        "odd.apple.com",
        A,
        lambda q: reply(
            q,
            [
                ("odd.apple.com", 60, "CNAME", ['a\\.b\\"c\\032d\\255.apple.com.']),
                ('a\\.b\\"c\\032d\\255.apple.com', 60, "A", ["17.1.2.3"]),
            ],
        ),
    ),
    "fifteen CNAMEs, then the address": (
        "hop0.example.com",
        A,
        lambda q: reply(q, _hops(15)),
    ),
    "duplicate records in one RRset": (
        "gdmf.apple.com",
        A,
        lambda q: reply(
            q,
            [
                ("gdmf.apple.com", 60, "A", ["17.253.83.144"]),
                ("gdmf.apple.com", 50, "A", ["17.253.83.144", "17.253.83.145"]),
            ],
        ),
    ),
}


def _hops(cnames: int) -> list[Rrset]:
    chain: list[Rrset] = [
        (f"hop{i}.example.com", 60, "CNAME", [f"hop{i + 1}.example.com."]) for i in range(cnames)
    ]
    return [*chain, (f"hop{cnames}.example.com", 60, "A", ["192.0.2.1"])]


@pytest.mark.parametrize("case", CORPUS)
def test_reads_real_shaped_answers_as_dnspython_does(case: str) -> None:
    name, rdtype, build = CORPUS[case]
    asked = dnswire.question(name, rdtype)
    wire = build(asked)
    assert we_read(wire, asked) == dnspython_reads(wire)


def test_the_courier_chain_reads_as_a_device_would_see_it() -> None:
    asked = dnswire.question(COURIER, A)
    answer = dnswire.follow(dnswire.parse(reply(asked, COURIER_CHAIN), asked).records, asked)
    assert answer.addresses == ("17.252.44.7", "17.252.44.38", "17.252.44.161")
    assert answer.chain == ("36.courier-push-apple.com.akadns.net", EDGE)
    assert answer.ttl == 20


@pytest.mark.parametrize(("cnames", "dnspython_error"), [(16, dns.message.ChainTooLong), (3, None)])
def test_chain_length_limit_is_dnspythons(cnames: int, dnspython_error: type | None) -> None:
    asked = dnswire.question("hop0.example.com", A)
    wire = reply(asked, _hops(cnames))
    records = dnswire.parse(wire, asked).records
    if dnspython_error is None:
        assert we_read(wire, asked) == dnspython_reads(wire)
        return
    with pytest.raises(dnspython_error):
        dnspython_reads(wire)
    with pytest.raises(dnswire.ChainError, match=f"longer than {dnswire.MAX_CHAIN}"):
        dnswire.follow(records, asked)


@pytest.mark.parametrize(
    ("chain", "loop"),
    [
        ([("a.example.com", 60, "CNAME", ["a.example.com."])], "a.example.com -> a.example.com"),
        (
            [
                ("a.example.com", 60, "CNAME", ["B.example.com."]),
                ("b.example.com", 60, "CNAME", ["c.example.com."]),
                ("c.example.com", 60, "CNAME", ["A.example.com."]),
            ],
            # dnspython compresses "A.example.com" into a pointer to the first "a.example.com"
            "a.example.com -> B.example.com -> c.example.com -> a.example.com",
        ),
    ],
)
def test_a_cname_loop_is_named_as_one(chain: list[Rrset], loop: str) -> None:
    asked = dnswire.question("a.example.com", A)
    wire = reply(asked, chain)
    with pytest.raises(dns.message.ChainTooLong):  # dnspython only sees a long chain
        dnspython_reads(wire)
    with pytest.raises(dnswire.ChainError) as raised:
        dnswire.follow(dnswire.parse(wire, asked).records, asked)
    assert str(raised.value) == f"CNAME loop {loop}"


def test_rcode_and_truncation_are_read() -> None:
    asked = dnswire.question(COURIER, A)
    for rcode in (dns.rcode.SERVFAIL, dns.rcode.REFUSED, dns.rcode.NXDOMAIN, dns.rcode.NOTIMP):
        assert dnswire.parse(reply(asked, rcode=rcode), asked).rcode == rcode
    # A truncated reply is not read past its question: servers cut it anywhere.
    wire = bytearray(reply(asked, COURIER_CHAIN))
    wire[2] |= dns.flags.TC >> 8
    assert dnswire.parse(bytes(wire[:-3]), asked) == dnswire.Reply(True, 0, ())


# --- malformed replies -----------------------------------------------------------------------


def header(
    asked: Question, *, flags: int = 0x8180, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0
) -> bytes:
    return struct.pack("!HHHHHH", asked.id, flags, qd, an, ns, ar)


def question_section(asked: Question) -> bytes:
    return asked.wire[12:]


def record(owner: bytes, rtype: int, rdata: bytes, *, length: int | None = None) -> bytes:
    """A resource record of class IN; `length` makes its RDLENGTH say something else."""
    rdlength = len(rdata) if length is None else length
    return owner + struct.pack("!HHIH", rtype, 1, 60, rdlength) + rdata


QNAME = b"\xc0\x0c"  # a pointer to the question's name, at offset 12
ASKED = dnswire.question("gdmf.apple.com", A)
ANSWER_AT = 12 + len(question_section(ASKED))  # where the answer section starts
A_RECORD = record(QNAME, A, bytes([17, 253, 83, 144]))


def _label(size: int) -> bytes:
    return bytes([size]) + b"x" * size


def _name(*sizes: int) -> bytes:
    return b"".join(_label(size) for size in sizes) + b"\0"


MALFORMED: dict[str, tuple[bytes, str]] = {
    "wrong id": (
        struct.pack("!H", ASKED.id ^ 1)
        + header(ASKED, an=1)[2:]
        + question_section(ASKED)
        + A_RECORD,
        "not a reply",
    ),
    "QR bit unset": (
        header(ASKED, flags=0x0180, an=1) + question_section(ASKED) + A_RECORD,
        "not a reply",
    ),
    "another name echoed": (
        header(ASKED, an=1) + question_section(dnswire.question("gdmf.apple.org", A)) + A_RECORD,
        "not a reply",
    ),
    "another type echoed": (
        header(ASKED, an=1) + question_section(dnswire.question("gdmf.apple.com", AAAA)) + A_RECORD,
        "not a reply",
    ),
    "another class echoed": (
        header(ASKED, an=1) + question_section(ASKED)[:-2] + b"\0\3" + A_RECORD,
        "not a reply",
    ),
    "no question": (header(ASKED, qd=0, an=1) + A_RECORD, "not a reply"),
    "two questions": (
        header(ASKED, qd=2, an=1) + question_section(ASKED) * 2 + A_RECORD,
        "not a reply",
    ),
    "more answers announced than sent": (
        header(ASKED, an=2) + question_section(ASKED) + A_RECORD,
        "fewer records than announced",
    ),
    "fewer answers announced than sent": (
        header(ASKED, an=1) + question_section(ASKED) + A_RECORD * 2,
        "more records than announced",
    ),
    "an authority record announced, none sent": (
        header(ASKED, an=1, ns=1) + question_section(ASKED) + A_RECORD,
        "fewer records than announced",
    ),
    "one additional record announced, two sent": (
        header(ASKED, an=1, ar=1) + question_section(ASKED) + A_RECORD * 3,
        "more records than announced",
    ),
    "a record longer than the message": (
        header(ASKED, an=1) + question_section(ASKED) + record(QNAME, A, bytes(4), length=16),
        "runs past the end",
    ),
    "an A record of 5 bytes": (
        header(ASKED, an=1) + question_section(ASKED) + record(QNAME, A, bytes(5)),
        "an address record of 5 bytes",
    ),
    "an AAAA record of 4 bytes": (
        header(ASKED, an=1) + question_section(ASKED) + record(QNAME, AAAA, bytes(4)),
        "an address record of 4 bytes",
    ),
    "a CNAME whose name overruns its record": (
        header(ASKED, an=1) + question_section(ASKED) + record(QNAME, CNAME, _name(3, 3), length=4),
        "does not fill its record",
    ),
    "a label of 64 bytes": (
        header(ASKED, an=1) + question_section(ASKED) + record(_name(64), A, bytes(4)),
        "a label longer than 63",
    ),
    "a label of the reserved type 0x80": (
        header(ASKED, an=1) + question_section(ASKED) + record(b"\x80\0", A, bytes(4)),
        "a label longer than 63",
    ),
    "an owner of 256 bytes": (
        header(ASKED, an=1) + question_section(ASKED) + record(_name(63, 63, 63, 62), A, bytes(4)),
        "a name longer than 255",
    ),
    "a CNAME target of 321 bytes": (
        header(ASKED, an=1)
        + question_section(ASKED)
        + record(QNAME, CNAME, _name(63, 63, 63, 63, 63)),
        "a name longer than 255",
    ),
    "a pointer to itself": (
        header(ASKED, an=1)
        + question_section(ASKED)
        + record(struct.pack("!H", 0xC000 | ANSWER_AT), A, bytes(4)),
        "does not point back",
    ),
    "a pointer forward": (
        header(ASKED, an=1)
        + question_section(ASKED)
        + record(struct.pack("!H", 0xC000 | ANSWER_AT + 8), A, bytes(4)),
        "does not point back",
    ),
    "a pointer loop through a label": (
        # "x" then back to the "x": each pointer points back, but to where the name began.
        header(ASKED, an=1)
        + question_section(ASKED)
        + record(b"\1x" + struct.pack("!H", 0xC000 | ANSWER_AT), A, bytes(4)),
        "does not point back",
    ),
    "a loop behind a pointer": (
        # The owner points back to "x" in the first record's data, then "x" points to itself.
        header(ASKED, an=2)
        + question_section(ASKED)
        + record(QNAME, 16, b"\1x" + struct.pack("!H", 0xC000 | ANSWER_AT + 12))
        + record(struct.pack("!H", 0xC000 | ANSWER_AT + 12), A, bytes(4)),
        "does not point back",
    ),
    "a pointer cut in half": (
        header(ASKED, an=1) + question_section(ASKED) + b"\xc0",
        "fewer records than announced",
    ),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_replies_are_refused(case: str) -> None:
    wire, reason = MALFORMED[case]
    with pytest.raises(dnswire.Malformed, match=reason):
        dnswire.parse(wire, ASKED)
    if reason != "not a reply":  # dnspython cannot know what was asked; it sees bad form
        with pytest.raises(dns.exception.DNSException):
            dns.message.from_wire(wire)


def test_the_malformed_table_is_well_formed_but_for_its_fault() -> None:
    """The table's builders make replies that parse when nothing is wrong with them."""
    wire = header(ASKED, an=1) + question_section(ASKED) + A_RECORD
    answer = dnswire.follow(dnswire.parse(wire, ASKED).records, ASKED)
    assert answer.addresses == ("17.253.83.144",)
    two = (
        header(ASKED, an=2)
        + question_section(ASKED)
        + record(QNAME, CNAME, _name(3, 3))
        + record(_name(3, 3), A, bytes([17, 0, 0, 1]))
    )
    assert dnswire.follow(dnswire.parse(two, ASKED).records, ASKED).addresses == ("17.0.0.1",)
    at_limit = (
        header(ASKED, an=1) + question_section(ASKED) + record(_name(63, 63, 63, 61), A, bytes(4))
    )
    assert len(dnswire.parse(at_limit, ASKED).records) == 1  # 255 bytes: the longest name


@pytest.mark.parametrize(
    "case",
    ["courier chain, three A", "NXDOMAIN with SOA", "authority and additional sections read past"],
)
def test_a_reply_cut_at_any_offset_is_refused(case: str) -> None:
    name, rdtype, build = CORPUS[case]
    asked = dnswire.question(name, rdtype)
    wire = build(asked)
    dnswire.parse(wire, asked)  # whole, it is fine
    for end in range(len(wire)):
        with pytest.raises(dnswire.Malformed):
            dnswire.parse(wire[:end], asked)
        with pytest.raises(dns.exception.DNSException):
            dns.message.from_wire(wire[:end])


DAMAGED = dnswire.question(COURIER, A)
DAMAGED_WIRE = reply(DAMAGED, COURIER_CHAIN, authority=[SOA])


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, len(DAMAGED_WIRE) - 1), st.integers(0, 255)),
        min_size=1,
        max_size=4,
    )
)
def test_any_damage_is_refused_or_read_never_a_crash(bytes_set: list[tuple[int, int]]) -> None:
    wire = bytearray(DAMAGED_WIRE)
    for at, value in bytes_set:
        wire[at] = value
    try:
        parsed = dnswire.parse(bytes(wire), DAMAGED)
    except dnswire.Malformed:
        return
    try:
        answer = dnswire.follow(parsed.records, DAMAGED)
    except dnswire.ChainError:
        return
    assert all(isinstance(address, str) for address in answer.addresses)
    assert len(answer.chain) <= dnswire.MAX_CHAIN


def test_trailing_bytes_are_refused() -> None:
    asked = dnswire.question(COURIER, A)
    with pytest.raises(dnswire.Malformed, match="more records than announced"):
        dnswire.parse(reply(asked, COURIER_CHAIN) + b"\0", asked)


def test_only_a_reply_to_the_question_counts() -> None:
    asked = dnswire.question("Gdmf.Apple.com", A)
    wire = reply(asked, [("gdmf.apple.com", 60, "A", ["17.253.83.144"])])
    assert dnswire.after_question(wire, asked) == 12 + len(asked.wire) - 12
    assert dnswire.after_question(wire, dataclasses.replace(asked, id=asked.id ^ 1)) == -1
    assert dnswire.after_question(wire[:11], asked) == -1
    assert dnswire.after_question(asked.wire, asked) == -1  # the query itself: QR unset


# --- queries ---------------------------------------------------------------------------------


def test_a_query_is_what_dnspython_would_send() -> None:
    asked = dnswire.question("36-Courier.push.apple.com", AAAA)
    query = dns.message.from_wire(asked.wire)
    assert query.id == asked.id and query.flags == dns.flags.RD and query.edns < 0
    assert query.question[0].name == dns.name.from_text("36-courier.push.apple.com")
    assert query.question[0].name.labels[0] == b"36-Courier"  # sent as spelt
    assert (query.question[0].rdtype, query.question[0].rdclass) == (AAAA, 1)
    assert asked.name == "36-courier.push.apple.com"
    ids = {dnswire.question("a.example", A).id for _ in range(64)}
    assert len(ids) > 32  # random ids


def test_non_ascii_names_are_sent_idna_encoded() -> None:
    asked = dnswire.question("bücher.example", A)
    assert asked.name == "xn--bcher-kva.example"
    assert dns.message.from_wire(asked.wire).question[0].name == dns.name.from_text(
        "xn--bcher-kva.example"
    )


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("a" * 64 + ".example", "not a valid DNS name"),
        ("a..example", "not a valid DNS name"),
        ("", "not a valid DNS name"),
        (".".join(["a" * 63] * 3 + ["a" * 62]), "too long"),  # 256 bytes on the wire
    ],
)
def test_names_beyond_the_limits_are_not_sent(name: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        dnswire.question(name, A)


def test_the_longest_name_is_sent() -> None:
    name = ".".join(["a" * 63] * 3 + ["a" * 61])  # 255 bytes on the wire
    asked = dnswire.question(name, A)
    assert dns.message.from_wire(asked.wire).question[0].name.to_text(omit_final_dot=True) == name
