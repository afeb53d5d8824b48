"""dnsmasq / Pi-hole and unbound query logs, read by courierwatch.discover.logs: queries,
chains from reply lines, every blocked shape, and odd lines skipped and counted."""

import calendar
import time
from pathlib import Path

import pytest

from courierwatch.discover import logs
from courierwatch.discover.tally import Tally
from courierwatch.probe import catalog

YEAR = time.gmtime().tm_year
DNSMASQ = """\
Dec  1 08:00:00 dnsmasq[812]: started, version pi-hole-v2.90 cachesize 10000
Dec  1 08:00:01 dnsmasq[812]: query[A] 3-courier.push.apple.com from 192.168.1.20
Dec  1 08:00:01 dnsmasq[812]: forwarded 3-courier.push.apple.com to 9.9.9.9
Dec  1 08:00:01 dnsmasq[812]: reply 3-courier.push.apple.com is <CNAME>
Dec  1 08:00:01 dnsmasq[812]: reply 3.courier-push-apple.com.akadns.net is <CNAME>
Dec  1 08:00:01 dnsmasq[812]: reply pop-eur-benelux-courier.push-apple.com.akadns.net is 17.57.146.52
Dec  1 08:00:01 dnsmasq[812]: reply pop-eur-benelux-courier.push-apple.com.akadns.net is 17.57.146.53
Dec  1 08:00:02 dnsmasq[812]: 41 192.168.1.21/53122 query[AAAA] gs.apple.com from 192.168.1.21
Dec  1 08:00:02 dnsmasq[812]: 41 192.168.1.21/53122 cached gs.apple.com is <CNAME>
Dec  1 08:00:02 dnsmasq[812]: 41 192.168.1.21/53122 cached gs-loc.apple.com.akadns.net is NODATA-IPv6
Dec  1 08:00:03 dnsmasq[812]: query[A] metrics.icloud.com from 192.168.1.22
Dec  1 08:00:03 dnsmasq[812]: gravity blocked metrics.icloud.com is 0.0.0.0
Dec  1 08:00:04 dnsmasq[812]: query[A] xp.apple.com from 192.168.1.22
Dec  1 08:00:04 dnsmasq[812]: regex blacklisted xp.apple.com is 0.0.0.0
Dec  1 08:00:05 dnsmasq[812]: query[A] gdmf.apple.com from 192.168.1.23
Dec  1 08:00:05 dnsmasq[812]: exactly denied gdmf.apple.com is 0.0.0.0
Dec  1 08:00:06 dnsmasq[812]: query[HTTPS] mask.icloud.com from 192.168.1.23
Dec  1 08:00:06 dnsmasq[812]: special domain mask.icloud.com is NXDOMAIN
Dec  1 08:00:07 dnsmasq[812]: query[A] ocsp.apple.com from 192.168.1.24
Dec  1 08:00:07 dnsmasq[812]: config ocsp.apple.com is 0.0.0.0
Dec  1 08:00:08 dnsmasq[812]: query[A] pi.hole from 192.168.1.24
Dec  1 08:00:08 dnsmasq[812]: config pi.hole is 192.168.1.2
Dec  1 08:00:09 dnsmasq[812]: query[type=65] swscan.apple.com from 192.168.1.24
Dec  1 08:00:09 dnsmasq[812]: /etc/pihole/gravity.list swscan.apple.com is 0.0.0.0
this line was cut in the midd
\x00\x01binary garbage
Dec  1 08:00:10 pihole dnsmasq[812]: query[A] nonexistent.apple.com from 192.168.1.25
Dec  1 08:00:10 pihole dnsmasq[812]: reply nonexistent.apple.com is NXDOMAIN
2026-11-30T23:59:59.250+00:00 pihole dnsmasq[812]: query[A] gsa.apple.com from 192.168.1.25
"""  # noqa: E501 (log lines are as long as they are)

UNBOUND = """\
[1764576001] unbound[901:0] info: 192.168.1.20 www.apple.com. A IN
[1764576001] unbound[901:0] reply: 192.168.1.20 www.apple.com. A IN NOERROR 0.012300 0 93
[1764576002] unbound[901:0] info: 192.168.1.21 metrics.icloud.com. AAAA IN
[1764576002] unbound[901:0] info: metrics.icloud.com. always_null 192.168.1.21@53122 metrics.icloud.com. AAAA IN
[1764576003] unbound[901:0] info: rpz: applied [block] xp.apple.com. rpz-nxdomain 192.168.1.22@40000 xp.apple.com. A IN
[1764576003] unbound[901:0] info: 192.168.1.22 xp.apple.com. A IN
[1764576004] unbound[901:0] reply: 192.168.1.22 nothere.apple.com. A IN NXDOMAIN 0.01 0 80
Dec  1 08:00:05 resolver unbound: [901:0] info: 192.168.1.23 gs.apple.com. TYPE65 IN
[1764576006] unbound[901:0] debug: something the reader does not use
not unbound at all
"""  # noqa: E501


def read(tmp_path: Path, text: str) -> tuple[Tally, logs.SourceStats]:
    path = tmp_path / "query.log"
    path.write_text(text, encoding="utf-8")
    tally = Tally(pop_pattern=catalog.apple().pop_pattern)
    return tally, logs.read(str(path), tally, "log")


