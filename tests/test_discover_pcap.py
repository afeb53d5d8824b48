"""Captures written with dpkt (pcap and pcapng), read by courierwatch.discover.pcap: queries and
responses over UDP and TCP, CNAME chains to the POP, ports opened, and malformed or truncated
input skipped and counted, never fatal."""

import struct
from pathlib import Path

import dpkt
import pytest
from data.make_sample import RESOLVER, Capture, frame, message, tcp, udp

from courierwatch.discover import pcap
from courierwatch.discover.tally import SINKHOLE, Tally
from courierwatch.probe import catalog

T0 = 1_764_576_000.0
CLIENT = "192.168.1.20"
COURIER_CHAIN = ("7.courier-push-apple.com.akadns.net",
                 "pop-eur-benelux-courier.push-apple.com.akadns.net")  # fmt: skip


def write(path: Path, fill, *, pcapng: bool = True) -> Path:
    with path.open("wb") as file:
        capture = Capture(file, pcapng=pcapng)
        fill(capture)
        capture.close()
    return path


def read(path: Path) -> tuple[Tally, pcap.SourceStats]:
    tally = Tally(pop_pattern=catalog.apple().pop_pattern)
    stats = pcap.read(str(path), tally, "capture")
    return tally, stats


@pytest.mark.parametrize("pcapng", [True, False], ids=["pcapng", "pcap"])
def test_udp_queries_responses_chains_and_pops(tmp_path, pcapng):
    def fill(capture: Capture) -> None:
        capture.ask(T0, CLIENT, "7-courier.push.apple.com", chain=COURIER_CHAIN,
                    addresses=("17.57.146.27",))  # fmt: skip
        capture.ask(T0 + 1, "192.168.1.21", "7-courier.push.apple.com", dpkt.dns.DNS_AAAA,
                    chain=COURIER_CHAIN, addresses=("2a01:b740:a42:1::12",))  # fmt: skip
        capture.ask(T0 + 2, CLIENT, "metrics.icloud.com", addresses=("0.0.0.0",))
        capture.connect(T0 + 3, CLIENT, "17.57.146.27", 5223)

    tally, stats = read(write(tmp_path / "c.cap", fill, pcapng=pcapng))
    assert stats.kind == ("pcapng" if pcapng else "pcap")
    assert (stats.records, stats.used, stats.skipped, stats.error) == (7, 6, 0, "")
    courier = tally.names["7-courier.push.apple.com"]
    assert (courier.queries, len(courier.clients), courier.types) == (2, 2, {"A": 1, "AAAA": 1})
    assert courier.answers == {"17.57.146.27", "2a01:b740:a42:1::12"}
    assert tally.cnames["7-courier.push.apple.com"] == {COURIER_CHAIN[0]}
    assert tally.cnames[COURIER_CHAIN[0]] == {COURIER_CHAIN[1]}
    assert tally.names[COURIER_CHAIN[1]].answers == courier.answers  # the last hop's too
    (pop,) = tally.pops
    assert pop == "eur-benelux" and len(tally.pops[pop].clients) == 2
    assert tally.names["metrics.icloud.com"].blocked == {SINKHOLE: 1}
    assert tally.ports == {"17.57.146.27": {5223}}
    assert courier.first == pytest.approx(T0) and courier.last == pytest.approx(T0 + 1)


@pytest.mark.parametrize("split", [True, False], ids=["two segments", "one segment"])
def test_dns_over_tcp_is_reassembled(tmp_path, split):
    def fill(capture: Capture) -> None:
        capture.ask_tcp(T0, CLIENT, "gspe35-ssl.ls.apple.com", 65, split=split,
                        chain=("gspe35-ssl.ls.apple.com.edgekey.net",),
                        addresses=("23.40.61.12",))  # fmt: skip

    tally, stats = read(write(tmp_path / "tcp.pcapng", fill))
    assert (stats.used, stats.skipped) == (2, 0)  # the query and its response
    name = tally.names["gspe35-ssl.ls.apple.com"]
    assert (name.queries, name.types, name.answers) == (1, {"HTTPS": 1}, {"23.40.61.12"})
    assert tally.ports == {RESOLVER: {53}}  # the SYN to the resolver