def test_dnsmasq_queries_chains_and_pop(tmp_path):
    tally, stats = read(tmp_path, DNSMASQ)
    assert stats.kind == "dnsmasq-log" and stats.error == ""
    courier = tally.names["3-courier.push.apple.com"]
    assert (courier.queries, courier.clients, courier.types) == (1, {"192.168.1.20"}, {"A": 1})
    assert courier.answers == {"17.57.146.52", "17.57.146.53"}
    assert tally.cnames["3-courier.push.apple.com"] == {"3.courier-push-apple.com.akadns.net"}
    assert tally.cnames["3.courier-push-apple.com.akadns.net"] == {
        "pop-eur-benelux-courier.push-apple.com.akadns.net"
    }
    assert set(tally.pops) == {"eur-benelux"}
    assert tally.pops["eur-benelux"].clients == {"192.168.1.20"}
    gs = tally.names["gs.apple.com"]
    assert gs.types == {"AAAA": 1} and gs.clients == {"192.168.1.21"}  # the `extra` shape
    assert tally.cnames["gs.apple.com"] == {"gs-loc.apple.com.akadns.net"}
    assert tally.names["gs-loc.apple.com.akadns.net"].rcodes == {"NODATA-IPv6": 1}
    assert tally.names["nonexistent.apple.com"].rcodes == {"NXDOMAIN": 1}
    assert tally.names["swscan.apple.com"].types == {"TYPE65": 1}


def test_dnsmasq_syslog_times_take_this_year(tmp_path):
    tally, _ = read(tmp_path, DNSMASQ)
    first = tally.names["metrics.icloud.com"].first
    expected = calendar.timegm((YEAR, 12, 1, 8, 0, 3, 0, 0, 0))
    if expected > time.time() + 86400:
        expected = calendar.timegm((YEAR - 1, 12, 1, 8, 0, 3, 0, 0, 0))
    assert first == expected
    iso = calendar.timegm((2026, 11, 30, 23, 59, 59)) + 0.25
    assert tally.names["gsa.apple.com"].first == iso


def test_every_pihole_block_shape(tmp_path):
    names = read(tmp_path, DNSMASQ)[0].names
    assert names["metrics.icloud.com"].blocked == {"gravity": 1}
    assert names["metrics.icloud.com"].clients == {"192.168.1.22"}
    assert names["xp.apple.com"].blocked == {"regex denylist": 1}
    assert names["gdmf.apple.com"].blocked == {"exact denylist": 1}
    assert names["mask.icloud.com"].blocked == {"special domain": 1}
    assert names["ocsp.apple.com"].blocked == {"dnsmasq address= rule": 1}
    assert names["swscan.apple.com"].blocked == {"gravity": 1}
    assert names["pi.hole"].blocked == {}  # a local record, not a block


def test_odd_lines_are_skipped_and_counted(tmp_path):
    _, stats = read(tmp_path, DNSMASQ)
    assert stats.records == DNSMASQ.count("\n")
    assert stats.skipped == 2
    assert (
        stats.first_skipped
        == "line 25: not a dnsmasq or unbound line: 'this line was cut in the midd'"
    )


def test_unbound_queries_blocks_and_replies(tmp_path):
    tally, stats = read(tmp_path, UNBOUND)
    assert stats.kind == "unbound-log"
    assert (stats.skipped, stats.first_skipped) == (
        1,
        "line 10: not a dnsmasq or unbound line: 'not unbound at all'",
    )
    names = tally.names
    assert names["www.apple.com"].queries == 1  # the reply line does not count it again
    assert names["metrics.icloud.com"].blocked == {"unbound always_null": 1}
    assert names["metrics.icloud.com"].types == {"AAAA": 1}
    assert names["xp.apple.com"].blocked == {"RPZ rpz-nxdomain": 1}
    assert names["nothere.apple.com"].rcodes == {"NXDOMAIN": 1}
    assert names["nothere.apple.com"].queries == 0  # the log has query lines: replies add none
    assert names["gs.apple.com"].types == {"TYPE65": 1}  # syslog's time stamp


def test_unbound_replies_only_count_as_queries(tmp_path):
    text = "".join(line + "\n" for line in UNBOUND.splitlines() if "reply:" in line)
    tally, _ = read(tmp_path, text)
    assert tally.names["www.apple.com"].queries == 1
    assert tally.names["nothere.apple.com"].queries == 1


def test_the_window_applies_to_log_lines(tmp_path):
    path = tmp_path / "query.log"
    path.write_text(UNBOUND, encoding="utf-8")
    tally = Tally(since=1764576002, until=1764576003)
    logs.read(str(path), tally, "log")
    assert "www.apple.com" not in tally.names
    assert tally.names["metrics.icloud.com"].blocked == {"unbound always_null": 1}
    assert "xp.apple.com" not in tally.names


def test_a_bad_time_stamp_is_an_odd_line(tmp_path):
    text = ("Abc  1 08:00:01 dnsmasq[812]: query[A] gs.apple.com from 192.168.1.20\n"
            "2026-13-45T08:00:01Z pihole dnsmasq[812]: query[A] gs.apple.com from 192.168.1.20\n"
            "Dec  1 08:00:01 dnsmasq[812]: query[A] gs.apple.com from 192.168.1.20\n")  # fmt: skip
    tally, stats = read(tmp_path, text)
    assert (stats.records, stats.skipped) == (3, 2)
    assert stats.first_skipped.startswith("line 1: unreadable time stamp")
    assert tally.names["gs.apple.com"].queries == 1


@pytest.mark.parametrize("text", ["nothing here\nat all\n", "\x89PNG\r\n\x1a\n\x00\x00"])
def test_a_file_that_is_no_query_log_is_an_error(tmp_path, text):
    _, stats = read(tmp_path, text)
    assert stats.error.startswith(f"{tmp_path / 'query.log'}: no dnsmasq or unbound log lines")