def test_a_tcp_stream_with_a_gap_is_dropped_and_counted(tmp_path):
    query = message("gs.apple.com", ident=5)
    framed = struct.pack("!H", len(query)) + query
    ack = dpkt.tcp.TH_ACK

    def fill(capture: Capture) -> None:
        capture.raw(T0, frame(CLIENT, RESOLVER, tcp(40000, 53, 100, dpkt.tcp.TH_SYN)))
        capture.raw(T0, frame(CLIENT, RESOLVER, tcp(40000, 53, 101, ack, framed[:5])))
        capture.raw(T0, frame(CLIENT, RESOLVER, tcp(40000, 53, 101 + 9, ack, framed[9:])))
        capture.raw(T0, frame(CLIENT, RESOLVER, tcp(40000, 53, 101 + 9, ack, framed[9:])))

    tally, stats = read(write(tmp_path / "gap.pcapng", fill))
    assert "gs.apple.com" not in tally.names
    assert (stats.skipped, stats.first_skipped) == (1, "packet 3: gap in a DNS-over-TCP stream")


def test_ipv6_transport(tmp_path):
    def fill(capture: Capture) -> None:
        capture.ask(T0, "fd00::20", "gs.apple.com", addresses=("17.253.53.204",),
                    resolver="fd00::2")  # fmt: skip

    tally, stats = read(write(tmp_path / "v6.pcapng", fill))
    assert tally.names["gs.apple.com"].clients == {"fd00::20"}
    assert stats.used == 2


def test_malformed_packets_are_skipped_and_counted(tmp_path):
    good = message("captive.apple.com", ident=9)
    reply = message("captive.apple.com", ident=9, response=True, addresses=("17.253.53.208",))
    pointer_loop = good[:12] + b"\xc0\x0c" + b"\x00\x01\x00\x01"

    def fill(capture: Capture) -> None:
        capture.raw(T0, frame(CLIENT, RESOLVER, udp(40001, 53, good[:7])))  # header cut
        capture.raw(T0, frame(CLIENT, RESOLVER, udp(40002, 53, good[:20])))  # question cut
        capture.raw(T0, frame(RESOLVER, CLIENT, udp(53, 40003, reply[:-2])))  # answer cut
        capture.raw(T0, frame(CLIENT, RESOLVER, udp(40004, 53, pointer_loop)))
        capture.raw(T0, b"\x02\x00\x00\x00\x00\x01" * 2 + b"\x08\x00" + b"\x45\x00")  # IP cut
        capture.raw(T0, b"\x02" * 12 + b"\x08\x06" + b"\x00" * 28)  # ARP: not IP, not counted
        capture.raw(T0 + 1, frame(CLIENT, RESOLVER, udp(40005, 53, good)))

    tally, stats = read(write(tmp_path / "bad.pcapng", fill))
    assert (stats.records, stats.skipped, stats.used) == (7, 5, 1)
    assert stats.first_skipped == "packet 1: truncated DNS header"
    assert tally.names["captive.apple.com"].queries == 1


def test_a_capture_cut_off_mid_record_keeps_what_came_before(tmp_path):
    def fill(capture: Capture) -> None:
        for n in range(10):
            capture.ask(T0 + n, CLIENT, f"p{n}-caldav.icloud.com", addresses=("17.248.161.73",))

    for pcapng in (True, False):
        path = write(tmp_path / f"cut{pcapng}.cap", fill, pcapng=pcapng)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) - 30])
        tally, stats = read(path)
        assert stats.error == ""
        # pcapng: the last block is incomplete; pcap: the last record's data is short
        expected = "packet 20: capture cut off" if pcapng else "packet 20: cut short"
        assert (stats.records, stats.skipped) == (19 if pcapng else 20, 1)
        assert stats.first_skipped.startswith(expected)
        assert len(tally.names) == 10  # the last response's query came before the cut


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x0a\x0d\x0d\x0a" + b"\x00" * 20, "not a readable pcapng file"),
        (b"hello, world\n", "not a pcap or pcapng capture"),
    ],
)
def test_not_a_capture(tmp_path, content, message):
    path = tmp_path / "x.pcap"
    path.write_bytes(content)
    _, stats = read(path)
    assert stats.error.startswith(f"{path}: {message}")
